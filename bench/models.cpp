// Whole-model times: forward (inference: BatchNorm with running statistics, no tape) and
// forward+backward (training step without the optimizer: BatchNorm with batch statistics,
// cross-entropy, gradients for every parameter) of ResNet-18 and MobileNetV2 (224x224, batch 8)
// and CIFAR ResNet-20 (32x32, batch 128), with random weights. Median of 7 samples after a
// warm-up. Writes a Markdown table (--out, default results/models.md) and a JSON file beside it,
// which bench/side_by_side.py reads to run the same models in PyTorch.
// Usage: models [--out results/models.md]
#include "brecq/nn/models.hpp"

#include <sstream>
#include <string>
#include <vector>

#include "brecq/autograd/tape.hpp"
#include "brecq/ops/loss.hpp"
#include "common.hpp"

using namespace brecq;

namespace {

struct Case {
  std::string model;
  int64_t batch, hw;
};

/// Multiply-adds x 2 of the convolutions and linear layers in one forward pass.
double forward_gflop(const nn::Model& m, const Tensor& x) {
  double flop = 0;
  nn::ForwardHooks h;
  h.layer_output = [&](const nn::Layer& l, const Tensor&, const Tensor& out) {
    const double per_output =
        l.kind == nn::LayerKind::linear
            ? static_cast<double>(l.weight.dim(1))
            : static_cast<double>(l.weight.dim(1) * l.weight.dim(2) * l.weight.dim(3));
    flop += 2.0 * static_cast<double>(out.numel()) * per_output;
    return out;
  };
  NoGrad no_grad;
  m.forward(x, h);
  return flop * 1e-9;
}

}  // namespace

int main(int argc, char** argv) try {
  using namespace brecq::bench;
  const auto f = parse_flags(
      argc, argv, "models",
      "Whole-model forward and forward+backward times (and a JSON file beside the table).",
      {{.name = "--out",
        .value_name = "FILE",
        .help = "table",
        .default_value = "results/models.md"}});
  const std::vector<Case> cases = {
      {"resnet18", 8, 224}, {"mobilenet_v2", 8, 224}, {"resnet20_cifar", 128, 32}};
  const double peak = measure_peak_gflops();
  std::ostringstream os, js;
  os << "# Whole-model forward and forward+backward times\n\nThreads: " << num_threads()
     << ". FP32 peak (threads x one core's FMA-loop rate): " << fmt("%.1f", peak)
     << " GFLOP/s. Median of 7 samples after a warm-up; forward = inference (BatchNorm running "
        "statistics, no "
        "tape), forward+backward = BatchNorm batch statistics, cross-entropy, gradients of all "
        "parameters "
        "(no optimizer step). GFLOP/s count the convolutions and linear layers only (backward = 2x "
        "forward).\n\n"
     << "| model | input | GFLOP fwd | fwd ms | fwd GFLOP/s | fwd % peak | fwd+bwd ms | fwd+bwd "
        "GFLOP/s |\n"
     << "|---|---|---:|---:|---:|---:|---:|---:|\n";
  js << "{\"threads\": " << num_threads() << ", \"peak_gflops\": " << fmt("%.1f", peak)
     << ", \"models\": [\n";
  std::cout << os.str() << std::flush;
  for (const Case& c : cases) {
    nn::Model m = nn::make_model(c.model);
    Rng rng(1);
    nn::init_kaiming(m, rng);
    std::vector<Tensor> params = m.parameters();
    for (Tensor& p : params) p.set_requires_grad(true);
    Tensor x = Tensor::zeros(Shape{c.batch, 3, c.hw, c.hw});
    for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = rng.uniform(-1.0f, 1.0f);
    std::vector<int> labels;
    for (int64_t i = 0; i < c.batch; ++i) labels.push_back(static_cast<int>(i % m.num_classes));
    const double gflop = forward_gflop(m, x);

    const double t_fwd = median_time([&] {
      NoGrad no_grad;
      (void)m.forward(x);
    });
    nn::ForwardHooks train;
    train.training = true;
    const double t_train = median_time([&] {
      backward(cross_entropy(m.forward(x, train), labels));
      for (Tensor& p : params) p.zero_grad();
    });
    std::ostringstream row;
    row << "| " << c.model << " | " << c.batch << "x3x" << c.hw << "x" << c.hw << " | "
        << fmt("%.3f", gflop) << " | " << fmt("%.2f", t_fwd * 1e3) << " | "
        << fmt("%.1f", gflop / t_fwd) << " | " << fmt("%.0f%%", 100 * gflop / t_fwd / peak) << " | "
        << fmt("%.2f", t_train * 1e3) << " | " << fmt("%.1f", 3 * gflop / t_train) << " |\n";
    std::cout << row.str() << std::flush;
    os << row.str();
    js << (&c == &cases.front() ? "" : ",\n") << "  {\"model\": \"" << c.model
       << "\", \"batch\": " << c.batch << ", \"hw\": " << c.hw
       << ", \"num_classes\": " << m.num_classes << ", \"gflop_forward\": " << fmt("%.4f", gflop)
       << ", \"forward_ms\": " << fmt("%.3f", t_fwd * 1e3)
       << ", \"forward_backward_ms\": " << fmt("%.3f", t_train * 1e3) << "}";
  }
  js << "\n]}\n";
  const std::string out = f.get("--out");
  emit(os.str(), out);
  emit(js.str(), std::filesystem::path(out).replace_extension(".json").string());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "models: %s\n", e.what());
  return 1;
}
