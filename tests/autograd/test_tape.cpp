// The tape: accumulation, no-grad scopes, frozen leaves, intermediate gradients, memory release
// across iterations, and error messages.
#include <doctest/doctest.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../support.hpp"
#include "brecq/autograd/tape.hpp"
#include "brecq/ops/conv.hpp"
#include "brecq/ops/elementwise.hpp"
#include "brecq/ops/loss.hpp"
#include "brecq/ops/matmul.hpp"
#include "brecq/ops/pool.hpp"
#include "brecq/ops/reduce.hpp"
#include "brecq/ops/shape.hpp"

namespace {

using namespace brecq;

Tensor param(Shape shape, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  Rng rng(seed);
  Tensor t = Tensor::uniform(std::move(shape), rng, lo, hi);
  t.set_requires_grad(true);
  return t;
}

using brecq::test::check_error;

}  // namespace

TEST_CASE("gradients accumulate across backward calls until zero_grad") {
  Tensor x = param({2, 3}, 1);
  backward(sum(x * x));
  const std::vector<float> once = x.grad().to_vector();
  backward(sum(x * x));
  const std::vector<float> xs = x.to_vector(), twice = x.grad().to_vector();
  for (size_t i = 0; i < xs.size(); ++i) {
    CHECK(once[i] == doctest::Approx(2 * xs[i]));
    CHECK(twice[i] == doctest::Approx(4 * xs[i]));
  }
  x.zero_grad();
  CHECK_FALSE(x.grad().defined());
  backward(sum(x));
  CHECK(x.grad().to_vector() == std::vector<float>(6, 1.0f));
}

TEST_CASE("accumulating into a gradient never changes another tensor's gradient or the seed") {
  // add passes its incoming gradient on unchanged, so a, b, y and the seed may share data.
  Tensor a = param({3}, 11), b = param({3}, 12);
  const Tensor seed = Tensor::from_vector({3}, {1, 2, 3});
  Tensor y = a + b;
  backward(y, seed);
  CHECK(a.grad().to_vector() == seed.to_vector());
  CHECK(b.grad().to_vector() == seed.to_vector());
  backward(sum(a * 2.0f));
  CHECK(a.grad().to_vector() == std::vector<float>{3, 4, 5});
  CHECK(b.grad().to_vector() == std::vector<float>{1, 2, 3});
  CHECK(y.grad().to_vector() == std::vector<float>{1, 2, 3});
  CHECK(seed.to_vector() == std::vector<float>{1, 2, 3});
  Tensor x = param({3}, 13);
  backward(reshape(x, {3}) + x, seed);  // both contributions are the seed itself
  CHECK(x.grad().to_vector() == std::vector<float>{2, 4, 6});
  CHECK(seed.to_vector() == std::vector<float>{1, 2, 3});
}

TEST_CASE("a tensor used twice in one graph receives both contributions") {
  Tensor x = param({4}, 2);
  Tensor y = sum(x * x + exp(x));  // dy/dx = 2x + exp(x)
  backward(y);
  const std::vector<float> xs = x.to_vector(), g = x.grad().to_vector();
  for (size_t i = 0; i < xs.size(); ++i)
    CHECK(g[i] == doctest::Approx(2 * xs[i] + std::exp(xs[i])));
}

TEST_CASE("NoGrad records nothing and restores the previous mode") {
  autograd::tape().clear();
  Tensor x = param({3}, 3);
  {
    NoGrad ng;
    CHECK_FALSE(autograd::grad_enabled());
    Tensor y = relu(x * 2.0f) + x;
    Tensor z = cat({y, x}, 0);
    CHECK(autograd::tape().size() == 0);
    CHECK_FALSE(y.requires_grad());
    CHECK_FALSE(z.requires_grad());
    {
      NoGrad nested;
      CHECK_FALSE(autograd::grad_enabled());
    }
    CHECK_FALSE(autograd::grad_enabled());
    check_error([&] { backward(sum(y)); }, {"backward", "does not require a gradient"});
  }
  CHECK(autograd::grad_enabled());
  Tensor y = x * 2.0f;
  CHECK(autograd::tape().size() == 1);
  CHECK(y.requires_grad());
  CHECK_FALSE(y.is_leaf());
  autograd::tape().clear();
}

