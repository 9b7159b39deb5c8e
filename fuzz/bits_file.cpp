// Fuzzes the bits-file reader of `brecq quantize --bits-config` (mixed/allocation.hpp
// parse_bits_file) against the layers of resnet20_cifar.
#include "brecq/mixed/allocation.hpp"
#include "fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const brecq::nn::Model model = brecq::nn::make_model("resnet20_cifar");
  brecq::fuzz::accepts(
      [&] { brecq::mixed::parse_bits_file(brecq::fuzz::text(data, size), "fuzz", model); });
  return 0;
}
