// brecq infer: runs a quantized model (format version 2) with the integer runtime on labelled
// images and prints top-1 / top-5 and images per second; --compare also runs the float
// simulation (what `brecq eval --quantized` evaluates) on the same images and reports how far
// the two agree.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include "args.hpp"
#include "brecq/io/dataset.hpp"
#include "brecq/io/idx.hpp"
#include "brecq/quant/serialize.hpp"
#include "brecq/runtime/executor.hpp"
#include "brecq/runtime/load.hpp"

namespace {

using namespace brecq;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

/// Rank of the label's logit among the row's (0 = top-1); ties count against the label.
int64_t label_rank(const float* row, int64_t classes, int label) {
  int64_t above = 0;
  for (int64_t c = 0; c < classes; ++c)
    if (c != label && row[c] >= row[label]) ++above;
  return above;
}
int64_t argmax(const float* row, int64_t classes) {
  return std::max_element(row, row + classes) - row;
}

/// The preprocessing the file records, for RGB image folders.
ImagePreprocess image_preprocess(const runtime::Graph& g, const std::string& file) {
  const runtime::ModelOptions& o = g.options;
  check(o.in_channels == 3, "quantized model '", file, "' takes ", o.in_channels,
        "-channel images; image folders give RGB images (use --mnist DIR for MNIST-format data)");
  check(o.mean.size() == 3 && o.std.size() == 3, "quantized model '", file,
        "' records no image preprocessing (mean/std); requantize it with this brecq");
  return {.resize_shorter = o.resize_shorter,
          .center_crop = o.center_crop,
          .mean = {o.mean[0], o.mean[1], o.mean[2]},
          .std = {o.std[0], o.std[1], o.std[2]}};
}

/// How far the integer runtime is from the simulation on the same images.
struct Agreement {
  int64_t images = 0, same_prediction = 0, sim_top1 = 0;
  double max_diff = 0, sum_diff = 0;  ///< |logit difference| in units of s_in * s_w[class]
  int64_t logits = 0;
};

struct Totals {
  int64_t images = 0, top1 = 0, top5 = 0;
  double run_seconds = 0;  ///< input quantization + integer forward passes
};

template <LabeledDataset D>
int infer(const cli::Args& args, const D& ds, const std::string& data_name,
          const std::string& layout, const runtime::Graph& g, const std::string& model_file) {
  const int64_t batch = args.get_int("--batch", 1, 4096);
  const int threads = static_cast<int>(args.get_int("--threads", 1, 1024));
  const int64_t limit = args.get_int("--limit", 0);
  const int64_t n = limit > 0 ? std::min<int64_t>(limit, ds.size()) : ds.size();
  check(n > 0, "--data '", data_name, "' holds no images");
  const int64_t classes = g.options.num_classes;

  std::optional<quant::QuantModel> sim;
  if (args.has("--compare")) sim.emplace(quant::load_quantized(model_file));
  // Unit of the logit difference: one level of the head's input times the class's weight scale.
  const runtime::Block& head = g.blocks.back();
  const int head_in = g.blocks[g.blocks.size() - 2].out_point;
  const double s_in = g.points.at(static_cast<size_t>(head_in)).scale;
  const std::vector<float>& s_w = head.layers.back().weight_scale;

  std::optional<runtime::Executor> ex;
  std::vector<uint8_t> levels;
  std::vector<float> logits, all_logits, all_sim;
  std::vector<int> all_labels;
  Totals t;
  Agreement a;
  int64_t h = 0, w = 0, c = 0;
  const auto t_start = Clock::now();
  for (int64_t b0 = 0; b0 < n; b0 += batch) {
    const int64_t nb = std::min(batch, n - b0);
    std::vector<int64_t> idx(static_cast<size_t>(nb));
    std::iota(idx.begin(), idx.end(), b0);
    const Batch bt = gather(ds, idx);  // [nb, C, H, W] float, preprocessed
    if (!ex) {
      c = bt.images.dim(1), h = bt.images.dim(2), w = bt.images.dim(3);
      check(c == g.options.in_channels, "--data '", data_name, "' gives ", c,
            "-channel images, the model takes ", g.options.in_channels);
      ex.emplace(g, runtime::ExecutorOptions{
                        .max_batch = batch, .height = h, .width = w, .threads = threads});
      levels.resize(static_cast<size_t>(batch * c * h * w));
      logits.resize(static_cast<size_t>(batch * classes));
    }
    check(bt.images.dim(1) == c && bt.images.dim(2) == h && bt.images.dim(3) == w, "--data '",
          data_name, "': image ", b0, " is ", bt.images.dim(2), "x", bt.images.dim(3),
          ", the first was ", h, "x", w, " (the runtime's buffers are sized for one input size)");
    const auto t0 = Clock::now();
    ex->quantize_input(bt.images.data<float>(), nb, levels.data());
    ex->run(levels.data(), nb, logits.data());
    t.run_seconds += seconds_since(t0);
    for (int64_t i = 0; i < nb; ++i) {
      const float* row = logits.data() + i * classes;
      const int label = bt.labels[static_cast<size_t>(i)];
      check(label >= 0 && label < classes, "--data '", data_name, "': label ", label,
            " but the model has ", classes, " classes");
      const int64_t r = label_rank(row, classes, label);
      t.top1 += r == 0;
      t.top5 += r < 5;
    }
    t.images += nb;
    if (args.has("--logits")) {
      all_logits.insert(all_logits.end(), logits.begin(), logits.begin() + nb * classes);
      all_labels.insert(all_labels.end(), bt.labels.begin(), bt.labels.end());
    }
    if (sim) {
      NoGrad ng;
      const Tensor y = sim->forward(bt.images);  // [nb, classes]
      for (int64_t i = 0; i < nb; ++i) {
        const float* rs = y.data<float>() + i * classes;
        const float* rr = logits.data() + i * classes;
        a.same_prediction += argmax(rs, classes) == argmax(rr, classes);
        a.sim_top1 += label_rank(rs, classes, bt.labels[static_cast<size_t>(i)]) == 0;
        for (int64_t k = 0; k < classes; ++k) {
          const double d =
              std::abs(static_cast<double>(rs[k]) - rr[k]) / (s_in * s_w[static_cast<size_t>(k)]);
          a.max_diff = std::max(a.max_diff, d);
          a.sum_diff += d;
        }
      }
      a.images += nb;
      a.logits += nb * classes;
      if (args.has("--logits"))
        all_sim.insert(all_sim.end(), y.data<float>(), y.data<float>() + nb * classes);
    }
  }
  const double total_seconds = seconds_since(t_start);

  if (args.has("--logits")) {
    std::vector<std::pair<std::string, Tensor>> out{
        {"logits", Tensor::from_data<float>(Shape{t.images, classes}, all_logits.data())},
        {"labels", Tensor::from_data<int32_t>(Shape{t.images}, all_labels.data())}};
    if (sim)
      out.emplace_back("sim_logits",
                       Tensor::from_data<float>(Shape{t.images, classes}, all_sim.data()));
    save_safetensors(args.get("--logits"), out,
                     {.metadata = {{"model", model_file}, {"data", data_name}}});
  }

  const auto pct = [](int64_t k, int64_t of) {
    return of ? 100.0 * static_cast<double>(k) / static_cast<double>(of) : 0.0;
  };
  const double ips = static_cast<double>(t.images) / t.run_seconds;
  const char* isa = kernels::qint::isa_name(ex->isa());
  if (args.has("--json")) {
    std::printf(
        "{\"model\": %s, \"arch\": %s, \"data\": %s, \"images\": %lld, \"top1\": %.2f, "
        "\"top5\": %.2f, \"top1_correct\": %lld, \"top5_correct\": %lld, \"threads\": %d, "
        "\"batch\": %lld, \"isa\": \"%s\", \"run_seconds\": %.3f, \"seconds\": %.3f, "
        "\"images_per_second\": %.1f",
        cli::json_quote(model_file).c_str(), cli::json_quote(g.options.arch).c_str(),
        cli::json_quote(data_name).c_str(), static_cast<long long>(t.images), pct(t.top1, t.images),
        pct(t.top5, t.images), static_cast<long long>(t.top1), static_cast<long long>(t.top5),
        threads, static_cast<long long>(batch), isa, t.run_seconds, total_seconds, ips);
    if (sim)
      std::printf(
          ", \"sim_top1\": %.2f, \"identical_predictions\": %.2f, \"identical_count\": %lld, "
          "\"logit_diff_max\": %.4f, \"logit_diff_mean\": %.4f",
          pct(a.sim_top1, a.images), pct(a.same_prediction, a.images),
          static_cast<long long>(a.same_prediction), a.max_diff,
          a.sum_diff / static_cast<double>(a.logits));
    std::printf("}\n");
    return 0;
  }
  std::printf("model       %s (%s, %lld classes, integer runtime, %s)\n", model_file.c_str(),
              g.options.arch.c_str(), static_cast<long long>(classes), isa);
  std::printf("data        %s (%s, %lldx%lld)\n", data_name.c_str(), layout.c_str(),
              static_cast<long long>(h), static_cast<long long>(w));
  std::printf("images      %lld\n", static_cast<long long>(t.images));
  std::printf("top-1       %.2f %% (%lld correct)\n", pct(t.top1, t.images),
              static_cast<long long>(t.top1));
  std::printf("top-5       %.2f %% (%lld correct)\n", pct(t.top5, t.images),
              static_cast<long long>(t.top5));
  std::printf(
      "speed       %.0f images/s (%d threads, batch %lld; integer passes %.2f s of %.2f s)\n", ips,
      threads, static_cast<long long>(batch), t.run_seconds, total_seconds);
  if (sim) {
    std::printf("simulation  top-1 %.2f %% (runtime - simulation: %+.2f points)\n",
                pct(a.sim_top1, a.images), pct(t.top1, t.images) - pct(a.sim_top1, a.images));
    std::printf("identical   %.2f %% of predictions (%lld of %lld)\n",
                pct(a.same_prediction, a.images), static_cast<long long>(a.same_prediction),
                static_cast<long long>(a.images));
    std::printf(
        "logit diff  max %.4f, mean %.4f (|runtime - simulation| in units of the head input's "
        "scale x the class's weight scale)\n",
        a.max_diff, a.sum_diff / static_cast<double>(a.logits));
  }
  return 0;
}

int run(const std::vector<std::string>& argv) {
  cli::Args args(
      "infer",
      "Top-1 and top-5 accuracy and speed of a quantized model (written by `brecq quantize`,\n"
      "format " +
          std::string(quant::kQuantizedFormat) +
          ") run by the integer runtime. DIR as for `brecq eval`; images are\n"
          "prepared as the file records and enter through the model's 8-bit input quantizer.\n"
          "--compare also runs the float simulation (`brecq eval --quantized`) on the same images.",
      {{.name = "--model", .value_name = "FILE", .help = "quantized model", .required = true},
       {.name = "--data", .value_name = "DIR", .help = "image folder"},
       {.name = "--mnist",
        .value_name = "DIR",
        .help =
            "MNIST-format IDX files (t10k-images/labels), e.g. Fashion-MNIST, instead of --data"},
       {.name = "--batch", .value_name = "N", .help = "images per pass", .default_value = "64"},
       {.name = "--threads",
        .value_name = "N",
        .help = "threads of the integer runtime",
        .default_value = std::to_string(num_threads())},
       {.name = "--limit",
        .value_name = "N",
        .help = "only the first N images (0 = all)",
        .default_value = "0"},
       {.name = "--compare", .help = "also run the float simulation and report the agreement"},
       {.name = "--logits",
        .value_name = "OUT",
        .help = "write the logits (and labels; with --compare the simulation's) as safetensors"},
       {.name = "--json", .help = "print one JSON object instead of text"}});
  if (!args.parse(argv)) return 0;
  if (args.has("--data") == args.has("--mnist"))
    args.fail("expected one of --data DIR and --mnist DIR");
  const std::string model = args.get_file("--model");
  if (args.has("--logits")) args.get_output("--logits");
  const runtime::Graph g = runtime::load_graph(model);
  if (args.has("--data")) {
    const std::string dir = args.get_dir("--data");
    const LabeledImages ds(dir, image_preprocess(g, model));
    return infer(args, ds, dir, ds.layout(), g, model);
  }
  const std::string dir = args.get_dir("--mnist");
  check(g.options.in_channels == 1 && g.options.mean.size() == 1, "quantized model '", model,
        "' takes ", g.options.in_channels, "-channel images",
        g.options.mean.empty() ? " and records no preprocessing" : "",
        "; --mnist gives 1-channel images normalised with the file's mean/std");
  const FashionMnist ds = FashionMnist::load(
      MnistSplit::test, {.normalize = true, .mean = g.options.mean[0], .std = g.options.std[0]},
      dir);
  return infer(args, ds, dir, "MNIST IDX test split", g, model);
}

[[maybe_unused]] const bool registered = cli::register_subcommand(
    {"infer", "top-1 / top-5 and speed of a quantized model on the integer runtime", run});

}  // namespace
