// Fuzzes the integer runtime's loader (runtime/load.hpp read_graph with integer_only: format,
// checksum, graph JSON, tensors, validate / validate_integer), each input also re-signed
// (resign.hpp); a graph that loads is planned by the Executor for an 8x8 input and run once.
#include <optional>

#include "brecq/runtime/executor.hpp"
#include "brecq/runtime/load.hpp"
#include "fuzz.hpp"
#include "resign.hpp"

namespace {

void load_and_run(const brecq::SafetensorsReader& f) {
  const brecq::runtime::Graph g = brecq::runtime::read_graph(f);
  brecq::runtime::Executor ex(g, {.max_batch = 1, .height = 8, .width = 8, .threads = 1});
  std::vector<uint8_t> input(static_cast<size_t>(ex.in_channels() * 8 * 8),
                             static_cast<uint8_t>(ex.input_point().zero_point));
  std::vector<float> logits(static_cast<size_t>(ex.num_classes()));
  ex.run(input.data(), 1, logits.data());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::optional<brecq::SafetensorsReader> f;
  if (!brecq::fuzz::accepts([&] {
        f.emplace(brecq::SafetensorsReader::from_bytes({data, data + size}, "fuzz"));
      }))
    return 0;
  brecq::fuzz::accepts([&] { load_and_run(*f); });
  brecq::fuzz::accepts([&] {
    if (auto b = brecq::fuzz::resigned(*f))
      load_and_run(brecq::SafetensorsReader::from_bytes(std::move(*b), "fuzz"));
  });
  return 0;
}
