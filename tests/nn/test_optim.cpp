// Optimizers and learning-rate schedules against PyTorch trajectories (golden values from
// tools/make_golden_ops.py): 10 steps of a small least-squares problem per configuration.
#include <doctest/doctest.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "brecq/nn/optim.hpp"
#include "brecq/ops/loss.hpp"
#include "brecq/ops/matmul.hpp"

namespace brecq::golden_ops {
// Defined in tests/ops/test_golden.cpp.
Tensor golden(const std::string& name);
uint64_t fnv1a64(const std::string& s);
void check_close(const Tensor& actual, const std::string& name, double rtol, double atol);
}  // namespace brecq::golden_ops

namespace {

using namespace brecq;
using brecq::golden_ops::check_close;

struct OptimCase {
  std::string name;
  std::function<std::unique_ptr<Optimizer>(std::vector<Tensor>)> make;
};

// Mirrors OPTIMIZERS in the script.
std::vector<OptimCase> optim_cases() {
  auto sgd = [](SgdParams p) {
    return [p](std::vector<Tensor> ps) {
      return std::unique_ptr<Optimizer>(new Sgd(std::move(ps), p));
    };
  };
  auto adam = [](AdamParams p) {
    return [p](std::vector<Tensor> ps) {
      return std::unique_ptr<Optimizer>(new Adam(std::move(ps), p));
    };
  };
  return {
      {"sgd_plain", sgd({.lr = 0.1f})},
      {"sgd_momentum", sgd({.lr = 0.1f, .momentum = 0.9f})},
      {"sgd_nesterov_wd",
       sgd({.lr = 0.1f, .momentum = 0.9f, .weight_decay = 0.01f, .nesterov = true})},
      {"sgd_dampening_wd",
       sgd({.lr = 0.1f, .momentum = 0.9f, .weight_decay = 0.05f, .dampening = 0.3f})},
      {"adam", adam({.lr = 0.05f})},
      {"adam_wd",
       adam({.lr = 0.05f, .beta1 = 0.8f, .beta2 = 0.99f, .eps = 1e-6f, .weight_decay = 0.1f})},
  };
}

constexpr int kSteps = 10;

}  // namespace

TEST_CASE("Sgd and Adam follow PyTorch's trajectories for 10 steps") {
  Rng rng(golden_ops::fnv1a64("optim"));
  const Tensor x = Tensor::uniform({8, 4}, rng, -1.0f, 1.0f);
  const Tensor y = Tensor::uniform({8, 3}, rng, -1.0f, 1.0f);
  const Tensor w0 = Tensor::uniform({3, 4}, rng, -0.5f, 0.5f);
  const Tensor b0 = Tensor::uniform({3}, rng, -0.5f, 0.5f);
  for (const OptimCase& c : optim_cases()) {
    CAPTURE(c.name);
    Tensor w = w0.clone(), b = b0.clone();
    w.set_requires_grad(true);
    b.set_requires_grad(true);
    std::unique_ptr<Optimizer> opt = c.make({w, b});
    Tensor ws = Tensor::empty({kSteps, 3, 4}), bs = Tensor::empty({kSteps, 3}),
           losses = Tensor::empty({kSteps});
    for (int t = 0; t < kSteps; ++t) {
      opt->zero_grad();
      Tensor loss = mse_loss(linear(x, w, b), y);
      backward(loss);
      opt->step();
      losses.data<float>()[t] = loss.item();
      ws.narrow(0, t, 1).view({3, 4}).copy_from(w);
      bs.narrow(0, t, 1).view({3}).copy_from(b);
    }
    check_close(losses, "optim/" + c.name + "/loss", 1e-5, 1e-6);
    check_close(ws, "optim/" + c.name + "/w", 1e-5, 1e-6);
    check_close(bs, "optim/" + c.name + "/b", 1e-5, 1e-6);
  }
}

TEST_CASE("cosine_lr and step_lr match torch's CosineAnnealingLR and StepLR") {
  const std::vector<float> cosine = golden_ops::golden("lr/cosine").to_vector();
  REQUIRE(cosine.size() == 25);  // past t_max too: the schedule keeps following the cosine
  for (size_t t = 0; t < cosine.size(); ++t)
    CHECK(cosine_lr(0.1f, static_cast<int64_t>(t), 10, 0.001f) ==
          doctest::Approx(cosine[t]).epsilon(1e-6));
  const std::vector<float> step = golden_ops::golden("lr/step").to_vector();
  REQUIRE(step.size() == 12);
  for (size_t t = 0; t < step.size(); ++t)
    CHECK(step_lr(0.1f, static_cast<int64_t>(t), 3, 0.5f) ==
          doctest::Approx(step[t]).epsilon(1e-6));
}

TEST_CASE("optimizers skip parameters without gradients and validate their settings") {
  Tensor a = Tensor::ones({2}), b = Tensor::ones({2});
  a.set_requires_grad(true);
  b.set_requires_grad(true);
  Sgd sgd({a, b}, {.lr = 0.5f, .momentum = 0.9f});
  backward(sum(a * 2.0f));  // only a gets a gradient
  sgd.step();
  CHECK(a.to_vector() == std::vector<float>{0.0f, 0.0f});
  CHECK(b.to_vector() == std::vector<float>{1.0f, 1.0f});
  sgd.zero_grad();
  CHECK_FALSE(a.grad().defined());
  sgd.set_lr(0.25f);
  CHECK(sgd.lr() == 0.25f);

  Adam adam({a}, {.lr = 0.1f});
  backward(sum(a * 3.0f));
  adam.step();
  CHECK(adam.steps() == 1);
  // First Adam step moves every coordinate by lr * sign(grad) (up to eps).
  CHECK(a.to_vector()[0] == doctest::Approx(-0.1f).epsilon(1e-5));

  Tensor frozen = Tensor::ones({2});
  CHECK_THROWS_AS(Sgd({frozen}, {}), Error);
  CHECK_THROWS_AS(Sgd({a}, {.lr = 0.1f, .nesterov = true}), Error);
  CHECK_THROWS_AS(Sgd({a}, {.lr = 0.1f, .momentum = 0.9f, .dampening = 0.1f, .nesterov = true}),
                  Error);
  CHECK_THROWS_AS(Adam({a}, {.lr = -1.0f}), Error);
  CHECK_THROWS_AS(cosine_lr(0.1f, 0, 0), Error);
  CHECK_THROWS_AS(step_lr(0.1f, 0, 0), Error);
}
