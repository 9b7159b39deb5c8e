// brecq calibrate: quantization without back-propagation — data-free (BatchNorm statistics) or
// with an activation observer over calibration images, optionally with bias correction; writes
// the same quantized file as `brecq quantize`, so that `brecq eval --quantized` and `brecq infer`
// take it. The baselines BRECQ is measured against.
#include "brecq/quant/calibrate.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "args.hpp"
#include "brecq/driver/driver.hpp"
#include "brecq/quant/serialize.hpp"
#include "quant_flags.hpp"

namespace {

using namespace brecq;

std::vector<cli::Flag> flags() {
  return cli::fp_model_flags(
      cli::bit_flags(
          8, 8,
          {{.name = "--method",
            .value_name = "minmax|ema|percentile|mse|kl|datafree",
            .help = "activation ranges: an observer over the calibration images, or datafree (the "
                    "BatchNorm statistics, no images)",
            .required = true},
           {.name = "--out",
            .value_name = "FILE",
            .help = "quantized model output (safetensors)",
            .required = true},
           {.name = "--per-channel-weights",
            .value_name = "on|off",
            .help = "one weight range per output channel, or one per layer",
            .default_value = "on"},
           {.name = "--w-range",
            .value_name = "minmax|lp|auto",
            .help = "weight ranges: min-max, or the L2.4 search of `quantize`; auto: minmax with "
                    "datafree, lp otherwise",
            .default_value = "auto"},
           {.name = "--percentile",
            .value_name = "P",
            .help = "percentile method: the clipping percentile, in (0, 100]",
            .default_value = "99.99"},
           {.name = "--momentum",
            .value_name = "M",
            .help = "ema method: weight of the running range, in [0, 1)",
            .default_value = "0.9"},
           {.name = "--lp",
            .value_name = "P",
            .help = "mse method: exponent of the error searched (2 = MSE)",
            .default_value = "2"},
           {.name = "--bn-k",
            .value_name = "K",
            .help = "datafree method: ranges are BatchNorm mean +- K std",
            .default_value = "3"},
           {.name = "--bias-correction",
            .help = "correct every layer's mean output shift on the calibration images"},
           {.name = "--calib-size",
            .value_name = "N",
            .help = "calibration images",
            .default_value = "1024"},
           {.name = "--batch",
            .value_name = "N",
            .help = "images per calibration batch (each observer sees every batch)",
            .default_value = "64"},
           {.name = "--seed",
            .value_name = "N",
            .help = "calibration image shuffle",
            .default_value = "1029"},
           cli::preprocess_flag(),
           {.name = "--data", .value_name = "DIR", .help = "evaluate the result here"},
           cli::no_progress_flag()}),
      "not needed by datafree without --bias-correction");
}

int run(const std::vector<std::string>& argv) {
  cli::Args args("calibrate",
                 "Quantization without back-propagation: round-to-nearest weights, activation "
                 "ranges from an\nobserver over calibration images or from the BatchNorm "
                 "statistics (datafree), optionally\nempirical bias correction (Nagel et al. "
                 "2019). Models: " +
                     nn::model_names_list() + ".",
                 flags());
  if (!args.parse(argv)) return 0;
  const auto start = std::chrono::steady_clock::now();

  const std::string model_name = args.get_choice("--model", nn::model_names());
  const std::string weights = args.get_file("--weights");
  std::vector<std::string> methods = quant::observer_methods();
  methods.push_back("datafree");
  const std::string method = args.get_choice("--method", methods);
  const bool datafree = method == "datafree";
  const bool bias_correction = args.has("--bias-correction");
  const std::string out = args.get_output("--out");
  quant::QuantSettings qs = cli::quant_bits(args);
  const bool per_channel = args.get_choice("--per-channel-weights", {"on", "off"}) == "on";
  std::string w_range = args.get_choice("--w-range", {"minmax", "lp", "auto"});
  if (w_range == "auto") w_range = datafree ? "minmax" : "lp";
  const quant::ObserverParams op{.momentum = args.get_float("--momentum", 0.0f, 0.999999f),
                                 .percentile = args.get_float("--percentile", 1e-6f, 100.0f),
                                 .lp = args.get_float("--lp", 0.1f, 10.0f)};
  const float bn_k = args.get_float("--bn-k", 0.1f, 100.0f);
  const bool needs_calib = (!datafree && qs.a_bits > 0) || bias_correction;
  if (needs_calib && !args.has("--calib"))
    args.fail(std::string("flag --calib is needed by ") +
              (bias_correction ? "--bias-correction" : "--method " + method) +
              " (it measures on calibration images), got nothing");
  const int64_t calib_size = args.get_int("--calib-size", 1);
  const int64_t batch = args.get_int("--batch", 1);
  const uint64_t seed = static_cast<uint64_t>(args.get_int("--seed", 0));
  const ImagePreprocess pre = cli::image_preprocess(args, model_name);

  std::ostringstream key;
  key << "calibrate method=" << method << " model=" << model_name
      << " weights=" << std::filesystem::absolute(weights).string() << " w=" << qs.w_bits
      << " a=" << qs.a_bits << " fl=" << qs.first_last_bits << " in=" << qs.input_bits
      << " per_channel_w=" << (per_channel ? "on" : "off") << " w_range=" << w_range;
  if (method == "percentile") key << " percentile=" << op.percentile;
  if (method == "ema") key << " momentum=" << op.momentum;
  if (method == "mse") key << " lp=" << op.lp;
  if (datafree) key << " bn_k=" << bn_k;
  if (needs_calib)
    key << " calib=" << args.get("--calib") << " n=" << calib_size << " batch=" << batch
        << " seed=" << seed;
  key << " bias_correction=" << (bias_correction ? "on" : "off");
  std::printf("brecq %s\n", key.str().c_str());
  std::fflush(stdout);

  const driver::LoadedModel fp = driver::load_model(model_name, weights);
  quant::QuantModel qm(fp.model, qs);  // folds BatchNorm; fp.model keeps it for datafree
  quant::round_weights_to_nearest(
      qm, {.per_channel = per_channel,
           .init = w_range == "minmax" ? quant::RangeInit::minmax : quant::RangeInit::lp_search});

  std::optional<Batch> calib;
  std::vector<Tensor> batches;
  if (needs_calib) {
    const std::string dir = args.get_dir("--calib");
    ImageFolder folder(dir, pre);
    check(calib_size <= folder.size(), "flag --calib-size asks for ", calib_size,
          " images but --calib '", dir, "' holds ", folder.size());
    calib = load_image_folder(
        dir, {.preprocess = pre, .limit = calib_size, .shuffle = true, .seed = seed});
    for (int64_t b0 = 0; b0 < calib->images.dim(0); b0 += batch)
      batches.push_back(calib->images.narrow(0, b0, std::min(batch, calib->images.dim(0) - b0)));
  }
  if (qs.a_bits > 0 && datafree) {
    // The image's range is known from the preprocessing: pixels in [0, 1], normalised.
    quant::ActivationRange in{INFINITY, -INFINITY};
    for (size_t c = 0; c < pre.mean.size(); ++c) {
      in.lo = std::min(in.lo, (0.0f - pre.mean[c]) / pre.std[c]);
      in.hi = std::max(in.hi, (1.0f - pre.mean[c]) / pre.std[c]);
    }
    quant::init_activations_from_batchnorm(qm, fp.model, {.k = bn_k, .input = in});
  } else if (qs.a_bits > 0) {
    quant::calibrate_activations(qm, batches, quant::observer_factory(method, op));
  }
  const double range_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  double bias_seconds = 0;
  if (bias_correction) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::vector<quant::BiasShift> shifts =
        quant::correct_biases(qm, calib->images, {.batch = batch});
    bias_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("bias correction: %-32s %12s %12s\n", "layer", "max |shift|", "mean |shift|");
    for (const quant::BiasShift& s : shifts)
      std::printf("                 %-32s %12.4g %12.4g\n", s.layer.c_str(), s.max_abs, s.mean_abs);
  }
  if (qs.a_bits > 0)
    std::printf("conv biases on the int32 accumulator grid: largest change %.3g\n",
                quant::snap_biases(qm));
  quant::save_quantized(qm, fp.options, out, {{"settings", key.str()}});
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf(
      "wrote %s\nwall time %.2f s (model, weights and activation ranges %.2f s, bias correction "
      "%.2f s)\n",
      out.c_str(), seconds, range_seconds, bias_seconds);
  std::fflush(stdout);

  if (args.has("--data")) {
    const LabeledImages data(args.get_dir("--data"), pre);
    check(data.max_label() < qm.model.num_classes, "--data folder '", args.get("--data"),
          "' has class index ", data.max_label(), " but ", model_name, " has only ",
          qm.model.num_classes, " outputs");
    quant::ProgressSink progress = quant::terminal_progress();
    if (args.has("--no-progress")) progress = nullptr;
    const nn::Accuracy a = driver::evaluate(driver::quantized_forward(qm), data,
                                            {.label = method, .progress = progress});
    std::printf(
        "%s\n",
        driver::accuracy_line(method + (bias_correction ? " + bias corr." : ""), a).c_str());
  }
  return 0;
}

[[maybe_unused]] const bool registered = cli::register_subcommand(
    {"calibrate",
     "Data-free or calibration-only quantization (observers, bias correction) to a quantized "
     "file",
     run});

}  // namespace
