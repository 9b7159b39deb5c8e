// Every op's backward against central finite differences, from one table of cases; and every op
// given non-contiguous (strided, offset) inputs against the same op given contiguous copies.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "brecq/autograd/gradcheck.hpp"
#include "brecq/ops/conv.hpp"
#include "brecq/ops/elementwise.hpp"
#include "brecq/ops/loss.hpp"
#include "brecq/ops/matmul.hpp"
#include "brecq/ops/norm.hpp"
#include "brecq/ops/pool.hpp"
#include "brecq/ops/reduce.hpp"
#include "brecq/ops/shape.hpp"
#include "brecq/tensor/parallel.hpp"

namespace {

using namespace brecq;
using Inputs = std::vector<Tensor>;
using Fn = std::function<Tensor(const Inputs&)>;

/// How to draw one input: uniform in [lo, hi), redrawn while within `margin` of a kink in
/// `avoid`; or (`distinct`) a shuffled evenly spaced grid, so max-pool windows have no near-ties.
struct In {
  Shape shape;
  float lo = -1.0f, hi = 1.0f;
  std::vector<float> avoid = {};
  bool distinct = false;
};

struct GradCase {
  std::string name;
  std::vector<In> inputs;
  Fn f;
  double atol = 1e-3, rtol = 1e-2;
  double eps = 1e-3;  ///< finite-difference step
};

constexpr float kMargin = 0.05f;  // distance kept from kinks; finite differences step 1e-3
// Step for ops linear in each single input element (add, mul, sums, matmul, conv, average
// pooling, batch norm in eval mode): central differences
// are exact there whatever the step, and a large step keeps float32 rounding noise, summed over
// the many outputs one input reaches, well below the tolerance.
constexpr double kLinearEps = 0.03;

Tensor draw(const In& in, Rng& rng) {
  const int64_t n = in.shape.numel();
  std::vector<float> v(static_cast<size_t>(n));
  if (in.distinct) {
    for (int64_t i = 0; i < n; ++i)
      v[static_cast<size_t>(i)] =
          in.lo + (in.hi - in.lo) * (static_cast<float>(i) + 0.5f) / static_cast<float>(n);
    for (int64_t i = n - 1; i > 0; --i)
      std::swap(v[static_cast<size_t>(i)], v[rng.below(static_cast<uint64_t>(i + 1))]);
  } else {
    for (float& x : v) {
      bool near_kink = true;
      while (near_kink) {
        x = rng.uniform(in.lo, in.hi);
        near_kink = false;
        for (float k : in.avoid) near_kink = near_kink || std::fabs(x - k) < kMargin;
      }
    }
  }
  return Tensor::from_vector(in.shape, v);
}

Inputs draw_all(const GradCase& c, uint64_t seed) {
  Rng rng(seed);
  Inputs xs;
  for (const In& in : c.inputs) xs.push_back(draw(in, rng));
  return xs;
}

/// The same values in a strided view: the last dimension is padded by NaNs on both sides in the
/// underlying storage (so rank >= 2 gives a non-contiguous view, rank 1 an offset one).
Tensor strided_copy(const Tensor& t) {
  if (t.ndim() == 0) return t.clone();
  std::vector<int64_t> dims = t.shape().dims();
  dims.back() += 3;
  Tensor big = Tensor::full(Shape(dims), std::nanf(""));
  Tensor v = big.narrow(-1, 1, t.dim(-1));
  v.copy_from(t);
  return v;
}

// ---- the table ----------------------------------------------------------------------------------

std::vector<GradCase> build_cases() {
  using I = const Inputs&;
  std::vector<GradCase> cs;
  // A case with a nonlinear op (finite-difference step 1e-3) and one linear in each input
  // element (step kLinearEps).
  auto add_case = [&](std::string name, std::vector<In> ins, Fn f, double atol = 1e-3) {
    cs.push_back({std::move(name), std::move(ins), std::move(f), atol, 1e-2, 1e-3});
  };
  auto add_linear = [&](std::string name, std::vector<In> ins, Fn f) {
    cs.push_back({std::move(name), std::move(ins), std::move(f), 1e-3, 1e-2, kLinearEps});
  };
  // clang-format off

  // Binary ops over broadcasting patterns: equal, 4-D vs per-channel, rank-extending, scalars on
  // either side, both sides broadcast.
  const std::vector<std::pair<Shape, Shape>> pairs = {
      {{2, 3}, {2, 3}}, {{2, 3, 4, 5}, {1, 3, 1, 1}}, {{5}, {2, 1, 5}},
      {{2, 3}, {}},     {{}, {2, 3}},                 {{3, 1}, {1, 4}}};
  for (const auto& pair : pairs) {
    const Shape &sa = pair.first, &sb = pair.second;  // clang 14 cannot capture bindings
    auto name = [&](const char* op) { return brecq::detail::concat(op, " ", sa, " ", sb); };
    add_linear(name("add"), {{sa}, {sb}}, [](I x) { return add(x[0], x[1]); });
    add_linear(name("sub"), {{sa}, {sb}}, [](I x) { return sub(x[0], x[1]); });
    add_linear(name("mul"), {{sa}, {sb}}, [](I x) { return mul(x[0], x[1]); });
    add_case(name("div"), {{sa}, {sb, 0.5f, 1.5f}}, [](I x) { return div(x[0], x[1]); });
    add_case(name("div by negative"), {{sa}, {sb, -1.5f, -0.5f}}, [](I x) { return x[0] / x[1]; });
    // |a| >= 0.05 and |b| < 0.03: the operands never come within a finite-difference step.
    add_case(name("maximum"), {{sa, -1, 1, {0}}, {sb, -0.03f, 0.03f}},
             [](I x) { return maximum(x[0], x[1]); });
  }
  add_case("mul reuses its input", {{{3, 4}}}, [](I x) { return mul(x[0], x[0]); });
  add_linear("where", {{{3, 4}}, {{3, 4}}}, [](I x) {
    Tensor mask = Tensor::empty({3, 4});
    for (int64_t i = 0; i < 12; ++i) mask.data<float>()[i] = i % 3 == 0 ? 1.0f : 0.0f;
    return where(mask, x[0], x[1]);
  });
  add_case("scalar overloads", {{{3, 4}}}, [](I x) {
    return (2.0f * x[0] + 1.0f) * (3.0f - x[0]) / 4.0f - x[0] * 0.5f + (-x[0]);
  });

  // Unary ops, inputs away from kinks and inside domains.
  const Shape u{3, 4, 5};
  add_case("neg", {{u}}, [](I x) { return neg(x[0]); });
  add_case("relu", {{u, -1, 1, {0}}}, [](I x) { return relu(x[0]); });
  add_case("relu6", {{u, -2, 8, {0, 6}}}, [](I x) { return relu6(x[0]); });
  add_case("sigmoid", {{u, -4, 4}}, [](I x) { return sigmoid(x[0]); });
  add_case("clamp", {{u, -1, 1, {-0.5f, 0.5f}}}, [](I x) { return clamp(x[0], -0.5f, 0.5f); });
  add_case("abs", {{u, -1, 1, {0}}}, [](I x) { return abs(x[0]); });
  add_case("pow 2.5", {{u, 0.5f, 2}}, [](I x) { return pow(x[0], 2.5f); });
  add_case("pow -1.5", {{u, 0.5f, 2}}, [](I x) { return pow(x[0], -1.5f); });
  add_case("pow 3 of negatives", {{u, -1, 1}}, [](I x) { return pow(x[0], 3.0f); });
  add_case("pow 0", {{u, 0.5f, 2}}, [](I x) { return pow(x[0], 0.0f); });
  add_case("square", {{u}}, [](I x) { return square(x[0]); });
  add_case("sqrt", {{u, 0.3f, 2}}, [](I x) { return sqrt(x[0]); });
  add_case("exp", {{u}}, [](I x) { return exp(x[0]); });
  add_case("log", {{u, 0.3f, 2}}, [](I x) { return log(x[0]); });
  add_case("round", {{u, -3, 3, {-2.5f, -1.5f, -0.5f, 0.5f, 1.5f, 2.5f}}},
           [](I x) { return round(x[0]) * x[0]; });
  add_case("floor", {{u, -3, 3, {-3, -2, -1, 0, 1, 2, 3}}},
           [](I x) { return floor(x[0]) * x[0]; });
  add_case("chain of unaries", {{u, 0.3f, 2}},
           [](I x) { return log(sqrt(exp(sigmoid(x[0])) + square(x[0]))); });

  // Reductions.
  add_linear("sum", {{{3, 4, 5}}}, [](I x) { return sum(x[0]); });
  add_linear("mean", {{{3, 4, 5}}}, [](I x) { return mean(x[0]); });
  add_linear("sum dims 1,3", {{{2, 3, 4, 5}}}, [](I x) { return sum(x[0], {1, 3}); });
  add_linear("sum dims keepdim", {{{2, 3, 4}}}, [](I x) { return sum(x[0], {0, 2}, true); });
  add_linear("sum every dim", {{{2, 3, 4}}}, [](I x) { return sum(x[0], {0, 1, 2}); });
  add_linear("mean dim -1", {{{2, 3, 4}}}, [](I x) { return mean(x[0], {-1}); });
  add_linear("mean dims keepdim", {{{2, 3, 4, 5}}},
             [](I x) { return mean(x[0], {0, 2, 3}, true); });

  // Shape ops.
  add_linear("reshape", {{{2, 3, 4}}}, [](I x) { return reshape(x[0], {4, -1}) * 2.0f; });
  add_linear("flatten", {{{2, 3, 2, 2}}}, [](I x) { return flatten(x[0]); });
  add_linear("narrow", {{{3, 5, 4}}}, [](I x) { return narrow(x[0], 1, 1, 3); });
  add_linear("narrow last dim", {{{3, 5, 4}}}, [](I x) { return narrow(x[0], -1, 2, 2); });
  add_linear("subsample 2x2 odd", {{{2, 3, 5, 7}}}, [](I x) { return subsample(x[0], 2, 2); });
  add_linear("subsample 1x3", {{{1, 2, 4, 7}}}, [](I x) { return subsample(x[0], 1, 3); });
  add_linear("pad_channels", {{{2, 3, 2, 3}}}, [](I x) { return pad_channels(x[0], 1, 2); });
  add_linear("pad_channels after", {{{1, 2, 3, 3}}}, [](I x) { return pad_channels(x[0], 0, 2); });
  add_linear("cat dim 1", {{{2, 3, 4}}, {{2, 1, 4}}, {{2, 2, 4}}}, [](I x) { return cat(x, 1); });
  add_linear("cat dim 0", {{{1, 3}}, {{2, 3}}}, [](I x) { return cat(x, 0); });
  add_linear("cat dim -1", {{{2, 2}}, {{2, 3}}}, [](I x) { return cat(x, -1); });

  // Matrix products.
  auto mm = [](I x) { return matmul(x[0], x[1]); };
  auto fc = [](I x) { return linear(x[0], x[1], x.size() > 2 ? x[2] : Tensor()); };
  add_linear("matmul", {{{3, 5}}, {{5, 4}}}, mm);
  add_linear("matmul vector", {{{1, 7}}, {{7, 1}}}, mm);
  add_linear("matmul register tiles", {{{9, 20}}, {{20, 35}}}, mm);
  add_linear("linear", {{{4, 6}}, {{3, 6}}, {{3}}}, fc);
  add_linear("linear no bias batch 1", {{{1, 7}}, {{5, 7}}}, fc);
  add_linear("linear wide", {{{3, 19}}, {{18, 19}}, {{18}}}, fc);

  // Convolutions: x, w[, bias].
  auto conv_case = [&](std::string name, Shape xs, Shape ws, bool bias, Conv2dParams p) {
    std::vector<In> ins = {{xs}, {ws}};
    if (bias) ins.push_back({Shape{ws[0]}});
    add_linear(brecq::detail::concat("conv2d ", name), ins,
               [p](I x) { return conv2d(x[0], x[1], x.size() > 2 ? x[2] : Tensor(), p); });
  };
  conv_case("basic", {2, 3, 5, 5}, {4, 3, 3, 3}, true, {});
  conv_case("stride 2 pad 0", {2, 3, 7, 6}, {4, 3, 3, 3}, false, {.stride = 2});
  conv_case("stride 2 pad 1", {2, 3, 7, 6}, {4, 3, 3, 3}, true, {.stride = 2, .padding = 1});
  conv_case("pad 2", {1, 2, 4, 5}, {2, 2, 3, 3}, false, {.padding = 2});
  conv_case("pad 2 dilation 2", {1, 2, 7, 7}, {3, 2, 3, 3}, true, {.padding = 2, .dilation = 2});
  conv_case("stride 2 dilation 2", {1, 2, 9, 8}, {2, 2, 3, 3}, false,
            {.stride = 2, .dilation = 2});
  conv_case("groups 2", {2, 4, 5, 5}, {6, 2, 3, 3}, true, {.padding = 1, .groups = 2});
  conv_case("depthwise stride 2", {2, 3, 6, 5}, {3, 1, 3, 3}, true,
            {.stride = 2, .padding = 1, .groups = 3});
  conv_case("depthwise", {1, 4, 5, 5}, {4, 1, 3, 3}, false, {.padding = 1, .groups = 4});
  conv_case("depthwise multiplier 2", {1, 2, 5, 5}, {4, 1, 3, 3}, false,
            {.padding = 1, .groups = 2});
  conv_case("1x1 stride 2 batch 1", {1, 3, 9, 7}, {5, 3, 1, 1}, true, {.stride = 2});
  conv_case("rectangular kernel", {1, 3, 6, 7}, {4, 3, 2, 3}, false, {.padding = 1});
  conv_case("5x5 pad 2", {1, 2, 6, 6}, {3, 2, 5, 5}, true, {.padding = 2});
  conv_case("16 out channels wide", {1, 3, 5, 19}, {16, 3, 3, 3}, true, {.padding = 1});

  // Pooling; max pooling on distinct values (no near-ties inside a window).
  auto max_pool = [&](std::string name, Shape xs, Pool2dParams p) {
    add_case(brecq::detail::concat("max_pool2d ", name), {{xs, -1, 1, {}, true}},
             [p](I x) { return max_pool2d(x[0], p); });
  };
  auto avg_pool = [&](std::string name, Shape xs, Pool2dParams p) {
    add_linear(brecq::detail::concat("avg_pool2d ", name), {{xs}},
               [p](I x) { return avg_pool2d(x[0], p); });
  };
  max_pool("k2", {2, 3, 6, 5}, {.kernel = 2});
  max_pool("k3 s2 p1", {1, 2, 7, 6}, {.kernel = 3, .stride = 2, .padding = 1});
  max_pool("k2 s1 overlapping", {1, 2, 4, 5}, {.kernel = 2, .stride = 1});
  max_pool("k3 s1 p1", {1, 1, 5, 5}, {.kernel = 3, .stride = 1, .padding = 1});
  avg_pool("k3 s2 p1", {2, 2, 7, 6}, {.kernel = 3, .stride = 2, .padding = 1});
  avg_pool("k2", {1, 3, 4, 5}, {.kernel = 2});
  avg_pool("k2 s1 p1", {1, 2, 3, 4}, {.kernel = 2, .stride = 1, .padding = 1});
  add_linear("global_avg_pool", {{{2, 3, 4, 5}}}, [](I x) { return global_avg_pool(x[0]); });

  // Batch norm: in training every output of a channel depends on every input of it, hence the
  // looser atol. Running statistics are captured, not inputs (they take no gradient).
  const Shape c4{4};
  const Tensor none;
  add_case("batch_norm2d train", {{{3, 4, 2, 3}}, {c4, 0.5f, 1.5f}, {c4}}, [none](I x) {
    return batch_norm2d(x[0], x[1], x[2], none, none, {.training = true});
  }, 2e-3);
  add_case("batch_norm2d train no affine, batch 1", {{{1, 2, 3, 3}}}, [none](I x) {
    return batch_norm2d(x[0], none, none, none, none, {.training = true});
  }, 2e-3);
  Rng rng(7);
  const Tensor rm = Tensor::uniform(c4, rng, -0.5f, 0.5f);
  const Tensor rv = Tensor::uniform(c4, rng, 0.5f, 1.5f);
  add_case("batch_norm2d train updating stats", {{{2, 4, 3, 2}}, {c4, 0.5f, 1.5f}, {c4}},
           [rm, rv](I x) {
             return batch_norm2d(x[0], x[1], x[2], rm, rv, {.training = true, .momentum = 0.3f});
           }, 2e-3);
  add_linear("batch_norm2d eval", {{{3, 4, 2, 3}}, {c4, 0.5f, 1.5f}, {c4}}, [rm, rv](I x) {
    return batch_norm2d(x[0], x[1], x[2], rm, rv, {.training = false});
  });

  // Softmax family and losses.
  add_case("log_softmax", {{{3, 5}, -2, 2}}, [](I x) { return log_softmax(x[0]); });
  add_case("softmax", {{{3, 5}, -2, 2}}, [](I x) { return softmax(x[0]); });
  add_case("cross_entropy", {{{4, 5}, -2, 2}},
           [](I x) { return cross_entropy(x[0], {2, 0, 4, 1}); });
  add_case("kl_div", {{{3, 6}, -2, 2}, {{3, 6}, -2, 2}}, [](I x) { return kl_div(x[0], x[1]); });
  add_case("mse_loss", {{{3, 4}}, {{3, 4}}}, [](I x) { return mse_loss(x[0], x[1]); });
  // lp_loss: the gradient flows into the prediction only; target and weights are data.
  const Tensor target = Tensor::uniform({2, 3, 2, 2}, rng, -0.03f, 0.03f);
  const Tensor fisher = Tensor::uniform({2, 3, 2, 2}, rng, 0.5f, 1.5f);
  for (float p : {1.0f, 2.0f, 2.4f}) {
    add_case(brecq::detail::concat("lp_loss p=", p), {{{2, 3, 2, 2}, -1, 1, {0}}},
             [p, target](I x) { return lp_loss(x[0], target, p); });
    add_case(brecq::detail::concat("lp_loss weighted p=", p), {{{2, 3, 2, 2}, -1, 1, {0}}},
             [p, target, fisher](I x) { return lp_loss(x[0], target, p, fisher); });
  }
  add_case("lp_loss 2-D", {{{4, 6}, -1, 1, {0}}},
           [target](I x) { return lp_loss(x[0], target.view({4, 6}), 2.4f); });

  // A small network end to end (smooth activations, so no kinks anywhere).
  add_case("conv-bn-sigmoid-pool-linear-cross_entropy",
           {{{2, 2, 5, 5}}, {{3, 2, 3, 3}}, {{3}, 0.5f, 1.5f}, {{3}}, {{4, 12}}, {{4}}},
           [none](I x) {
             Tensor h = conv2d(x[0], x[1], none, {.padding = 1});                   // [2, 3, 5, 5]
             h = batch_norm2d(h, x[2], x[3], none, none, {.training = true});
             h = avg_pool2d(sigmoid(h), {.kernel = 2});                             // [2, 3, 2, 2]
             return cross_entropy(linear(flatten(h), x[4], x[5]), {3, 1});  // [2, 12] -> [2, 4]
           }, 2e-3);
  // clang-format on
  return cs;
}

/// Sets the OpenMP thread count for a scope.
class ThreadCount {
 public:
  explicit ThreadCount(int n) : saved_(num_threads()) { set_num_threads(n); }
  ~ThreadCount() { set_num_threads(saved_); }
  ThreadCount(const ThreadCount&) = delete;
  ThreadCount& operator=(const ThreadCount&) = delete;