TEST_CASE("only leaves with requires_grad receive gradients") {
  Rng rng(4);
  Tensor x = Tensor::uniform({2, 3, 5, 5}, rng, -1.0f, 1.0f);  // data: no gradient
  Tensor w = Tensor::uniform({4, 3, 3, 3}, rng, -1.0f, 1.0f);  // frozen weight
  Tensor alpha = param({4, 1, 1}, 5, 0.5f, 1.5f);              // the one trainable tensor
  Tensor fc = Tensor::uniform({2, 4}, rng, -1.0f, 1.0f);       // frozen
  Tensor h = conv2d(x, w, Tensor(), {.padding = 1});
  CHECK_FALSE(h.requires_grad());
  CHECK(autograd::tape().size() == 0);  // nothing recorded until alpha takes part
  Tensor loss = cross_entropy(linear(global_avg_pool(h * alpha), fc), {0, 1});
  backward(loss);
  REQUIRE(alpha.grad().defined());
  CHECK(alpha.grad().shape() == alpha.shape());
  CHECK_FALSE(w.grad().defined());
  CHECK_FALSE(x.grad().defined());
  CHECK_FALSE(fc.grad().defined());
  CHECK_FALSE(h.grad().defined());  // computed before any input required a gradient

  Tensor nonleaf = alpha * 2.0f;
  check_error([&] { nonleaf.set_requires_grad(true); }, {"set_requires_grad", "leaf"});
  autograd::tape().clear();
}

TEST_CASE("the gradient of an intermediate activation is readable after backward") {
  Tensor x = param({2, 3}, 6);
  Tensor z = x * 3.0f;
  Tensor y = sum(z * z);  // dy/dz = 2z, dy/dx = 18x
  backward(y);
  REQUIRE(z.grad().defined());
  const std::vector<float> zs = z.to_vector(), gz = z.grad().to_vector(), gx = x.grad().to_vector();
  for (size_t i = 0; i < zs.size(); ++i) {
    CHECK(gz[i] == doctest::Approx(2 * zs[i]));
    CHECK(gx[i] == doctest::Approx(6 * zs[i]));
  }
}

TEST_CASE("backward with a seed, and backward's own checks") {
  Tensor x = param({2, 2}, 7);
  Tensor y = x * 2.0f;
  backward(y, Tensor::from_vector({2, 2}, {1, 2, 3, 4}));
  CHECK(x.grad().to_vector() == std::vector<float>{2, 4, 6, 8});
  Tensor y2 = x * 2.0f;
  check_error([&] { backward(y2); }, {"backward", "scalar", "[2, 2]"});
  check_error([&] { backward(y2, Tensor::ones({4})); }, {"backward", "seed", "[4]", "[2, 2]"});
  autograd::tape().clear();
}

TEST_CASE("repeated forward/backward releases the tape and intermediates") {
  Tensor w = param({4, 3, 3, 3}, 8);
  Tensor b = param({4}, 9);
  Rng rng(10);
  Tensor x = Tensor::uniform({2, 3, 6, 6}, rng, -1.0f, 1.0f);
  for (int it = 0; it < 100; ++it) {
    std::weak_ptr<TensorImpl> inner;
    std::weak_ptr<Storage> inner_storage;
    {
      Tensor h = relu(conv2d(x, w, b, {.padding = 1}));  // [2, 4, 6, 6]
      inner = h.impl_ptr();
      inner_storage = h.impl().storage;
      Tensor loss = mean(square(max_pool2d(h, {.kernel = 2})));
      CHECK(autograd::tape().size() > 0);
      backward(loss);
      REQUIRE(autograd::tape().size() == 0);
      CHECK_FALSE(inner.expired());  // `h` still holds it
      CHECK(h.grad().defined());
    }
    REQUIRE(inner.expired());
    REQUIRE(inner_storage.expired());
    w.zero_grad();
    b.zero_grad();
  }
  // Without backward the tape keeps intermediates alive until it is cleared.
  std::weak_ptr<TensorImpl> kept;
  {
    Tensor h = w * 2.0f;
    kept = h.impl_ptr();
    Tensor y = h + 1.0f;
  }
  CHECK_FALSE(kept.expired());
  autograd::tape().clear();
  CHECK(kept.expired());
}

