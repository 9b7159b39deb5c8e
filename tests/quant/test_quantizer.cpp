#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include "brecq/autograd/gradcheck.hpp"
#include "brecq/nn/optim.hpp"
#include "brecq/ops/matmul.hpp"
#include "brecq/quant/adaround.hpp"
#include "brecq/quant/quantizer.hpp"

using namespace brecq;
using namespace brecq::quant;

TEST_CASE("uniform quantizer: values land on the grid and inside the range") {
  Rng rng(3);
  Tensor w = Tensor::randn(Shape{4, 3, 3, 3}, rng);
  for (int bits : {2, 4, 8}) {
    UniformQuantizer q{.config = {.bits = bits, .per_channel = true}};
    init_range(q, w);
    CHECK(q.channels() == 4);
    Tensor wq = fake_quantize(w, q);
    for (int64_t i = 0; i < w.numel(); ++i) {
      const int64_t c = i / 27;
      const float s = q.scale.data<float>()[c], zp = q.zero_point.data<float>()[c];
      const float level = wq.data<float>()[i] / s + zp;
      CHECK(std::fabs(level - std::nearbyint(level)) < 1e-3f);
      CHECK(level > -1e-3f);
      CHECK(level < q.qmax() + 1e-3f);
    }
  }
}

TEST_CASE("L2.4 range search beats min-max at low bit-widths") {
  Rng rng(5);
  Tensor x = Tensor::randn(Shape{1, 4096}, rng);
  auto lp_error = [&](RangeInit init) {
    UniformQuantizer q{.config = {.bits = 2, .init = init}};
    init_range(q, x);
    Tensor xq = fake_quantize(x, q);
    double e = 0;
    for (int64_t i = 0; i < x.numel(); ++i)
      e += std::pow(std::fabs(x.data<float>()[i] - xq.data<float>()[i]), 2.4);
    return e;
  };
  CHECK(lp_error(RangeInit::lp_search) < 0.8 * lp_error(RangeInit::minmax));
}

TEST_CASE("fake_quantize gradients: straight-through for x, LSQ-style for the step") {
  Tensor x = Tensor::from_vector(Shape{4}, {0.26f, 0.9f, 3.0f, -1.0f});
  x.set_requires_grad(true);
  UniformQuantizer q{.config = {.bits = 2}};
  q.scale = Tensor::from_vector(Shape{1}, {0.5f});
  q.zero_point = Tensor::from_vector(Shape{1}, {1.0f});
  q.scale.set_requires_grad(true);
  Tensor y = fake_quantize(x, q);
  // levels: round(x/s)+zp = 2, 3 (=1.8 -> 2+1), 7 -> clamp 3, -1 -> clamp 0
  CHECK(y.to_vector() == std::vector<float>{0.5f, 1.0f, 1.0f, -0.5f});
  backward(sum(y));
  CHECK(x.grad().to_vector() == std::vector<float>{1.0f, 1.0f, 0.0f, 0.0f});
  // d/ds: inside r - x/s; outside clamped level - zp.
  const float expect = (1.0f - 0.52f) + (2.0f - 1.8f) + (3.0f - 1.0f) + (0.0f - 1.0f);
  CHECK(q.scale.grad().item() == doctest::Approx(expect).epsilon(1e-5));
}

TEST_CASE("quantizer settings are validated with the offending value in the message") {
  UniformQuantizer q{.config = {.bits = 9}};
  Tensor x = Tensor::ones(Shape{2});
  CHECK_THROWS_WITH_AS(init_range(q, x), doctest::Contains("got 9"), Error);
}

namespace {

/// Random weights [3, per_channel], their initialised per-channel quantizer and AdaRound state.
struct AdaRoundCase {
  Tensor w;
  UniformQuantizer q;
  AdaRound a;
  AdaRoundCase(uint64_t seed, int64_t per_channel, int bits)
      : q{.config = {.bits = bits, .per_channel = true}} {
    Rng rng(seed);
    w = Tensor::randn(Shape{3, per_channel}, rng);
    init_range(q, w);
    a = AdaRound::init(w, q);
  }
};

}  // namespace

