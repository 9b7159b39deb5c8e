// The integer runtime against the float simulation on models BRECQ quantized (a
// few iterations): random-weight CIFAR ResNet-20 (option-A shortcuts),
// ResNet-18 (7x7 stem, max pool, projections), ResNet-50 (bottlenecks) and
// MobileNetV2 (depthwise, inverted residuals, ReLU6), at small widths. Each is
// saved as a version-2 file; runtime::load_graph reads it (no registry) and the
// executor runs it; quant::load_quantized reads the same file for the
// simulation.
//
// Bounds. The runtime's integer accumulators and 31-bit multipliers are exact
// to ~1e-9 of a level, so its logits equal a float64 interpreter of the graph
// (reference.hpp) to float32 output rounding: 1e-6 of the largest logit is
// checked. The simulation computes in float32: it gives the same levels unless
// a pre-rounding value x / s lies within its float error (K terms of relative
// error 2^-24, more through Winograd) of a level boundary. With 4-bit
// activations no level flipped on these seeded inputs and the logits agree to
// float32 accumulation error, bounded by 2e-5 of the largest logit (a flipped
// level at the head's input alone moves a logit by s_in * s_w * |w - zw| / HW,
// several 1e-3 of it). With 8-bit activations (16 times finer grids) the random
// bottleneck ResNet-50, whose activations grow to 1e3, flips a few levels (1.6
// % of the largest logit measured, bound 5 %); the predictions must still be
// identical.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "../runtime/reference.hpp"
#include "brecq/quant/brecq.hpp"
#include "brecq/runtime/executor.hpp"
#include "brecq/runtime/load.hpp"
#include "tiny_model.hpp"

using namespace brecq;

// Named (not anonymous): the test folder may be compiled as one translation unit.
namespace runtime_agreement_test {

struct Case {
  std::string name;
  nn::Model model;
  int64_t size = 16;  ///< input height = width
  int w_bits = 4, a_bits = 4;
  float sim_bound = 2e-5f;  ///< max |runtime - simulation| / max |logit|
};

/// Quantizes c.model with a short BRECQ run, saves it, and compares runtime and
/// simulation.
void check_agreement(Case c) {
  CAPTURE(c.name);
  test::randomize(c.model, 11);
  Rng rng(21);
  const int64_t C = c.model.in_channels, H = c.size, N = 12;
  const Tensor calib = Tensor::randn(Shape{32, C, H, H}, rng);
  quant::QuantModel qm(c.model, {.w_bits = c.w_bits, .a_bits = c.a_bits, .input_bits = 8});
  quant::ReconstructionSettings s;
  s.iters_w = 8;
  s.iters_a = 4;
  s.batch = 8;
  s.act_init_images = 16;
  s.progress = nullptr;
  quant::run_brecq("block", qm, calib, s);
  const std::string path =
      (std::filesystem::temp_directory_path() / ("brecq_test_agree_" + c.name + ".safetensors"))
          .string();
  quant::save_quantized(qm, {}, path);

  const runtime::Graph g = runtime::load_graph(path);
  quant::QuantModel sim = quant::load_quantized(path);
  std::filesystem::remove(path);
  runtime::Executor ex(g, {.max_batch = N, .height = H, .width = H, .threads = 2});
  const Tensor x = Tensor::randn(Shape{N, C, H, H}, rng);
  std::vector<uint8_t> levels(static_cast<size_t>(N * C * H * H));
  const int64_t K = g.options.num_classes;
  std::vector<float> logits(static_cast<size_t>(N * K));
  ex.quantize_input(x.data<float>(), N, levels.data());
  ex.run(levels.data(), N, logits.data());
  NoGrad ng;
  const Tensor y = sim.forward(x);
  REQUIRE(y.shape() == Shape{N, K});

  float largest = 0, diff = 0;
  double exact = 0;  // |runtime - float64 reference|
  int64_t same = 0;
  for (int64_t n = 0; n < N; ++n) {
    const float* rs = y.data<float>() + n * K;
    const float* rr = logits.data() + n * K;
    same += std::max_element(rs, rs + K) - rs == std::max_element(rr, rr + K) - rr;
    const std::vector<double> ref = test::ref_forward(g, x.data<float>() + n * C * H * H, H, H);
    for (int64_t k = 0; k < K; ++k) {
      largest = std::max(largest, std::abs(rs[k]));
      diff = std::max(diff, std::abs(rs[k] - rr[k]));
      exact = std::max(exact, std::abs(ref[static_cast<size_t>(k)] - rr[k]));
    }
  }
  MESSAGE(c.name, ": max |runtime - simulation| ", diff, ", max |runtime - float64 reference| ",
          exact, ", max |logit| ", largest);
  CHECK(largest > 0.0f);
  CHECK(exact <= 1e-6 * largest);  // the integer runtime is exact
  CHECK(same == N);
  CHECK(diff <= c.sim_bound * largest);
}

}  // namespace runtime_agreement_test

using namespace runtime_agreement_test;

TEST_CASE(
    "the integer runtime computes what the simulation computes: CIFAR "
    "ResNet-20") {
  check_agreement({.name = "resnet20",
                   .model = nn::make_model("resnet20_cifar"),
                   .size = 16,
                   .w_bits = 2,
                   .a_bits = 4});
}

TEST_CASE(
    "the integer runtime computes what the simulation computes: "
    "ResNet-18 (basic blocks)") {
  check_agreement({.name = "resnet18",
                   .model = nn::resnet18({.num_classes = 10, .base_width = 8}),
                   .size = 32,
                   .w_bits = 4,
                   .a_bits = 4});
}

TEST_CASE(
    "the integer runtime computes what the simulation computes: "
    "ResNet-50 (bottlenecks)") {
  check_agreement(
      {.name = "resnet50",
       .model = nn::resnet50({.num_classes = 10, .small_input_stem = true, .base_width = 4}),
       .size = 16,
       .w_bits = 3,
       .a_bits = 8,
       .sim_bound = 0.05f});
}

TEST_CASE("the integer runtime computes what the simulation computes: MobileNetV2") {
  check_agreement({.name = "mobilenet_v2",
                   .model = nn::make_model("mobilenet_v2", {.num_classes = 10, .width_mult = 0.25}),
                   .size = 32,
                   .w_bits = 4,
                   .a_bits = 4});
}