 private:
  int saved_;
};

uint64_t seed_of(const std::string& name) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char ch : name) h = (h ^ ch) * 0x100000001B3ull;
  return h;
}

}  // namespace

TEST_CASE("every op's backward matches central finite differences") {
  // Thousands of tiny forward passes, where threads only add start-up cost (a lot of it on a
  // loaded machine). The golden and strided tests below run the same ops with threads.
  const ThreadCount one_thread(1);
  for (const GradCase& c : build_cases()) {
    CAPTURE(c.name);
    const autograd::GradcheckResult r = autograd::gradcheck(
        c.f, draw_all(c, seed_of(c.name)), {.eps = c.eps, .atol = c.atol, .rtol = c.rtol});
    CHECK_MESSAGE(r.ok, c.name, ": ", r.message, " (max abs error ", r.max_abs_error, ")");
    CHECK(autograd::tape().size() == 0);
  }
}

TEST_CASE("every op gives the same values and gradients for strided and contiguous inputs") {
  for (const GradCase& c : build_cases()) {
    CAPTURE(c.name);
    const Inputs base = draw_all(c, seed_of(c.name));
    Rng rng(99);
    Tensor seed;
    std::vector<std::vector<float>> results[2];  // [contiguous, strided]: output, then gradients
    for (int strided = 0; strided < 2; ++strided) {
      Inputs xs;
      for (const Tensor& t : base) {
        xs.push_back(strided ? strided_copy(t) : t.clone());
        xs.back().set_requires_grad(true);
      }
      if (strided) {  // non-contiguous wherever a dimension other than the last is > 1
        for (const Tensor& t : xs)
          CHECK((t.ndim() == 0 || t.numel() == t.dim(-1) || !t.is_contiguous()));
      }
      Tensor out = c.f(xs);
      if (!seed.defined()) seed = Tensor::uniform(out.shape(), rng, 0.5f, 1.5f);
      backward(out, seed);
      results[strided].push_back(out.to_vector());
      for (const Tensor& t : xs)
        results[strided].push_back(t.grad().defined() ? t.grad().to_vector()
                                                      : std::vector<float>());
    }
    REQUIRE(results[0].size() == results[1].size());
    for (size_t k = 0; k < results[0].size(); ++k) {
      const std::vector<float>&a = results[0][k], &b = results[1][k];
      REQUIRE(a.size() == b.size());
      size_t bad = a.size();
      for (size_t i = 0; i < a.size() && bad == a.size(); ++i)
        if (!(std::fabs(a[i] - b[i]) <= 1e-6f * (1.0f + std::fabs(a[i])))) bad = i;
      CHECK_MESSAGE(bad == a.size(), c.name, ": ",
                    k == 0 ? std::string("output") : brecq::detail::concat("gradient ", k - 1),
                    " element ", bad, " contiguous ", (bad < a.size() ? a[bad] : 0.f), " strided ",
                    (bad < a.size() ? b[bad] : 0.f));
    }
  }
}

