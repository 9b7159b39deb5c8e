// brecq upgrade: rewrites a quantized model file of an older format version (brecq-quantized-1,
// read through the model registry) as the current one (brecq-quantized-2, which the integer
// runtime reads and which holds the graph itself).
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "args.hpp"
#include "brecq/quant/serialize.hpp"

namespace {

using namespace brecq;

int run(const std::vector<std::string>& argv) {
  cli::Args args(
      "upgrade",
      "Rewrites a quantized model file written by an older brecq (format " +
          std::string(quant::kQuantizedFormatV1) + ") in the current format (" +
          quant::kQuantizedFormat +
          "), which `brecq infer` and the integer runtime read. Weight levels, scales, zero "
          "points and activation quantizers are copied; conv biases are rounded to the int32 grid "
          "of their accumulator, as the integer runtime adds them.",
      {{.name = "--quantized",
        .value_name = "FILE",
        .help = "quantized model to upgrade",
        .required = true},
       {.name = "--out",
        .value_name = "FILE",
        .help = "upgraded model (safetensors)",
        .required = true}});
  if (!args.parse(argv)) return 0;
  const std::string in = args.get_file("--quantized");
  const std::string out = args.get_output("--out");
  std::error_code ec;
  if (std::filesystem::equivalent(in, out, ec))
    args.fail("flag --out must name another file than --quantized, got '" + out + "' for both");

  quant::QuantizedFile f = quant::read_quantized(in);
  // Version 2 keeps conv biases on their int32 accumulator grid (what the integer runtime adds).
  const double bias_change = quant::snap_biases(f.model);
  quant::save_quantized(f.model, out, f.params);
  // The file written must describe the same quantized model.
  const quant::QuantModel back = quant::load_quantized(out);
  const std::string diff = quant::quantized_difference(f.model, back);
  check(diff.empty(), "brecq upgrade: '", out, "' does not read back as the model of '", in,
        "': ", diff);

  const quant::QuantModel& qm = f.model;
  std::printf(
      "%s: %s (version %d) -> %s (%s); conv biases rounded to their int32 accumulator "
      "grid (largest change %.3g)\n",
      qm.model.arch.c_str(), in.c_str(), f.version, out.c_str(), quant::kQuantizedFormat,
      bias_change);
  const bool fp_input =
      qm.model.input_point < 0 || !qm.act_enabled[static_cast<size_t>(qm.model.input_point)];
  if (qm.settings.a_bits == 0)
    std::printf(
        "note: a weight-only model (float activations): `brecq eval --quantized` evaluates it, the "
        "integer runtime refuses it; quantize with --a-bits 2..8 and --input-bits 8 for it.\n");
  else if (fp_input)
    std::printf(
        "note: this model has a float input (quantized without an input quantizer): `brecq eval "
        "--quantized` evaluates it, the integer runtime refuses it. Requantize with --input-bits 8 "
        "(`brecq quantize --rounding-from %s --input-bits 8 ...` reruns the activation part "
        "only).\n",
        in.c_str());
  return 0;
}

[[maybe_unused]] const bool registered = cli::register_subcommand(
    {"upgrade", "rewrite an older quantized model file in the current format", run});

}  // namespace