TEST_CASE("AdaRound: alpha starts at the rounding remainder, hard rounding is floor or ceil") {
  auto [w, q, a] = AdaRoundCase(11, 8, 4);
  Tensor soft = a.soft_weight(q);
  Tensor hard = a.hard_weight(q);
  Tensor nearest = fake_quantize(w, q);
  int64_t unclipped = 0;
  for (int64_t i = 0; i < w.numel(); ++i) {
    const int64_t c = i / 8;
    const float s = q.scale.data<float>()[c];
    const float lo = (0 - q.zero_point.data<float>()[c]) * s,
                hi = (q.qmax() - q.zero_point.data<float>()[c]) * s;
    const float wi = w.data<float>()[i];
    if (wi < lo || wi > hi) continue;
    ++unclipped;
    CHECK(soft.data<float>()[i] == doctest::Approx(wi).epsilon(1e-4));  // h(alpha) = frac
    CHECK(hard.data<float>()[i] ==
          doctest::Approx(nearest.data<float>()[i]));  // alpha>=0 <=> frac>=.5
  }
  CHECK(unclipped > 12);
}

TEST_CASE(
    "AdaRound soft weights and regulariser: gradients w.r.t. alpha match finite differences") {
  // Named members, not a structured binding: clang 14 (the sanitizer build) cannot capture one.
  const auto c = AdaRoundCase(31, 10, 2);
  const auto& q = c.q;
  const auto& a = c.a;
  const Tensor alpha = a.alpha.detach();
  auto with_alpha = [&](const Tensor& al) {
    AdaRound b = a;
    b.alpha = al;
    return b;
  };
  // weighted so that clipped and unclipped elements both count
  const autograd::GradcheckResult soft = autograd::gradcheck(
      [&](const std::vector<Tensor>& in) { return with_alpha(in[0]).soft_weight(q); }, {alpha});
  CHECK_MESSAGE(soft.ok, soft.message);
  for (float beta : {20.0f, 4.0f, 2.0f}) {
    CAPTURE(beta);
    const autograd::GradcheckResult reg = autograd::gradcheck(
        [&](const std::vector<Tensor>& in) { return with_alpha(in[0]).regularizer(beta); }, {alpha},
        {.eps = 1e-3, .atol = 2e-3, .rtol = 2e-2});
    CHECK_MESSAGE(reg.ok, reg.message);
  }
  // the regulariser's value: sum(1 - |2h - 1|^beta) recomputed from h
  double expect = 0;
  for (float al : alpha.to_vector()) {
    const double h = std::clamp(1.2 / (1.0 + std::exp(-al)) - 0.1, 0.0, 1.0);
    expect += 1.0 - std::pow(std::fabs(2 * h - 1), 2.0);
  }
  CHECK(a.regularizer(2.0f).item() == doctest::Approx(expect).epsilon(1e-4));
}

TEST_CASE("AdaRound on a least-squares problem finds better-than-nearest rounding") {
  // y = x w^T with 2-bit per-channel weights; learn the rounding to minimise ||x (w_q - w)^T||^2.
  Rng rng(2024);
  Tensor w = Tensor::randn(Shape{4, 16}, rng);
  Tensor x = Tensor::randn(Shape{256, 16}, rng);
  // Correlated inputs make the rounding decisions interact, as in real layers.
  for (int64_t n = 0; n < 256; ++n)
    for (int64_t k = 1; k < 16; ++k)
      x.data<float>()[n * 16 + k] += 0.8f * x.data<float>()[n * 16 + k - 1];
  UniformQuantizer q{.config = {.bits = 2, .per_channel = true}};
  init_range(q, w);
  Tensor y = linear(x, w);
  auto error = [&](const Tensor& wq) {
    NoGrad ng;
    return mean(square(sub(linear(x, wq), y))).item();
  };
  const float nearest = error(fake_quantize(w, q));
  AdaRound a = AdaRound::init(w, q);
  Adam opt({a.alpha}, {.lr = 1e-2f});
  const int iters = 1500;
  for (int t = 1; t <= iters; ++t) {
    Tensor loss = mean(square(sub(linear(x, a.soft_weight(q)), y)));
    if (t > iters / 5)
      loss = add(loss, mul(a.regularizer(adaround_beta(t, iters, 0.2f, 20, 2)), 1e-3f));
    backward(loss);
    opt.step();
    opt.zero_grad();
  }
  const float learned = error(a.hard_weight(q));
  MESSAGE("least-squares error: nearest " << nearest << ", AdaRound " << learned);
  CHECK(learned < 0.9f * nearest);
}

TEST_CASE("beta schedule: constant during warm-up, then linear from start to end") {
  CHECK(adaround_beta(100, 1000, 0.2f, 20, 2) == 20.0f);
  CHECK(adaround_beta(200, 1000, 0.2f, 20, 2) == doctest::Approx(20.0f));
  CHECK(adaround_beta(600, 1000, 0.2f, 20, 2) == doctest::Approx(11.0f));
  CHECK(adaround_beta(1000, 1000, 0.2f, 20, 2) == doctest::Approx(2.0f));
}
