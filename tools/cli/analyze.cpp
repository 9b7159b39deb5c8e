// brecq analyze: which layers of a model cannot be quantized well, and why (quant/analyze.hpp).
// Per layer of the BN-folded model, with only that layer quantized at --w-bits / --a-bits: the
// weight SQNR, the logits' and the layer output's SQNR on calibration batches, weight outlier and
// input-activation range statistics, the top-1 drop on held-out images, a ranking, and a
// diagnosis with suggestions. Prints a table; --json writes it as "brecq-analysis-1"; --out writes
// a round-to-nearest quantized file with the suggestions applied.
#include "brecq/quant/analyze.hpp"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "args.hpp"
#include "brecq/driver/driver.hpp"
#include "brecq/quant/serialize.hpp"
#include "quant_flags.hpp"

namespace {

using namespace brecq;

/// Top-1 (%) of `forward` on ds[indices], streamed in batches.
double top1_on(const nn::ForwardFn& forward, const LabeledImages& ds,
               const std::vector<int64_t>& idx, int64_t batch) {
  NoGrad ng;
  int64_t hits = 0;
  for (size_t b = 0; b < idx.size(); b += static_cast<size_t>(batch)) {
    const size_t m = std::min(static_cast<size_t>(batch), idx.size() - b);
    const Batch x = gather(ds, std::span<const int64_t>(idx.data() + b, m));
    const std::vector<int64_t> pred = quant::detail::argmax_rows(forward(x.images));
    for (size_t i = 0; i < m; ++i) hits += pred[i] == x.labels[i];
  }
  return 100.0 * static_cast<double>(hits) / static_cast<double>(idx.size());
}

int run(const std::vector<std::string>& argv) {
  cli::Args args(
      "analyze",
      "Layer analysis: for every layer of the BN-folded model, with ONLY that layer quantized\n"
      "(round to nearest, L2.4 range search): weight SQNR, SQNR of the logits and of the layer\n"
      "output on calibration batches, weight outlier and input-activation statistics, the top-1\n"
      "drop on held-out images, a ranking and a diagnosis. Models: " +
          nn::model_names_list() + ".",
      cli::fp_model_flags(
          {{.name = "--w-bits",
            .value_name = "N",
            .help = "weight bits, 2..8",
            .default_value = "4"},
           {.name = "--a-bits",
            .value_name = "N",
            .help = "activation bits, 2..8, or 0 for weights only",
            .default_value = "4"},
           {.name = "--weight-granularity",
            .value_name = "channel|tensor",
            .help = "weight quantizer granularity",
            .default_value = "channel"},
           {.name = "--calib-images",
            .value_name = "N",
            .help = "calibration images for the SQNRs",
            .default_value = "256"},
           {.name = "--act-images",
            .value_name = "N",
            .help = "of those, the first N set activation ranges and statistics",
            .default_value = "64"},
           {.name = "--batch", .value_name = "N", .help = "batch size", .default_value = "64"},
           {.name = "--data",
            .value_name = "DIR",
            .help = "held-out labelled images for the accuracy drops (default: the --calib images "
                    "not used for calibration)"},
           {.name = "--images",
            .value_name = "N",
            .help =
                "held-out images (default 1000, or all that --calib has left), 0 = no accuracy"},
           {.name = "--rank-by",
            .value_name = "drop|flips",
            .help = "rank by the top-1 drop or by the share of changed predictions (for random "
                    "weights)",
            .default_value = "drop"},
           {.name = "--json", .value_name = "FILE", .help = "write the report as JSON"},
           {.name = "--out",
            .value_name = "FILE",
            .help = "write a round-to-nearest quantized file with the suggestions applied"},
           {.name = "--keep-worst",
            .value_name = "N",
            .help =
                "with --out: apply the suggestions to the N worst flagged layers only (0 = all)",
            .default_value = "0"},
           {.name = "--first-last-bits",
            .value_name = "N",
            .help = "with --out: bits of the first conv and last FC",
            .default_value = "8"},
           {.name = "--seed",
            .value_name = "N",
            .help = "image shuffle and reference seed",
            .default_value = "1029"},
           cli::preprocess_flag(),
           cli::no_progress_flag()}));
  if (!args.parse(argv)) return 0;

  const std::string model_name = args.get_choice("--model", nn::model_names());
  const std::string weights = args.get_file("--weights");
  const std::string calib_dir = args.get_dir("--calib");
  quant::AnalysisParams p;
  p.w_bits = static_cast<int>(args.get_int("--w-bits", 2, 8));
  p.a_bits = static_cast<int>(args.get_int("--a-bits", 0, 8));
  if (p.a_bits == 1) args.fail("flag --a-bits expects 0 or an integer in [2, 8], got '1'");
  p.per_channel = args.get_choice("--weight-granularity", {"channel", "tensor"}) == "channel";
  const int64_t calib_images = args.get_int("--calib-images", 1);
  p.act_images = args.get_int("--act-images", 1);
  if (p.act_images > calib_images)
    args.fail("flag --act-images expects at most --calib-images (" + std::to_string(calib_images) +
              ") images, got '" + args.get("--act-images") + "'");
  const int64_t batch = args.get_int("--batch", 1, 65536);
  p.rank_by_flips = args.get_choice("--rank-by", {"drop", "flips"}) == "flips";
  p.seed = static_cast<uint64_t>(args.get_int("--seed", 0));
  const int first_last = static_cast<int>(args.get_int("--first-last-bits", 2, 8));
  const size_t keep_worst = static_cast<size_t>(args.get_int("--keep-worst", 0, 1000000));
  const std::string json = args.has("--json") ? args.get_output("--json") : "";
  const std::string out = args.has("--out") ? args.get_output("--out") : "";
  const std::string data_dir = args.has("--data") ? args.get_dir("--data") : "";
  const bool images_given = args.has("--images");
  const int64_t images = images_given ? args.get_int("--images", 0) : 1000;
  if (!out.empty() && images == 0)
    args.fail("flag --out evaluates the file it writes on held-out images: it needs --images >= 1");
  const bool progress = !args.has("--no-progress");
  if (progress) p.progress = quant::terminal_progress();
  const ImagePreprocess pre = cli::image_preprocess(args, model_name);

  const driver::LoadedModel fp = driver::load_model(model_name, weights);
  const LabeledImages calib_set(calib_dir, pre);
  if (calib_images > calib_set.size())
    args.fail("flag --calib-images expects at most the " + std::to_string(calib_set.size()) +
              " images of --calib '" + calib_dir + "', got '" + args.get("--calib-images") + "'");
  const std::vector<int64_t> calib_order = seeded_permutation(calib_set.size(), p.seed);
  std::vector<Tensor> calib;
  for (int64_t b = 0; b < calib_images; b += batch)
    calib.push_back(gather(calib_set, std::span<const int64_t>(
                                          calib_order.data() + b,
                                          static_cast<size_t>(std::min(batch, calib_images - b))))
                        .images);

  // Held-out images: a seeded subset of --data, or the --calib images after the calibration ones.
  std::optional<LabeledImages> data_set;
  std::vector<int64_t> held_out;
  std::string source;
  if (!data_dir.empty()) {
    data_set.emplace(data_dir, pre);
    if (images > data_set->size())
      args.fail("flag --images expects at most the " + std::to_string(data_set->size()) +
                " images of --data '" + data_dir + "', got '" + std::to_string(images) + "'");
    held_out = seeded_permutation(data_set->size(), p.seed);
    held_out.resize(static_cast<size_t>(images));
    source = "--data " + data_dir + " (seeded subset of " + std::to_string(data_set->size()) + ")";
  } else {
    const int64_t left = calib_set.size() - calib_images;
    if (images_given && images > left)
      args.fail("flag --images expects at most the " + std::to_string(left) +
                " --calib images left after --calib-images " + std::to_string(calib_images) +
                " (or give --data DIR), got '" + std::to_string(images) + "'");
    const int64_t n = std::min(images, left);
    held_out.assign(calib_order.begin() + calib_images, calib_order.begin() + calib_images + n);
    source = "--calib " + calib_dir + " (images not used for calibration)";
  }
  const LabeledImages& eval_set = data_set ? *data_set : calib_set;
  if (!held_out.empty())
    check(eval_set.max_label() < fp.model.num_classes, "held-out images (", source,
          ") have class index ", eval_set.max_label(), " but ", model_name, " has only ",
          fp.model.num_classes, " outputs");

  std::printf(
      "brecq analyze: model=%s weights=%s W%dA%d weights per-%s, calibration %lld images from "
      "%s (activation ranges: first %lld), held-out %zu images from %s, seed %llu, threads %d\n",
      model_name.c_str(), weights.c_str(), p.w_bits, p.a_bits, p.per_channel ? "channel" : "tensor",
      static_cast<long long>(calib_images), calib_dir.c_str(), static_cast<long long>(p.act_images),
      held_out.size(), source.c_str(), static_cast<unsigned long long>(p.seed), num_threads());
  std::fflush(stdout);

  quant::LayerAnalyzer analyzer(fp.model, calib, p);
  if (!held_out.empty()) analyzer.measure_accuracy(eval_set, held_out, batch);
  quant::AnalysisReport& r = analyzer.report();
  r.eval_source = held_out.empty() ? "" : source;
  std::printf("\n%s", quant::analysis_table(r).c_str());
  if (r.eval_images) {
    std::printf("\nFP top-1 on the %lld held-out images: %.2f %%\n",
                static_cast<long long>(r.eval_images), r.fp_top1);
    std::printf(
        "Spearman rank correlation of the calibration score (-logit SQNR) with the measured "
        "top-1 drop: %.3f, with the changed predictions: %.3f (%zu layers)\n",
        r.spearman_score_drop, r.spearman_score_flips, r.layers.size());
  }
  if (!json.empty()) {
    std::ofstream f(json, std::ios::binary);
    f << quant::analysis_json(r);
    check(static_cast<bool>(f), "writing the analysis to '", json, "' failed");
    std::printf("wrote %s\n", json.c_str());
  }
  if (!out.empty()) {
    const quant::QuantSettings base{
        .w_bits = p.w_bits, .a_bits = p.a_bits, .first_last_bits = first_last};
    const quant::QuantSettings s = quant::suggested_settings(r, base, keep_worst);
    auto build = [&](const quant::QuantSettings& qs) {
      quant::QuantModel qm(fp.model, qs);
      if (qm.quantizes_activations()) {
        qm.init_activations(
            calib.front().narrow(0, 0, std::min(p.act_images, calib.front().dim(0))));
        quant::snap_biases(qm);
      }
      return qm;
    };
    const quant::QuantModel uniform = build(base), suggested = build(s);
    std::printf("\nround-to-nearest W%dA%d (first/last %d bits) on the held-out images:\n",
                p.w_bits, p.a_bits, first_last);
    std::printf("  uniform                 top-1 %6.2f %%\n",
                top1_on(driver::quantized_forward(uniform), eval_set, held_out, batch));
    std::string changed;
    for (const auto& [name, b] : s.layer_w_bits)
      if (!base.layer_w_bits.count(name)) changed += " " + name + ":W" + std::to_string(b);
    for (const auto& [name, b] : s.point_a_bits) changed += " " + name + ":A" + std::to_string(b);
    std::printf("  suggestions applied     top-1 %6.2f %%  (%s%s)\n",
                top1_on(driver::quantized_forward(suggested), eval_set, held_out, batch),
                keep_worst ? ("worst " + std::to_string(keep_worst) + " flagged: ").c_str() : "",
                changed.empty() ? "nothing to change" : changed.substr(1).c_str());
    quant::save_quantized(suggested, fp.options, out,
                          {{"settings", "brecq analyze suggestions, model=" + model_name +
                                            " w=" + std::to_string(p.w_bits) +
                                            " a=" + std::to_string(p.a_bits) + changed}});
    std::printf("wrote %s\n", out.c_str());
  }
  return 0;
}

[[maybe_unused]] const bool registered = cli::register_subcommand(
    {"analyze", "per-layer quantization analysis: SQNR, outliers, accuracy drops, diagnosis", run});

}  // namespace