TEST_CASE("gradcheck catches a wrong backward") {
  // y = x^2 with a backward that forgets the factor 2.
  auto wrong = [](const Inputs& x) {
    return unary_op(
        "wrong_square", x[0], [](float v) { return v * v; }, [](float v, float) { return v; });
  };
  Rng rng(1);
  const autograd::GradcheckResult r =
      autograd::gradcheck(wrong, {Tensor::uniform({3, 2}, rng, 0.5f, 1.0f)});
  CHECK_FALSE(r.ok);
  CHECK(r.message.find("input 0") != std::string::npos);
  CHECK(r.max_abs_error > 0.4);
}

TEST_CASE("straight-through rounding passes the gradient unchanged") {
  Tensor x = Tensor::from_vector({6}, {-2.5f, -1.5f, -0.5f, 0.5f, 1.3f, 2.7f});
  for (auto op : {&round_ste, &floor_ste}) {
    Tensor xl = x.clone();
    xl.set_requires_grad(true);
    Tensor g = Tensor::from_vector({6}, {1, 2, 3, 4, 5, 6});
    backward(op(xl), g);
    CHECK(xl.grad().to_vector() == g.to_vector());
  }
  Tensor xl = x.clone();
  xl.set_requires_grad(true);
  backward(sum(round(xl) + floor(xl)));
  CHECK(xl.grad().to_vector() == std::vector<float>(6, 0.0f));
}
