// brecq tune: a seeded random or grid search over the settings of the calibration baselines
// (observer, percentile, per-channel and symmetric weights, weight ranges, first/last layer
// bits, bias correction), scored on a held-out split of the calibration images — never on test
// images: it takes no test folder. Prints the trials, writes the best setting's quantized file
// (what `brecq eval --quantized` and `brecq infer` read) and, with --report, a JSON report.
#include "brecq/quant/tune.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "args.hpp"
#include "brecq/driver/driver.hpp"
#include "quant_flags.hpp"

// A named namespace (not an anonymous one): tests/quant/test_tune.cpp includes this file beside
// quantize.cpp to drive both subcommands.
namespace brecq::cli::tune_command {

inline std::vector<Flag> flags() {
  return fp_model_flags(
      {{.name = "--out",
        .value_name = "FILE",
        .help = "the best setting's quantized model (safetensors)",
        .required = true},
       {.name = "--report", .value_name = "FILE", .help = "write the trials as JSON here"},
       {.name = "--w-bits", .value_name = "N", .help = "weight bits, 2..8", .default_value = "4"},
       {.name = "--a-bits",
        .value_name = "N",
        .help = "activation bits, 2..8",
        .default_value = "4"},
       {.name = "--input-bits",
        .value_name = "N",
        .help = "bits of the input image's quantizer (min-max), 0 for an FP input",
        .default_value = "8"},
       {.name = "--search",
        .value_name = "random|grid",
        .help = "random: --trials distinct settings drawn with --seed; grid: every setting",
        .default_value = "random"},
       {.name = "--trials",
        .value_name = "N",
        .help = "random search: settings tried (default 16, or the whole space if smaller)"},
       {.name = "--seed",
        .value_name = "N",
        .help = "the split of the calibration images and the random draw",
        .default_value = "1029"},
       {.name = "--calib-size",
        .value_name = "N",
        .help = "calibration images used (held-out part included)",
        .default_value = "1024"},
       {.name = "--heldout",
        .value_name = "N",
        .help = "of those, held out for the score (the rest calibrate)",
        .default_value = "256"},
       {.name = "--score",
        .value_name = "agreement|labels",
        .help = "held-out score: top-1 agreement with the FP model, or top-1 against the "
                "class\nfolders of --calib",
        .default_value = "agreement"},
       {.name = "--methods",
        .value_name = "LIST",
        .help = "activation ranges tried, from minmax,ema,percentile,mse,kl,datafree",
        .default_value = "minmax,ema,percentile,mse,kl,datafree"},
       {.name = "--percentiles",
        .value_name = "LIST",
        .help = "clipping percentiles tried by the percentile method, each in (0, 100]",
        .default_value = "99.9,99.99,99.999"},
       {.name = "--per-channel-weights",
        .value_name = "LIST",
        .help = "weight ranges per output channel (on) or per layer (off)",
        .default_value = "on,off"},
       {.name = "--symmetric-weights",
        .value_name = "LIST",
        .help = "weight zero point free (off) or at the middle of the grid (on)",
        .default_value = "off,on"},
       {.name = "--w-range",
        .value_name = "LIST",
        .help = "weight range rules tried: lp (the L2.4 search of `quantize`), minmax",
        .default_value = "lp,minmax"},
       {.name = "--first-last-bits",
        .value_name = "LIST",
        .help = "bits of the first conv and last FC (and the stem's output) tried, each 2..8",
        .default_value = "8"},
       {.name = "--bias-correction",
        .value_name = "LIST",
        .help = "bias correction (Nagel et al. 2019) off and/or on",
        .default_value = "off,on"},
       {.name = "--batch",
        .value_name = "N",
        .help = "images per calibration batch and scoring pass",
        .default_value = "64"},
       {.name = "--momentum",
        .value_name = "M",
        .help = "ema method: weight of the running range, in [0, 1)",
        .default_value = "0.9"},
       {.name = "--lp",
        .value_name = "P",
        .help = "mse method: exponent of the error searched",
        .default_value = "2"},
       {.name = "--bn-k",
        .value_name = "K",
        .help = "datafree method: ranges are BatchNorm mean +- K std",
        .default_value = "3"},
       cli::preprocess_flag()});
}

/// The comma-separated items of flag `name`, each one of `choices` (if not empty), none twice.
inline std::vector<std::string> get_list(const Args& args, const std::string& name,
                                         const std::vector<std::string>& choices,
                                         const std::string& expected) {
  const std::string v = args.get(name);
  std::vector<std::string> out;
  std::string item;
  std::istringstream s(v);
  while (std::getline(s, item, ',')) {
    if (item.empty() ||
        (!choices.empty() && std::find(choices.begin(), choices.end(), item) == choices.end()))
      args.fail("flag " + name + " expects a comma-separated list of " + expected + "; got '" +
                item + "' in '" + v + "'");
    if (std::find(out.begin(), out.end(), item) != out.end())
      args.fail("flag " + name + " expects each value once, got '" + item + "' twice in '" + v +
                "'");
    out.push_back(item);
  }
  if (out.empty() || v.back() == ',')
    args.fail("flag " + name + " expects a comma-separated list of " + expected + ", got '" + v +
              "'");
  return out;
}

inline std::vector<bool> get_switches(const Args& args, const std::string& name) {
  std::vector<bool> out;
  for (const std::string& x : get_list(args, name, {"on", "off"}, "on, off"))
    out.push_back(x == "on");
  return out;
}

/// Percentiles: numbers in (0, 100].
inline std::vector<float> get_percentiles(const Args& args, const std::string& name) {
  const std::string expected = "numbers in (0, 100]";
  std::vector<float> out;
  for (const std::string& x : get_list(args, name, {}, expected)) {
    float f = 0;
    const auto [end, ec] = std::from_chars(x.data(), x.data() + x.size(), f);
    if (ec != std::errc() || end != x.data() + x.size() || !(f > 0.0f && f <= 100.0f))
      args.fail("flag " + name + " expects a comma-separated list of " + expected + "; got '" + x +
                "' in '" + args.get(name) + "'");
    out.push_back(f);
  }
  return out;
}

inline std::vector<int> get_bits(const Args& args, const std::string& name) {
  std::vector<int> out;
  for (const std::string& x :
       get_list(args, name, {"2", "3", "4", "5", "6", "7", "8"}, "bit-widths in [2, 8]"))
    out.push_back(std::stoi(x));
  return out;
}

inline int run(const std::vector<std::string>& argv) {
  Args args("tune",
            "Searches the settings of the calibration baselines (`brecq calibrate`) for the best "
            "score on a\nheld-out split of the calibration images (never on test images: there "
            "is no test flag), and\nwrites the best setting's quantized file. Each trial "
            "calibrates on the rest of the split.\nModels: " +
                nn::model_names_list() + ".",
            flags());
  for (const std::string& a : argv)
    for (const char* f : {"--data", "--test"})
      if (a == f || a.starts_with(std::string(f) + "="))
        args.fail(std::string("flag ") + f +
                  " is refused: tune scores on a held-out split of --calib and never reads test "
                  "images; evaluate its --out with `brecq eval --quantized FILE --data DIR`");
  if (!args.parse(argv)) return 0;

  const std::string model_name = args.get_choice("--model", nn::model_names());
  const std::string weights = args.get_file("--weights");
  const std::string calib_dir = args.get_dir("--calib");
  const std::string out = args.get_output("--out");
  const std::string report = args.has("--report") ? args.get_output("--report") : "";
  quant::TuneParams p;
  p.bits.w_bits = static_cast<int>(args.get_int("--w-bits", 2, 8));
  p.bits.a_bits = static_cast<int>(args.get_int("--a-bits", 2, 8));
  p.bits.input_bits = static_cast<int>(args.get_int("--input-bits", 0, 8));
  if (p.bits.input_bits == 1)
    args.fail("flag --input-bits expects 0 or an integer in [2, 8], got '1'");
  p.search = args.get_choice("--search", {"random", "grid"}) == "grid" ? quant::TuneSearch::grid
                                                                       : quant::TuneSearch::random;
  p.seed = static_cast<uint64_t>(args.get_int("--seed", 0));
  p.images = args.get_int("--calib-size", 2);
  p.heldout = args.get_int("--heldout", 1, p.images - 1);
  p.score = args.get_choice("--score", {"agreement", "labels"}) == "labels"
                ? quant::TuneScore::labels
                : quant::TuneScore::agreement;
  std::vector<std::string> methods = quant::observer_methods();
  methods.push_back("datafree");
  p.space.methods = get_list(args, "--methods", methods, Args::join(methods));
  p.space.percentiles = get_percentiles(args, "--percentiles");
  p.space.per_channel = get_switches(args, "--per-channel-weights");
  p.space.symmetric = get_switches(args, "--symmetric-weights");
  p.space.w_range.clear();
  for (const std::string& w : get_list(args, "--w-range", {"lp", "minmax"}, "lp, minmax"))
    p.space.w_range.push_back(w == "lp" ? quant::RangeInit::lp_search : quant::RangeInit::minmax);
  p.space.first_last_bits = get_bits(args, "--first-last-bits");
  p.space.bias_correction = get_switches(args, "--bias-correction");
  const int64_t space_size = static_cast<int64_t>(quant::enumerate(p.space).size());
  if (args.has("--trials")) {
    if (p.search == quant::TuneSearch::grid)
      args.fail("flag --trials is for --search random; --search grid tries all " +
                std::to_string(space_size) + " settings, got --trials " + args.get("--trials"));
    p.trials = args.get_int("--trials", 1, space_size);
  } else {
    p.trials = std::min<int64_t>(16, space_size);
  }
  p.batch = args.get_int("--batch", 1);
  p.observer.momentum = args.get_float("--momentum", 0.0f, 0.999999f);
  p.observer.lp = args.get_float("--lp", 0.1f, 10.0f);
  p.bn_k = args.get_float("--bn-k", 0.1f, 100.0f);
  const ImagePreprocess pre = cli::image_preprocess(args, model_name);
  quant::ActivationRange in{INFINITY, -INFINITY};  // datafree: the image's range, known
  for (size_t c = 0; c < pre.mean.size(); ++c) {
    in.lo = std::min(in.lo, (0.0f - pre.mean[c]) / pre.std[c]);
    in.hi = std::max(in.hi, (1.0f - pre.mean[c]) / pre.std[c]);
  }
  p.input_range = in;

  const quant::FolderSource source(calib_dir, pre);
  if (p.images > source.size())
    args.fail("flag --calib-size expects at most the " + std::to_string(source.size()) +
              " images of --calib '" + calib_dir + "', got '" + args.get("--calib-size") + "'");
  const driver::LoadedModel fp = driver::load_model(model_name, weights);
  if (p.score == quant::TuneScore::labels &&
      static_cast<int64_t>(source.folder().classes().size()) > fp.model.num_classes)
    args.fail("flag --score labels needs the class folders of --calib '" + calib_dir +
              "' to be the model's classes: " + std::to_string(source.folder().classes().size()) +
              " folders, " + std::to_string(fp.model.num_classes) + " classes");

  std::ostringstream key;
  key << "tune model=" << model_name << " weights=" << std::filesystem::absolute(weights).string()
      << " calib=" << calib_dir << " n=" << p.images << " heldout=" << p.heldout
      << " score=" << quant::tune_score_name(p.score)
      << " search=" << quant::tune_search_name(p.search)
      << " trials=" << (p.search == quant::TuneSearch::grid ? space_size : p.trials)
      << " space=" << space_size << " seed=" << p.seed << " w=" << p.bits.w_bits
      << " a=" << p.bits.a_bits << " in=" << p.bits.input_bits << " batch=" << p.batch;
  std::printf("brecq %s\n", key.str().c_str());
  std::printf("%5s  %-10s %6s %4s %4s %7s %3s %4s  %9s %8s\n", "trial", "method", "pct", "pc",
              "sym", "w-range", "fl", "bias", "held-out", "seconds");
  std::fflush(stdout);
  p.on_trial = [](const quant::TuneTrial& t) {
    const quant::TuneSetting& s = t.setting;
    char pct[16] = "-";
    if (s.method == "percentile") std::snprintf(pct, sizeof pct, "%g", s.percentile);
    std::printf("%5zu  %-10s %6s %4s %4s %7s %3d %4s  %8.2f%% %8.2f\n", t.index, s.method.c_str(),
                pct, s.per_channel ? "on" : "off", s.symmetric ? "on" : "off",
                s.w_range == quant::RangeInit::minmax ? "minmax" : "lp", s.first_last_bits,
                s.bias_correction ? "on" : "off", t.score, t.seconds);
    std::fflush(stdout);
  };

  const quant::TuneReport r = quant::tune(fp.model, source, p);
  const quant::TuneTrial& best = r.trials[r.best];
  std::printf("FP model on the held-out split: %.2f %% (%s)\n", r.fp_score,
              quant::tune_score_name(p.score));
  std::printf("best: trial %zu, %s: held-out %s %.2f %%\n", best.index,
              best.setting.describe().c_str(), quant::tune_score_name(p.score), best.score);
  quant::save_quantized(*r.best_model, fp.options, out,
                        {{"settings", key.str() + " best: " + best.setting.describe()},
                         {"method", "tuned calibration baseline: " + best.setting.describe()}});
  std::printf("wrote %s\n", out.c_str());
  if (!report.empty()) {
    std::ofstream f(report);
    check(f.is_open(), "cannot write the report '", report, "'");
    f << quant::tune_report_json(r, p,
                                 {{"model", json_quote(model_name)},
                                  {"weights", json_quote(weights)},
                                  {"calib", json_quote(calib_dir)},
                                  {"out", json_quote(out)}});
    check(f.good(), "writing the report '", report, "' failed");
    std::printf("wrote %s\n", report.c_str());
  }
  std::printf("wall time %.2f s (%zu trials)\n", r.seconds, r.trials.size());
  return 0;
}

[[maybe_unused]] const bool registered = register_subcommand(
    {"tune", "Search calibration-baseline settings on a held-out calibration split; write the best",
     run});

}  // namespace brecq::cli::tune_command
