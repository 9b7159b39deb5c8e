// Helpers for checking ONNX exports (tools/ort/): deterministic weights for models without
// trained ones, and the timing of brecq's own FP32 forward pass for the side-by-side benchmark.
//
//   brecq_onnx_tool weights --model resnet18 --seed 7 --out r18.safetensors
//   brecq_onnx_tool bench --model resnet18 --weights r18.safetensors --batch 8 --size 224
//       --rounds 5
//   brecq_onnx_tool bench --quantized r18_w8a8.safetensors --batch 8 --size 224 --rounds 5
//       (the integer runtime, runtime::Executor, on the same batch)
//
// bench prints one JSON line: the fastest and median seconds per batch over the rounds (one
// untimed warm-up pass first).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "../cli/args.hpp"
#include "brecq/nn/fold_bn.hpp"
#include "brecq/nn/load.hpp"
#include "brecq/nn/models.hpp"
#include "brecq/runtime/executor.hpp"
#include "brecq/runtime/load.hpp"
#include "brecq/tensor/parallel.hpp"

namespace {

using namespace brecq;

int weights(const std::vector<std::string>& argv) {
  cli::Args args(
      "weights",
      "Writes deterministic weights (nn::init_deterministic, as the model tests) for "
      "a model.\nModels: " +
          nn::model_names_list() + ".",
      {{.name = "--model", .value_name = "MODEL", .help = "architecture", .required = true},
       {.name = "--seed", .value_name = "N", .help = "seed", .default_value = "7"},
       {.name = "--out", .value_name = "FILE", .help = "safetensors file", .required = true}});
  if (!args.parse(argv)) return 0;
  nn::Model m = nn::make_model(args.get_choice("--model", nn::model_names()));
  nn::init_deterministic(m, static_cast<uint64_t>(args.get_int("--seed", 0)));
  nn::save_weights(m, args.get("--out"));
  std::printf("wrote %s (%s, seed %lld)\n", args.get("--out").c_str(), m.arch.c_str(),
              static_cast<long long>(args.get_int("--seed", 0)));
  return 0;
}

int bench(const std::vector<std::string>& argv) {
  cli::Args args(
      "bench",
      "Times brecq's FP32 forward pass (BatchNorm folded) on a random batch, or with\n"
      "--quantized the integer runtime on a version-2 quantized file.",
      {{.name = "--model", .value_name = "MODEL", .help = "architecture"},
       {.name = "--weights", .value_name = "FILE", .help = "FP weights"},
       {.name = "--quantized", .value_name = "FILE", .help = "quantized model (integer runtime)"},
       {.name = "--batch", .value_name = "N", .help = "batch", .default_value = "8"},
       {.name = "--size", .value_name = "N", .help = "height = width", .default_value = "224"},
       {.name = "--rounds", .value_name = "N", .help = "timed passes", .default_value = "5"}});
  if (!args.parse(argv)) return 0;
  const int64_t n = args.get_int("--batch", 1), size = args.get_int("--size", 1),
                rounds = args.get_int("--rounds", 1, 1000);
  auto report = [&](const char* runtime, const std::string& arch, std::vector<double> t) {
    std::sort(t.begin(), t.end());
    std::printf(
        "{\"runtime\": \"%s\", \"model\": \"%s\", \"batch\": %lld, \"size\": %lld, "
        "\"threads\": %d, \"best_s\": %.6f, \"median_s\": %.6f}\n",
        runtime, arch.c_str(), static_cast<long long>(n), static_cast<long long>(size),
        num_threads(), t[0], t[t.size() / 2]);
  };
  auto time = [&](auto&& pass) {
    pass();  // warm-up
    std::vector<double> t;
    for (int64_t r = 0; r < rounds; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      pass();
      t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return t;
  };
  if (args.has("--quantized")) {
    if (args.has("--model") || args.has("--weights"))
      args.fail("flag --quantized times the integer runtime: give it without --model/--weights");
    const runtime::Graph g = runtime::load_graph(args.get_file("--quantized"));
    runtime::Executor ex(g,
                         {.max_batch = n, .height = size, .width = size, .threads = num_threads()});
    std::vector<uint8_t> in(static_cast<size_t>(n * g.options.in_channels * size * size));
    Rng rng(1);
    for (uint8_t& v : in) v = static_cast<uint8_t>(rng.below(256));
    std::vector<float> logits(static_cast<size_t>(n * g.options.num_classes));
    report("brecq int", g.options.arch, time([&] { ex.run(in.data(), n, logits.data()); }));
    return 0;
  }
  if (!args.has("--model") || !args.has("--weights"))
    args.fail("flag bench needs --model and --weights (FP32), or --quantized (integer runtime)");
  nn::Model m = nn::make_model(args.get_choice("--model", nn::model_names()));
  nn::load_weights(m, args.get_file("--weights"));
  nn::fold_batchnorm(m);
  Rng rng(1);
  const Tensor x = Tensor::uniform(Shape{n, m.in_channels, size, size}, rng, -2.0f, 2.0f);
  NoGrad ng;
  report("brecq fp32", m.arch, time([&] { m.forward(x); }));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> a(argv + 1, argv + argc);
  const std::string usage = "usage: brecq_onnx_tool weights|bench [flags] (--help for flags)\n";
  if (a.empty() || (a[0] != "weights" && a[0] != "bench")) {
    std::fputs(usage.c_str(), stderr);
    return 2;
  }
  try {
    const std::vector<std::string> rest(a.begin() + 1, a.end());
    return a[0] == "weights" ? weights(rest) : bench(rest);
  } catch (const cli::UsageError& e) {
    std::fprintf(stderr, "brecq_onnx_tool %s: error: %s\n\n%s", a[0].c_str(), e.what(),
                 e.usage().c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "brecq_onnx_tool %s: error: %s\n", a[0].c_str(), e.what());
    return 1;
  }
}
