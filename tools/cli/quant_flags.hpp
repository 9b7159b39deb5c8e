#pragma once
// Flags several programs share: the bit-widths of the programs that quantize, the input preset
// and the progress switch.
#include <string>
#include <vector>

#include "args.hpp"
#include "brecq/driver/driver.hpp"
#include "brecq/quant/qmodel.hpp"

namespace brecq::cli {

/// --w-bits, --a-bits, --first-last-bits and --input-bits (read by quant_bits), with this
/// program's defaults for the first two, then `own`.
inline std::vector<Flag> bit_flags(int w_bits, int a_bits, std::vector<Flag> own) {
  std::vector<Flag> out{
      {.name = "--w-bits",
       .value_name = "N",
       .help = "weight bits, 2..8",
       .default_value = std::to_string(w_bits)},
      {.name = "--a-bits",
       .value_name = "N",
       .help = "activation bits, 2..8, or 0 for weight-only",
       .default_value = std::to_string(a_bits)},
      {.name = "--first-last-bits",
       .value_name = "N",
       .help = "bits of the first conv and last FC (and the stem's output)",
       .default_value = "8"},
      {.name = "--input-bits",
       .value_name = "N",
       .help = "bits of the input image's quantizer (min-max; with --a-bits), 0 for an FP input",
       .default_value = "8"}};
  out.insert(out.end(), std::make_move_iterator(own.begin()), std::make_move_iterator(own.end()));
  return out;
}

/// --preprocess, read by image_preprocess.
inline Flag preprocess_flag(const std::string& help = "input preset; auto = the model's own") {
  return {.name = "--preprocess",
          .value_name = "imagenet|cifar|auto",
          .help = help,
          .default_value = "auto"};
}

/// The input preset --preprocess names, auto resolved for model_name.
inline ImagePreprocess image_preprocess(const Args& args, const std::string& model_name) {
  return driver::preprocess_for(args.get_choice("--preprocess", {"imagenet", "cifar", "auto"}),
                                model_name);
}

inline Flag no_progress_flag() { return {.name = "--no-progress", .help = "no progress bars"}; }

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