TEST_CASE("shape errors name the op and both shapes") {
  const Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({4}), c = Tensor::zeros({4, 5});
  check_error([&] { add(a, b); }, {"add", "[2, 3]", "[4]"});
  check_error([&] { mul(a, b); }, {"mul", "[2, 3]", "[4]"});
  check_error([&] { maximum(a, b); }, {"maximum", "[2, 3]", "[4]"});
  check_error([&] { matmul(a, c); }, {"matmul", "[2, 3]", "[4, 5]"});
  check_error([&] { linear(a, c); }, {"linear", "[2, 3]", "[4, 5]"});
  check_error([&] { cat({a, c}, 0); }, {"cat", "[2, 3]", "[4, 5]"});
  check_error([&] { kl_div(a, c); }, {"kl_div", "[2, 3]", "[4, 5]"});
  check_error([&] { reshape(a, {4, 2}); }, {"reshape", "[2, 3]", "[4, 2]"});
  const Tensor x = Tensor::zeros({1, 3, 5, 5}), w = Tensor::zeros({4, 2, 3, 3});
  check_error([&] { conv2d(x, w); }, {"conv2d", "[1, 3, 5, 5]", "[4, 2, 3, 3]"});
  check_error(
      [&] {
        conv2d(x, Tensor::zeros({4, 3, 7, 7}));
      },
      {"conv2d", "[1, 3, 5, 5]", "[4, 3, 7, 7]"});
  check_error(
      [&] {
        conv2d(x, Tensor::zeros({4, 3, 3, 3}), Tensor::zeros({5}));
      },
      {"conv2d", "[5]", "[4, 3, 3, 3]"});
  // Input smaller than the kernel also when stride > 1 (where (size - kernel) / stride rounds to
  // 0).
  const Tensor x6 = Tensor::zeros({1, 3, 6, 6});
  check_error(
      [&] {
        conv2d(x6, Tensor::zeros({4, 3, 7, 7}), Tensor(), {.stride = 2});
      },
      {"conv2d", "[1, 3, 6, 6]", "[4, 3, 7, 7]"});
  check_error(
      [&] {
        conv2d(x6, Tensor::zeros({4, 3, 3, 3}), Tensor(), {.stride = 2, .dilation = 3});
      },
      {"conv2d", "[1, 3, 6, 6]", "dilation 3"});
  check_error([&] { max_pool2d(a); }, {"max_pool2d", "[2, 3]"});
  check_error(
      [] {
        max_pool2d(Tensor::zeros({1, 1, 1, 1}), {.kernel = 2});
      },
      {"max_pool2d", "[1, 1, 1, 1]", "kernel 2"});
  check_error(
      [] {
        avg_pool2d(Tensor::zeros({1, 1, 3, 3}), {.kernel = 4, .stride = 2});
      },
      {"avg_pool2d", "[1, 1, 3, 3]", "kernel 4"});
  check_error(
      [] {
        avg_pool2d(Tensor::zeros({1, 1, 3, 3}), {.kernel = 2, .padding = 2});
      },
      {"avg_pool2d", "padding 2"});
  check_error([&] { cross_entropy(a, {0, 7}); }, {"cross_entropy", "label 7"});
  check_error([&] { cross_entropy(a, {0}); }, {"cross_entropy", "1 labels", "batch of 2"});
}
