// What a new user runs first: BRECQ W2A4 (2-bit weights, 4-bit activations; first and last layer
// 8-bit) on a ResNet-18, against the FP model and round-to-nearest.
//
//   resnet18_w2a4
//     The project's Fashion-MNIST ResNet-18 (models/fashion_mnist_resnet18_w*.safetensors, trained
//     by train_fashion_mnist): 1,024 calibration images from the training set, the 10,000 test
//     images, fewer iterations than the paper so that it ends in minutes.
//   resnet18_w2a4 --weights resnet18.safetensors --calib IMAGENET/train --val IMAGENET/val
//     The paper's setting on a torchvision ResNet-18 (converted by tools/convert_torch.py) with
//     the official defaults: 20,000 AdaRound and 5,000 activation-step iterations per block.
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

#include "../tools/cli/args.hpp"
#include "brecq/driver/driver.hpp"
#include "brecq/io/idx.hpp"
#include "brecq/quant/compare.hpp"

namespace {

using namespace brecq;
namespace fs = std::filesystem;

constexpr int64_t demo_iters_w = 2000, demo_iters_a = 500;

/// models/fashion_mnist_resnet18_w*.safetensors next to the executable (build trees: up to two
/// levels above it) or in the source tree; the first by name if there are several.
std::string find_default_model(const char* argv0) {
  std::error_code ec;
  fs::path exe = fs::canonical("/proc/self/exe", ec);
  if (ec) exe = fs::absolute(argv0, ec);
  std::vector<fs::path> dirs{exe.parent_path() / "models", exe.parent_path() / "../models",
                             exe.parent_path() / "../../models"};
#ifdef BRECQ_SOURCE_DIR
  dirs.push_back(fs::path(BRECQ_SOURCE_DIR) / "models");
#endif
  std::string searched;
  for (const fs::path& d : dirs) {
    searched += "\n  " + d.lexically_normal().string();
    std::vector<std::string> found;
    for (const auto& e : fs::directory_iterator(d, ec)) {
      const std::string name = e.path().filename().string();
      if (name.starts_with("fashion_mnist_resnet18_w") && name.ends_with(".safetensors"))
        found.push_back(e.path().lexically_normal().string());
    }
    std::sort(found.begin(), found.end());
    if (!found.empty()) return found.front();
  }
  fail("found no fashion_mnist_resnet18_w*.safetensors in", searched,
       "\ntrain one with train_fashion_mnist or pass --model-file FILE");
}

void print_result(const std::string& what, const nn::Accuracy& a, bool top5) {
  std::printf("%-8s top-1 %6.2f %%", what.c_str(), a.top1_percent());
  if (top5) std::printf("  top-5 %6.2f %%", a.top5_percent());
  std::printf("  (%lld images, %.1f s)\n", static_cast<long long>(a.images), a.seconds);
  std::fflush(stdout);
}

int run(const std::vector<std::string>& argv, const char* argv0) {
  const quant::ReconstructionSettings paper;
  cli::Args args(
      "resnet18_w2a4",
      "BRECQ W2A4 on ResNet-18 against FP and round-to-nearest. Without --weights: the project's\n"
      "Fashion-MNIST model, in a short demo setting. With --weights, --calib and --val: a\n"
      "torchvision ResNet-18 on ImageNet folders (ImageFolder or a flat folder with labels.txt)\n"
      "with the paper's settings.",
      {{.name = "--model-file",
        .value_name = "FILE",
        .help = "Fashion-MNIST model (default: models/fashion_mnist_resnet18_w*.safetensors)"},
       {.name = "--data",
        .value_name = "DIR",
        .help = "Fashion-MNIST IDX files",
        .default_value = std::string(FashionMnist::default_dir)},
       {.name = "--weights", .value_name = "FILE", .help = "torchvision ResNet-18 (safetensors)"},
       {.name = "--calib",
        .value_name = "DIR",
        .help = "ImageNet calibration images (training set)"},
       {.name = "--val", .value_name = "DIR", .help = "ImageNet validation images"},
       {.name = "--iters-w",
        .value_name = "N",
        .help = "AdaRound iterations per block (default: " + std::to_string(demo_iters_w) +
                " demo, " + std::to_string(paper.iters_w) + " ImageNet)"},
       {.name = "--iters-a",
        .value_name = "N",
        .help = "activation-step iterations per block (default: " + std::to_string(demo_iters_a) +
                " demo, " + std::to_string(paper.iters_a) + " ImageNet)"},
       {.name = "--calib-size",
        .value_name = "N",
        .help = "calibration images",
        .default_value = "1024"},
       {.name = "--val-limit",
        .value_name = "N",
        .help = "evaluate the first N images only (0 = all)",
        .default_value = "0"},
       {.name = "--seed",
        .value_name = "N",
        .help = "random seed",
        .default_value = std::to_string(paper.seed)},
       {.name = "--out",
        .value_name = "FILE",
        .help = "save the BRECQ model (quantized model file, as `brecq quantize` writes)"},
       {.name = "--no-progress", .help = "no progress bars"}});
  if (!args.parse(argv)) return 0;
  const bool imagenet = args.has("--weights") || args.has("--calib") || args.has("--val");
  if (imagenet) {
    for (const char* f : {"--weights", "--calib", "--val"})
      if (!args.has(f))
        args.fail(std::string("the ImageNet setting needs --weights, --calib and --val; missing ") +
                  f);
    if (args.has("--model-file"))
      args.fail("flag --model-file is for the Fashion-MNIST demo, got it with --weights");
  }
  quant::CompareParams p;  // W2A4, official reconstruction defaults
  p.recon.iters_w = args.has("--iters-w") ? args.get_int("--iters-w", 0)
                    : imagenet            ? paper.iters_w
                                          : demo_iters_w;
  p.recon.iters_a = args.has("--iters-a") ? args.get_int("--iters-a", 0)
                    : imagenet            ? paper.iters_a
                                          : demo_iters_a;
  p.recon.seed = static_cast<uint64_t>(args.get_int("--seed", 0));
  if (args.has("--no-progress")) p.recon.progress = nullptr;
  p.eval.limit = args.get_int("--val-limit", 0);
  p.on_result = [&](const std::string& what, const nn::Accuracy& a) {
    print_result(what, a, imagenet);
  };
  const int64_t calib_size = args.get_int("--calib-size", 1);
  quant::SaveQuantizedParams save;  // what --out records besides the model
  if (args.has("--out") && !fs::is_directory(fs::absolute(args.get("--out")).parent_path()))
    args.fail("flag --out expects a file in an existing folder, got '" + args.get("--out") + "'");

  std::printf(
      "resnet18_w2a4: BRECQ W%dA%d (first and last layer %d-bit), %s reconstruction,"
      " %lld AdaRound + %lld activation-step iterations per block, %lld calibration images,"
      " seed %llu, %d threads\n",
      p.quant.w_bits, p.quant.a_bits, p.quant.first_last_bits, p.granularity.c_str(),
      static_cast<long long>(p.recon.iters_w), static_cast<long long>(p.recon.iters_a),
      static_cast<long long>(calib_size), static_cast<unsigned long long>(p.recon.seed),
      num_threads());
  quant::CompareResult r = [&] {
    if (imagenet) {
      const std::string weights = args.get_file("--weights");
      const nn::Model model = driver::load_model("resnet18", weights).model;
      const LabeledImages calib(args.get_dir("--calib"), ImagePreprocess::imagenet());
      const LabeledImages val(args.get_dir("--val"), ImagePreprocess::imagenet());
      if (calib_size > calib.size())
        args.fail("flag --calib-size expects at most the " + std::to_string(calib.size()) +
                  " images of --calib, got " + std::to_string(calib_size));
      check(val.max_label() < model.num_classes, "flag --val: class index ", val.max_label(),
            " but the model has ", model.num_classes, " outputs");
      std::printf("  model %s; calibration %s (%s); validation %s (%s, %lld images)\n",
                  weights.c_str(), args.get("--calib").c_str(), calib.layout().c_str(),
                  args.get("--val").c_str(), val.layout().c_str(),
                  static_cast<long long>(val.size()));
      std::fflush(stdout);
      return quant::compare_brecq(model, calibration_subset(calib, calib_size, p.recon.seed).images,
                                  val, p);
    }
    const std::string model_file =
        args.has("--model-file") ? args.get_file("--model-file") : find_default_model(argv0);
    // resnet18_cifar with the width, input channels and classes of the file
    const nn::Model model = driver::load_model("resnet18_cifar", model_file).model;
    const SafetensorsFile meta(model_file);
    const auto stat = [&](const std::string& key, float fallback) {
      auto it = meta.metadata().find(key);
      if (it == meta.metadata().end()) return fallback;
      try {
        return std::stof(it->second);
      } catch (const std::exception&) {
        fail("model file '", model_file, "': metadata ", key, " must be a number, got '",
             it->second, "'");
      }
    };
    const MnistParams norm{.normalize = true,
                           .mean = stat("normalize_mean", MnistParams{}.mean),
                           .std = stat("normalize_std", MnistParams{}.std)};
    save.options = {.num_classes = model.num_classes,
                    .in_channels = model.in_channels,
                    .base_width = model.blocks[0].layers[0].out_channels()};
    save.preprocessing =
        quant::Preprocessing{.name = "fashion_mnist", .mean = {norm.mean}, .std = {norm.std}};
    const FashionMnist train = FashionMnist::load(MnistSplit::train, norm, args.get_dir("--data"));
    const FashionMnist test = FashionMnist::load(MnistSplit::test, norm, args.get_dir("--data"));
    if (calib_size > train.size())
      args.fail("flag --calib-size expects at most " + std::to_string(train.size()) + ", got " +
                std::to_string(calib_size));
    std::printf(
        "  model %s (base width %lld); Fashion-MNIST %s: calibration from the training set,"
        " %lld test images\n",
        model_file.c_str(), static_cast<long long>(model.blocks[0].layers[0].out_channels()),
        args.get("--data").c_str(), static_cast<long long>(test.size()));
    if (!args.has("--iters-w") && !args.has("--iters-a"))
      std::printf(
          "  demo setting: fewer iterations than the paper; its setting is"
          " --iters-w %lld --iters-a %lld\n",
          static_cast<long long>(paper.iters_w), static_cast<long long>(paper.iters_a));
    std::fflush(stdout);
    return quant::compare_brecq(model, calibration_subset(train, calib_size, p.recon.seed).images,
                                test, p);
  }();
  std::printf("\nW%dA%d top-1: FP %.2f %%, round-to-nearest %.2f %%, BRECQ %.2f %%\n",
              p.quant.w_bits, p.quant.a_bits, r.fp.top1_percent(), r.nearest.top1_percent(),
              r.brecq.top1_percent());
  if (imagenet)
    std::printf("W%dA%d top-5: FP %.2f %%, round-to-nearest %.2f %%, BRECQ %.2f %%\n",
                p.quant.w_bits, p.quant.a_bits, r.fp.top5_percent(), r.nearest.top5_percent(),
                r.brecq.top5_percent());
  if (args.has("--out")) {
    quant::save_quantized(r.quantized, args.get("--out"), save);
    std::printf("saved %s\n", args.get("--out").c_str());
  }
  std::printf("time %s (BRECQ weight pass %.0f s, activation pass %.0f s)\n",
              quant::format_time(r.seconds).c_str(), r.report.weight_seconds, r.report.act_seconds);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return brecq::cli::run_program(
      "resnet18_w2a4", argc, argv,
      [&](const std::vector<std::string>& a) { return run(a, argv[0]); });
}
