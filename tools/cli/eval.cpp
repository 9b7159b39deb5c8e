// brecq eval: top-1 / top-5 accuracy of a model with weights from a safetensors file on a folder
// of labelled images.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "args.hpp"
#include "brecq/driver/driver.hpp"
#include "brecq/quant/serialize.hpp"
#include "quant_flags.hpp"

namespace {

using namespace brecq;

int run(const std::vector<std::string>& argv) {
  cli::Args args(
      "eval",
      "Top-1 and top-5 accuracy of a model on labelled images. DIR is an ImageFolder\n"
      "(DIR/<class>/<image>, labels = sorted class folders) or a flat folder with a labels.txt\n"
      "of '<class index> <file>' lines. Models: " +
          nn::model_names_list() + ".",
      {{.name = "--model", .value_name = "MODEL", .help = "architecture (with --weights)"},
       {.name = "--weights",
        .value_name = "FILE",
        .help = "safetensors file with the model's state dict"},
       {.name = "--quantized",
        .value_name = "FILE",
        .help = "a quantized model written by `brecq quantize` (instead of --model/--weights)"},
       {.name = "--data", .value_name = "DIR", .help = "image folder", .required = true},
       {.name = "--batch",
        .value_name = "N",
        .help = "images per forward pass",
        .default_value = "100"},
       {.name = "--limit",
        .value_name = "N",
        .help = "evaluate only the first N images (0 = all)",
        .default_value = "0"},
       cli::preprocess_flag(),
       {.name = "--num-classes",
        .value_name = "N",
        .help = "classifier outputs (default: read from the weights file)"},
       {.name = "--json", .help = "print one JSON object instead of text"}});
  if (!args.parse(argv)) return 0;

  const bool quantized = args.has("--quantized");
  if (quantized && (args.has("--model") || args.has("--weights") || args.has("--num-classes")))
    args.fail("flag --quantized replaces --model, --weights and --num-classes; got both");
  if (!quantized && !(args.has("--model") && args.has("--weights")))
    args.fail("expected --model MODEL and --weights FILE, or --quantized FILE");
  const std::string weights = args.get_file(quantized ? "--quantized" : "--weights");
  const std::string data = args.get_dir("--data");
  const int64_t batch = args.get_int("--batch", 1);
  const int64_t limit = args.get_int("--limit", 0);
  std::optional<quant::QuantModel> qm;
  nn::Model model;
  std::string method;  // what made a quantized file, as it records it (metadata "method")
  if (quantized) {
    qm.emplace(quant::load_quantized(weights));
    model = qm->model;
    const SafetensorsFile file(weights);
    if (auto it = file.metadata().find("method"); it != file.metadata().end()) method = it->second;
  } else {
    model = driver::load_model(args.get_choice("--model", nn::model_names()), weights,
                               args.has("--num-classes") ? args.get_int("--num-classes", 1) : 0)
                .model;
  }
  const std::string model_name = model.arch;
  const int64_t num_classes = model.num_classes;
  const std::string preprocess = driver::preprocess_name(
      args.get_choice("--preprocess", {"imagenet", "cifar", "auto"}), model_name);
  const ImagePreprocess pre = driver::preprocess_for(preprocess, model_name);

  // The forward passes alone, timed apart from decoding.
  double forward_seconds = 0;
  const nn::ForwardFn forward = [&](const Tensor& x) {
    const auto t0 = std::chrono::steady_clock::now();
    Tensor y = qm ? qm->forward(x) : model.forward(x);
    forward_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return y;
  };
  const driver::EvalParams eval_params{.batch = batch, .limit = limit};
  const LabeledImages ds(data, pre);
  check(ds.max_label() < num_classes, "--data folder '", data, "' has class index ", ds.max_label(),
        " but ", model_name, " has only ", num_classes, " outputs");
  const std::string layout = ds.layout();
  const nn::Accuracy acc = driver::evaluate(forward, ds, eval_params);  // under NoGrad
  check(acc.images > 0, "--data folder '", data, "' gave no images");

  const double top1 = acc.top1_percent(), top5 = acc.top5_percent();
  if (args.has("--json")) {
    std::printf(
        "{\"model\": %s, \"weights\": %s, \"data\": %s, \"preprocess\": %s, \"num_classes\": %lld, "
        "\"images\": %lld, \"top1\": %.2f, \"top5\": %.2f, \"top1_correct\": %lld, "
        "\"top5_correct\": %lld, \"seconds\": %.3f, \"forward_seconds\": %.3f%s}\n",
        cli::json_quote(model_name).c_str(), cli::json_quote(weights).c_str(),
        cli::json_quote(data).c_str(), cli::json_quote(preprocess).c_str(),
        static_cast<long long>(num_classes), static_cast<long long>(acc.images), top1, top5,
        static_cast<long long>(acc.top1), static_cast<long long>(acc.top5), acc.seconds,
        forward_seconds,
        method.empty() ? "" : (", \"method\": " + cli::json_quote(method)).c_str());
  } else {
    std::printf("model       %s (%lld classes), weights %s\n", model_name.c_str(),
                static_cast<long long>(num_classes), weights.c_str());
    if (!method.empty()) std::printf("method      %s\n", method.c_str());
    std::printf("data        %s (%s, preprocess %s)\n", data.c_str(), layout.c_str(),
                preprocess.c_str());
    std::printf("images      %lld\n", static_cast<long long>(acc.images));
    std::printf("top-1       %.2f %% (%lld correct)\n", top1, static_cast<long long>(acc.top1));
    std::printf("top-5       %.2f %% (%lld correct)\n", top5, static_cast<long long>(acc.top5));
    std::printf("time        %.2f s (%.0f images/s; forward passes %.2f s)\n", acc.seconds,
                static_cast<double>(acc.images) / acc.seconds, forward_seconds);
  }
  return 0;
}

[[maybe_unused]] const bool registered = cli::register_subcommand(
    {"eval", "top-1 / top-5 accuracy of an FP or quantized model on an image folder", run});

}  // namespace
