// brecq quantize: BRECQ post-training quantization of a model with safetensors weights on a folder
// of calibration images; writes the quantized model (integer weight levels, quantizer parameters)
// to a safetensors file that `brecq eval --quantized` reads.
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "args.hpp"
#include "brecq/driver/driver.hpp"
#include "brecq/mixed/allocation.hpp"
#include "brecq/quant/brecq.hpp"
#include "quant_flags.hpp"

namespace {

using namespace brecq;

/// The name of the method a granularity and recipe make: layer-wise reconstruction with the
/// faithful (brecq) recipe is AdaRound as the BRECQ paper's layer-wise baseline.
std::string method_name(const std::string& granularity, quant::Recipe recipe) {
  if (recipe == quant::Recipe::qdrop) return "QDrop (Wei et al. 2022), " + granularity + "-wise";
  if (granularity == "layer") return "layer-wise AdaRound (Nagel et al. 2020)";
  return "BRECQ (Li et al. 2021), " + granularity + "-wise";
}

int run(const std::vector<std::string>& argv) {
  quant::ReconstructionSettings d;  // official defaults shown in the usage
  cli::Args args(
      "quantize",
      "BRECQ post-training quantization (Li et al., ICLR 2021): AdaRound weight rounding and\n"
      "learned activation steps, reconstructed unit by unit. Defaults are the official code's.\n"
      "A checkpoint OUT.ckpt is written after every unit; rerunning the same command resumes.\n"
      "Models: " +
          nn::model_names_list() + ".",
      cli::fp_model_flags(
          {{.name = "--out",
            .value_name = "FILE",
            .help = "quantized model output (safetensors)",
            .required = true},
           {.name = "--w-bits",
            .value_name = "N",
            .help = "weight bits, 2..8",
            .default_value = "4"},
           {.name = "--a-bits",
            .value_name = "N",
            .help = "activation bits, 2..8, or 0 for weight-only",
            .default_value = "0"},
           {.name = "--bits-config",
            .value_name = "FILE",
            .help = "per-layer weight bits (a bits file of `brecq mixed`), over --w-bits and "
                    "--first-last-bits"},
           {.name = "--first-last-bits",
            .value_name = "N",
            .help = "bits of the first conv and last FC",
            .default_value = "8"},
           {.name = "--input-bits",
            .value_name = "N",
            .help =
                "bits of the input image's quantizer (with --a-bits), 0 for an FP input (official "
                "code)",
            .default_value = "8"},
           {.name = "--method",
            .value_name = "brecq|adaround",
            .help = "adaround: layer-wise AdaRound (Nagel et al. 2020), i.e. --granularity layer "
                    "with the\nbrecq recipe",
            .default_value = "brecq"},
           {.name = "--granularity",
            .value_name = "layer|block|stage|network",
            .help = "reconstruction unit",
            .default_value = "block"},
           {.name = "--loss",
            .value_name = "mse|fisher",
            .help = "reconstruction loss",
            .default_value = "mse"},
           {.name = "--iters-w",
            .value_name = "N",
            .help = "AdaRound iterations per unit",
            .default_value = std::to_string(d.iters_w)},
           {.name = "--iters-a",
            .value_name = "N",
            .help = "activation-step iterations per unit",
            .default_value = std::to_string(d.iters_a)},
           {.name = "--batch",
            .value_name = "N",
            .help = "reconstruction batch size",
            .default_value = "32"},
           {.name = "--lr-a",
            .value_name = "X",
            .help = "activation-step Adam learning rate (brecq recipe)",
            .default_value = "0.0004"},
           {.name = "--act-init-images",
            .value_name = "N",
            .help = "calibration images for the activation range initialisation",
            .default_value = "64"},
           {.name = "--calib-size",
            .value_name = "N",
            .help = "calibration images",
            .default_value = "1024"},
           {.name = "--lambda",
            .value_name = "X",
            .help = "rounding regulariser weight (default 0.01, or the architecture's preset: 0.1 "
                    "for mobilenet_v2)"},
           {.name = "--recipe",
            .value_name = "brecq|qdrop",
            .help =
                "brecq: weight pass, then activation pass (official); qdrop: one joint pass with "
                "random drop of activation quantization",
            .default_value = "brecq"},
           {.name = "--qdrop",
            .value_name = "P",
            .help = "probability of keeping an activation in FP (brecq: activation pass, default 0 "
                    "= off; "
                    "qdrop: default 0.5)"},
           {.name = "--act-input",
            .value_name = "fp|quantized",
            .help = "activation pass unit input from the FP (official) or the quantized model",
            .default_value = "fp"},
           {.name = "--rounding-from",
            .value_name = "FILE",
            .help = "weight rounding learned before (a file of brecq quantize on the same model, "
                    "weights and\n"
                    "bits): skip the weight pass and run the activation part only (brecq recipe)"},
           {.name = "--seed", .value_name = "N", .help = "random seed", .default_value = "1029"},
           {.name = "--cache-dir",
            .value_name = "DIR",
            .help = "keep each unit's cached inputs and targets in memory-mapped temporary files "
                    "here\n(for calibration sets whose activations do not fit in memory)"},
           cli::preprocess_flag(),
           {.name = "--data",
            .value_name = "DIR",
            .help = "evaluate FP, nearest rounding and the result here"},
           cli::no_progress_flag()}));
  if (!args.parse(argv)) return 0;

  const std::string model_name = args.get_choice("--model", nn::model_names());
  const std::string weights = args.get_file("--weights");
  const std::string calib_dir = args.get_dir("--calib");
  const std::string out = args.get_output("--out");
  quant::QuantSettings qs = cli::quant_bits(args);
  const bool adaround = args.get_choice("--method", {"brecq", "adaround"}) == "adaround";
  if (adaround && args.has("--granularity") && args.get("--granularity") != "layer")
    args.fail(
        "flag --method adaround is layer-wise: it expects --granularity layer or none, got '" +
        args.get("--granularity") + "'");
  if (adaround && args.has("--recipe") && args.get("--recipe") != "brecq")
    args.fail(
        "flag --method adaround uses the brecq recipe: it expects --recipe brecq or none, "
        "got '" +
        args.get("--recipe") + "'");
  const std::string granularity =
      adaround ? "layer" : args.get_choice("--granularity", {"layer", "block", "stage", "network"});
  quant::ReconstructionSettings s;
  s.loss = quant::parse_recon_loss(args.get_choice("--loss", {"mse", "fisher"}));
  s.iters_w = args.get_int("--iters-w", 0);
  s.iters_a = args.get_int("--iters-a", 0);
  s.batch = args.get_int("--batch", 1);
  s.seed = static_cast<uint64_t>(args.get_int("--seed", 0));
  if (args.has("--cache-dir")) s.cache_dir = args.get_dir("--cache-dir");
  s.act_input_quantized = args.get_choice("--act-input", {"fp", "quantized"}) == "quantized";
  if (args.has("--no-progress")) s.progress = nullptr;
  if (args.has("--lambda")) s.lambda = args.get_float("--lambda", 0.0f, 1e3f);
  const std::string preset = quant::apply_preset(s, model_name, {.lambda = args.has("--lambda")});
  s.lr_a = args.get_float("--lr-a", 1e-7f, 1.0f);
  s.act_init_images = args.get_int("--act-init-images", 1);
  s.recipe = quant::parse_recipe(args.get_choice("--recipe", {"brecq", "qdrop"}));
  if (args.has("--qdrop")) {
    s.qdrop = args.get_float("--qdrop", 0.0f, 0.99f);
    if (s.recipe == quant::Recipe::qdrop && s.qdrop == 0.0f)
      args.fail("flag --qdrop expects a probability in (0, 0.99] with --recipe qdrop, got '0'");
  } else {
    s.qdrop = s.recipe == quant::Recipe::qdrop ? 0.5f : 0.0f;
  }
  const int64_t calib_size = args.get_int("--calib-size", 1);
  if (s.act_init_images > calib_size)
    args.fail("flag --act-init-images asks for " + std::to_string(s.act_init_images) +
              " images, more than --calib-size " + std::to_string(calib_size));
  const std::string rounding_from =
      args.has("--rounding-from") ? args.get_file("--rounding-from") : "";
  if (!rounding_from.empty() && (qs.a_bits == 0 || s.recipe != quant::Recipe::brecq))
    args.fail(
        "flag --rounding-from reruns the activation part: it needs --a-bits 2..8 and --recipe "
        "brecq");
  const ImagePreprocess pre = cli::image_preprocess(args, model_name);
  const driver::LoadedModel fp = driver::load_model(model_name, weights);
  const nn::Model& model = fp.model;
  const std::string bits_config = args.has("--bits-config") ? args.get_file("--bits-config") : "";
  if (!bits_config.empty()) qs.layer_w_bits = mixed::read_bits_file(bits_config, model);

  ImageFolder calib_folder(calib_dir, pre);
  check(calib_size <= calib_folder.size(), "flag --calib-size asks for ", calib_size,
        " images but --calib '", calib_dir, "' holds ", calib_folder.size());
  const Batch calib = load_image_folder(
      calib_dir, {.preprocess = pre, .limit = calib_size, .shuffle = true, .seed = s.seed});

  // The run as the output file records it (the library adds what it derives from the data).
  std::ostringstream key;
  key << "model=" << model_name << " weights=" << std::filesystem::absolute(weights).string()
      << " bytes=" << std::filesystem::file_size(weights) << " calib=" << calib_dir
      << " n=" << calib_size << " w=" << qs.w_bits << " a=" << qs.a_bits
      << " fl=" << qs.first_last_bits << " in=" << qs.input_bits << " g=" << granularity
      << " loss=" << args.get("--loss") << " iw=" << s.iters_w << " ia=" << s.iters_a
      << " b=" << s.batch << " lambda=" << s.lambda << " lr_a=" << s.lr_a
      << " act_init=" << s.act_init_images << " recipe=" << args.get("--recipe")
      << " qdrop=" << s.qdrop << " act_input=" << args.get("--act-input") << " seed=" << s.seed;
  if (!bits_config.empty()) {
    key << " bits_config=" << std::filesystem::absolute(bits_config).string() << " bits=";
    for (const auto& [name, b] : qs.layer_w_bits) key << name << ":" << b << ",";
  }
  if (!rounding_from.empty())
    key << " rounding_from=" << std::filesystem::absolute(rounding_from).string()
        << " bytes=" << std::filesystem::file_size(rounding_from);
  std::printf("brecq quantize: %s\n", key.str().c_str());
  const std::string method = method_name(granularity, s.recipe);
  std::printf("  method: %s\n", method.c_str());
  if (!preset.empty())
    std::printf("  %s%s\n", preset.c_str(), args.has("--lambda") ? "" : "; --lambda overrides it");
  if (s.recipe == quant::Recipe::qdrop)
    std::printf(
        "  AdaRound: Adam lr %g, beta %g->%g after %g%% warm-up; with it activation steps: Adam lr "
        "%g"
        " cosine; drop %g; L%g loss; threads %d\n",
        s.lr_w, s.beta_start, s.beta_end, 100 * s.warmup, s.lr_a_joint, s.qdrop, s.p_w,
        num_threads());
  else
    std::printf(
        "  AdaRound: Adam lr %g, beta %g->%g after %g%% warm-up; activation steps: Adam lr %g "
        "cosine,"
        " L%g loss; threads %d\n",
        s.lr_w, s.beta_start, s.beta_end, 100 * s.warmup, s.lr_a, s.p_a, num_threads());
  std::fflush(stdout);

  quant::QuantModel qm(model, qs);
  std::optional<LabeledImages> data;  // streamed: decoded batch by batch at each evaluation
  if (args.has("--data")) {
    data.emplace(args.get_dir("--data"), pre);
    check(data->max_label() < model.num_classes, "--data folder '", args.get("--data"),
          "' has class index ", data->max_label(), " but ", model_name, " has only ",
          model.num_classes, " outputs");
  }
  auto report = [&](const char* what, const nn::ForwardFn& f) {
    if (!data) return;
    const nn::Accuracy a = driver::evaluate(f, *data, {.label = what, .progress = s.progress});
    std::printf("%s\n", driver::accuracy_line(what, a).c_str());
    std::fflush(stdout);
  };
  const auto weights_only = driver::quantized_forward(qm, quant::ForwardMode::weights_only());
  report("FP", driver::fp_forward(model));
  report("nearest rounding (W)", weights_only);
  if (!rounding_from.empty()) {
    quant::load_weight_rounding(qm, rounding_from);
    report("rounding from file (W)", weights_only);
  }

  const size_t num_units = quant::units_for(granularity, qm.model).size();
  // The library refuses a checkpoint from other settings or data; the paths are extra identity.
  quant::BrecqRunOptions run{
      .checkpoint = out + ".ckpt",
      .key = "weights=" + std::filesystem::absolute(weights).string() + " calib=" + calib_dir,
      .rounding_installed = !rounding_from.empty()};
  if (qs.a_bits > 0)  // the weight pass alone, as the official code reports it
    run.on_unit_done = [&](const std::string& pass, size_t done) {
      if (pass == "weights" && done == num_units) report("BRECQ weights only", weights_only);
    };
  const quant::BrecqReport rep = quant::run_brecq(granularity, qm, calib.images, s, run);
  std::printf("\n%-40s %-12s %12s %12s %9s\n", "unit", "pass", "loss before", "loss after",
              "seconds");
  for (const quant::UnitReport& r : rep.units)
    std::printf("%-40s %-12s %12.5g %12.5g %9.1f\n", r.unit.c_str(), r.pass.c_str(), r.loss_before,
                r.loss_after, r.seconds);
  std::printf("weight pass %.1f s, activation pass %.1f s, total %.1f s", rep.weight_seconds,
              rep.act_seconds, rep.weight_seconds + rep.act_seconds);
  if (rep.resumed_weight_units + rep.resumed_act_units)
    std::printf(" (resumed after %zu weight and %zu activation units)", rep.resumed_weight_units,
                rep.resumed_act_units);
  std::printf("\n");
  if (qs.a_bits > 0) {
    // The file holds conv biases on the integer runtime's int32 grid; evaluate what it holds.
    report("BRECQ (W+A), FP biases", driver::quantized_forward(qm));
    std::printf("conv biases on the int32 accumulator grid: largest change %.3g\n",
                quant::snap_biases(qm));
  }
  quant::save_quantized(qm, fp.options, out, {{"settings", key.str()}, {"method", method}});
  std::printf("wrote %s\n", out.c_str());
  report(qs.a_bits ? "BRECQ (W+A)" : "BRECQ (W)", driver::quantized_forward(qm));
  return 0;
}

[[maybe_unused]] const bool registered = cli::register_subcommand(
    {"quantize", "BRECQ post-training quantization to a quantized safetensors file", run});

}  // namespace
