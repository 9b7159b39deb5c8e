// Fuzzes the safetensors reader (io/safetensors_core.hpp, io/safetensors.hpp): header length,
// JSON header, dtypes, shapes, offsets; every tensor of an accepted file is converted to f32.
#include "brecq/io/safetensors.hpp"

#include "fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  brecq::fuzz::accepts([&] {
    const auto f = brecq::SafetensorsFile::from_bytes(std::vector<uint8_t>(data, data + size));
    for (const std::string& name : f.names()) {
      const brecq::Tensor t = f.to_f32(name);
      if (t.numel() != f.info(name).numel()) __builtin_trap();
    }
  });
  return 0;
}
