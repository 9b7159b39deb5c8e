#pragma once
// What the programs that quantize (quantize, calibrate) read alike from their flags.
#include "args.hpp"
#include "brecq/quant/qmodel.hpp"

namespace brecq::cli {

/// The bit-widths of --w-bits, --a-bits (0: weights only), --first-last-bits and --input-bits
/// (0: FP input), checked.
inline quant::QuantSettings quant_bits(const Args& args) {
  quant::QuantSettings qs{
      .w_bits = static_cast<int>(args.get_int("--w-bits", 2, 8)),
      .a_bits = static_cast<int>(args.get_int("--a-bits", 0, 8)),
      .first_last_bits = static_cast<int>(args.get_int("--first-last-bits", 2, 8)),
      .input_bits = static_cast<int>(args.get_int("--input-bits", 0, 8))};
  if (qs.a_bits == 1) args.fail("flag --a-bits expects 0 or an integer in [2, 8], got '1'");
  if (qs.input_bits == 1) args.fail("flag --input-bits expects 0 or an integer in [2, 8], got '1'");
  return qs;
}

}  // namespace brecq::cli
