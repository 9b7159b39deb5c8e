// Fuzzes the quantized-model file reader of the float simulation (quant/serialize.hpp
// read_quantized), format version 1 (per-layer tensors, the architecture rebuilt through the
// model registry) and version 2 (the graph; each input also re-signed, resign.hpp).
#include <optional>

#include "brecq/quant/serialize.hpp"
#include "fuzz.hpp"
#include "resign.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  brecq::set_num_threads(1);
  std::optional<brecq::SafetensorsFile> f;
  if (!brecq::fuzz::accepts([&] {
        f.emplace(brecq::SafetensorsFile::from_bytes({data, data + size}, "fuzz"));
      }))
    return 0;
  brecq::fuzz::accepts([&] { brecq::quant::read_quantized(*f); });
  brecq::fuzz::accepts([&] {
    if (auto b = brecq::fuzz::resigned(*f))
      brecq::quant::read_quantized(brecq::SafetensorsFile::from_bytes(std::move(*b), "fuzz"));
  });
  return 0;
}
