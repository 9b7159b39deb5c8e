// Fuzzes the sensitivity-cache reader of `brecq mixed` (mixed/sensitivity.hpp
// detail::parse_sensitivity).
#include "brecq/mixed/allocation.hpp"
#include "fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  brecq::fuzz::accepts(
      [&] { brecq::mixed::detail::parse_sensitivity(brecq::fuzz::text(data, size), "fuzz"); });
  return 0;
}
