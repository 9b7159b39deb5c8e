// Parity with PyTorch: forward outputs and gradients of every op against golden values written by
// tools/make_golden_ops.py (torch 1.13). Inputs are not stored: both sides draw them from
// brecq::Rng seeded with the FNV-1a hash of the case name, so the table below mirrors CASES in
// the script (same names, input specs and order).
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "brecq/ops/conv.hpp"
#include "brecq/ops/elementwise.hpp"
#include "brecq/ops/loss.hpp"
#include "brecq/ops/matmul.hpp"
#include "brecq/ops/norm.hpp"
#include "brecq/ops/pool.hpp"
#include "brecq/ops/reduce.hpp"
#include "brecq/ops/shape.hpp"

namespace brecq::golden_ops {

/// Tensor `name` of tests/data/golden_ops.bin (format in tools/make_golden_ops.py). Also used by
/// tests/nn/test_optim.cpp.
Tensor golden(const std::string& name) {
  static const std::map<std::string, Tensor> table = [] {
    const std::string path = std::string(BRECQ_TEST_DATA_DIR) + "/golden_ops.bin";
    std::ifstream f(path, std::ios::binary);
    check(f.good(), "golden: cannot open ", path,
          " (run /usr/bin/python3 tools/make_golden_ops.py)");
    auto read = [&f, &path](void* dst, size_t bytes) {
      f.read(static_cast<char*>(dst), static_cast<std::streamsize>(bytes));
      check(f.good(), "golden: ", path, " is truncated");
    };
    char magic[8];
    read(magic, 8);
    check(std::memcmp(magic, "BRQGOLD1", 8) == 0, "golden: ", path, " has a bad magic number");
    uint32_t count = 0;
    read(&count, 4);
    std::map<std::string, Tensor> m;
    for (uint32_t i = 0; i < count; ++i) {
      uint32_t len = 0, ndim = 0;
      read(&len, 4);
      std::string name(len, '\0');
      read(name.data(), len);
      read(&ndim, 4);
      std::vector<int64_t> dims(ndim);
      read(dims.data(), ndim * sizeof(int64_t));
      Tensor t = Tensor::empty(Shape(dims));
      read(t.raw_data(), t.nbytes());
      m.emplace(std::move(name), t);
    }
    return m;
  }();
  auto it = table.find(name);
  check(it != table.end(), "golden: no tensor named '", name, "' in golden_ops.bin");
  return it->second;
}

/// FNV-1a 64 of a case name: the seed both sides use for its inputs.
uint64_t fnv1a64(const std::string& s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char ch : s) h = (h ^ ch) * 0x100000001B3ull;
  return h;
}

/// Checks |actual - golden| <= atol + rtol * |golden| element-wise, reporting the worst element.
void check_close(const Tensor& actual, const std::string& name, double rtol, double atol) {
  const Tensor want = golden(name);
  INFO("golden tensor ", name);
  REQUIRE_MESSAGE(actual.shape() == want.shape(), "shape ", actual.shape(), " vs torch ",
                  want.shape());
  const std::vector<float> a = actual.to_vector(), w = want.to_vector();
  double worst = 0.0;
  size_t at = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double excess =
        std::fabs(static_cast<double>(a[i]) - w[i]) - (atol + rtol * std::fabs(w[i]));
    if (std::isnan(excess)) {
      worst = INFINITY;
      at = i;
      break;
    }
    if (excess > worst) {
      worst = excess;
      at = i;
    }
  }
  CHECK_MESSAGE(worst <= 0.0, "element ", at, ": brecq ", a[at], ", torch ", w[at]);
}

}  // namespace brecq::golden_ops

namespace {

using namespace brecq;
using brecq::golden_ops::check_close;
using brecq::golden_ops::golden;
using Inputs = std::vector<Tensor>;

/// One input: uniform in [lo, hi) (hi - lo a power of two, see the script) or (quarters)
/// multiples of 0.25 in [-5, 5]; `grad` says whether it takes a gradient.
struct Spec {
  Shape shape;
  float lo = -1.0f, hi = 1.0f;
  bool grad = true;
  bool quarters = false;
};
Spec U(Shape s, float lo = -1.0f, float hi = 1.0f, bool grad = true) {
  return {std::move(s), lo, hi, grad};
}
Spec Q(Shape s) { return {std::move(s), 0, 0, true, true}; }

struct GoldenCase {
  std::string name;
  std::vector<Spec> inputs;
  std::function<Tensor(const Inputs&)> f;
  std::vector<size_t> mutated = {};  ///< inputs the op updates in place (running statistics)
  double tol = 1e-5;  ///< rtol = atol; 1e-4 where the op rounds differently by design
};

Tensor make_input(const Spec& s, Rng& rng) {
  if (!s.quarters) {
    const float width = s.hi - s.lo;
    REQUIRE_MESSAGE(std::exp2(std::round(std::log2(width))) == width, "width ", width,
                    " is not a power of two");
    return Tensor::uniform(s.shape, rng, s.lo, s.hi);
  }
  std::vector<float> v(static_cast<size_t>(s.shape.numel()));
  for (float& x : v) x = static_cast<float>(static_cast<int>(rng.below(41)) - 20) * 0.25f;
  return Tensor::from_vector(s.shape, v);
}

std::vector<Spec> bn_specs() {
  return {U({3, 4, 2, 3}), U({4}, 0.5f, 1.5f), U({4}), U({4}, -0.5f, 0.5f, false),
          U({4}, 0.5f, 1.5f, false)};
}

std::vector<GoldenCase> golden_cases() {
  using I = const Inputs&;
  auto conv = [](Conv2dParams p) {
    return [p](I x) { return conv2d(x[0], x[1], x.size() > 2 ? x[2] : Tensor(), p); };
  };
  auto bn = [](bool training) {
    return [training](I x) {
      return batch_norm2d(x[0], x[1], x[2], x[3], x[4], {.training = training});
    };
  };
  const Spec logits35 = U({3, 5}, -2, 2), logits36 = U({3, 6}, -2, 2);
  const Spec data34 = U({3, 4}, -1, 1, false), data4d = U({2, 3, 2, 2}, -1, 1, false);
  // clang-format off
  return {
      // elementwise, with broadcasting
      {"add_bcast_4d", {U({2, 3, 4, 5}), U({1, 3, 1, 1})}, [](I x) { return x[0] + x[1]; }},
      {"add_bcast_rank", {U({5}), U({2, 1, 5})}, [](I x) { return x[0] + x[1]; }},
      {"sub_scalar_tensor", {U({3, 4}), U({})}, [](I x) { return x[0] - x[1]; }},
      {"sub_bcast_left", {U({1, 4}), U({3, 4})}, [](I x) { return x[0] - x[1]; }},
      {"mul_bcast_4d", {U({2, 3, 4, 5}), U({1, 3, 1, 1})}, [](I x) { return x[0] * x[1]; }},
      {"mul_outer", {U({3, 1}), U({1, 4})}, [](I x) { return x[0] * x[1]; }},
      {"div_bcast", {U({2, 3, 4}), U({3, 1}, 0.5f, 1.5f)}, [](I x) { return x[0] / x[1]; }},
      {"maximum_bcast", {U({2, 3, 4}), U({3, 4})}, [](I x) { return maximum(x[0], x[1]); }},
      {"neg", {U({3, 7})}, [](I x) { return neg(x[0]); }},
      {"relu", {U({3, 7})}, [](I x) { return relu(x[0]); }},
      {"relu6", {U({3, 7}, -4, 12)}, [](I x) { return relu6(x[0]); }},
      {"sigmoid", {U({3, 7}, -4, 4)}, [](I x) { return sigmoid(x[0]); }},
      {"clamp", {U({3, 7})}, [](I x) { return clamp(x[0], -0.5f, 0.5f); }},
      {"abs", {U({3, 7})}, [](I x) { return abs(x[0]); }},
      {"pow_frac", {U({3, 7}, 0.5f, 1.5f)}, [](I x) { return pow(x[0], 2.5f); }},
      {"pow_int", {U({3, 7})}, [](I x) { return pow(x[0], 3.0f); }},
      {"square", {U({3, 7})}, [](I x) { return square(x[0]); }},
      {"sqrt", {U({3, 7}, 0.5f, 2.5f)}, [](I x) { return sqrt(x[0]); }},
      {"exp", {U({3, 7})}, [](I x) { return exp(x[0]); }},
      {"log", {U({3, 7}, 0.5f, 2.5f)}, [](I x) { return log(x[0]); }},
      {"round", {Q({4, 10})}, [](I x) { return round(x[0]); }},
      {"floor", {Q({4, 10})}, [](I x) { return floor(x[0]); }},
      {"round_ste", {Q({4, 10})}, [](I x) { return round_ste(x[0]); }},
      {"floor_ste", {U({4, 10}, -4, 4)}, [](I x) { return floor_ste(x[0]); }},
      // gradients exactly at the kinks follow torch's conventions
      {"relu_at_kinks", {Q({4, 25})}, [](I x) { return relu(x[0]); }},
      {"relu6_at_kinks", {Q({4, 25})}, [](I x) { return relu6(x[0] + 1.0f); }},
      {"clamp_at_kinks", {Q({4, 25})}, [](I x) { return clamp(x[0], -0.5f, 0.5f); }},
      {"abs_at_kinks", {Q({4, 25})}, [](I x) { return abs(x[0]); }},
      // reductions
      {"sum_all", {U({3, 4, 5})}, [](I x) { return sum(x[0]); }},
      {"mean_all", {U({3, 4, 5})}, [](I x) { return mean(x[0]); }},
      {"sum_dims", {U({2, 3, 4, 5})}, [](I x) { return sum(x[0], {1, 3}); }},
      {"sum_dims_keepdim", {U({2, 3, 4})}, [](I x) { return sum(x[0], {0, 2}, true); }},
      {"mean_dims_negative", {U({2, 3, 4, 5})}, [](I x) { return mean(x[0], {-1, 0}); }},
      // shape
      {"reshape", {U({2, 3, 4})}, [](I x) { return reshape(x[0], {4, -1}); }},
      {"flatten", {U({2, 3, 2, 2})}, [](I x) { return flatten(x[0]); }},
      {"narrow", {U({3, 5, 4})}, [](I x) { return narrow(x[0], 1, 1, 3); }},
      {"subsample_2x2", {U({2, 3, 5, 7})}, [](I x) { return subsample(x[0], 2, 2); }},
      {"subsample_1x3", {U({1, 2, 4, 7})}, [](I x) { return subsample(x[0], 1, 3); }},
      {"pad_channels", {U({2, 3, 2, 3})}, [](I x) { return pad_channels(x[0], 1, 2); }},
      {"cat_dim1", {U({2, 3, 4}), U({2, 1, 4}), U({2, 2, 4})}, [](I x) { return cat(x, 1); }},
      {"cat_dim0", {U({1, 3}), U({2, 3})}, [](I x) { return cat(x, 0); }},
      // matmul / linear
      {"matmul", {U({3, 5}), U({5, 4})}, [](I x) { return matmul(x[0], x[1]); }},
      {"matmul_tiles", {U({9, 20}), U({20, 35})}, [](I x) { return matmul(x[0], x[1]); }},
      {"linear", {U({4, 6}), U({3, 6}), U({3})}, [](I x) { return linear(x[0], x[1], x[2]); }},
      {"linear_nobias_batch1", {U({1, 7}), U({5, 7})}, [](I x) { return linear(x[0], x[1]); }},
      // conv2d: x, w[, bias]
      {"conv_basic", {U({2, 3, 5, 5}), U({4, 3, 3, 3}), U({4})}, conv({})},
      {"conv_stride2_pad1", {U({2, 3, 7, 6}), U({4, 3, 3, 3}), U({4})},
       conv({.stride = 2, .padding = 1})},
      {"conv_pad2", {U({1, 2, 4, 5}), U({2, 2, 3, 3})}, conv({.padding = 2})},
      {"conv_pad2_dilation2", {U({1, 2, 7, 7}), U({3, 2, 3, 3}), U({3})},
       conv({.padding = 2, .dilation = 2})},
      {"conv_groups2", {U({2, 4, 5, 5}), U({6, 2, 3, 3}), U({6})},
       conv({.padding = 1, .groups = 2})},
      {"conv_depthwise", {U({2, 3, 6, 5}), U({3, 1, 3, 3}), U({3})},
       conv({.stride = 2, .padding = 1, .groups = 3})},
      {"conv_depthwise_x2", {U({1, 2, 5, 5}), U({4, 1, 3, 3})}, conv({.padding = 1, .groups = 2})},
      {"conv_1x1_stride2_batch1", {U({1, 3, 9, 7}), U({5, 3, 1, 1}), U({5})}, conv({.stride = 2})},
      {"conv_rect_kernel", {U({1, 3, 6, 7}), U({4, 3, 2, 3})}, conv({.padding = 1})},
      // 3x3 stride 1 with 8+ channels runs Winograd F(4x4, 3x3): its transforms scale values by
      // up to 8 and 1/24, so it carries ~1e-5 relative rounding (weight gradient most).
      {"conv_wide", {U({2, 8, 6, 19}), U({16, 8, 3, 3}), U({16})}, conv({.padding = 1}), {}, 1e-4},
      // pooling (24-bit uniform inputs: no ties inside a window)
      {"max_pool_k2", {U({2, 3, 6, 5})}, [](I x) { return max_pool2d(x[0], {.kernel = 2}); }},
      {"max_pool_k3_s2_p1", {U({1, 2, 7, 6})},
       [](I x) { return max_pool2d(x[0], {.kernel = 3, .stride = 2, .padding = 1}); }},
      {"avg_pool_k3_s2_p1", {U({2, 2, 7, 6})},
       [](I x) { return avg_pool2d(x[0], {.kernel = 3, .stride = 2, .padding = 1}); }},
      {"avg_pool_k2_s1", {U({1, 3, 4, 5})},
       [](I x) { return avg_pool2d(x[0], {.kernel = 2, .stride = 1}); }},
      {"global_avg_pool", {U({2, 3, 4, 5})}, [](I x) { return global_avg_pool(x[0]); }},
      // batch norm: x, weight, bias, running_mean, running_var (updated in training)
      {"batch_norm_train", bn_specs(), bn(true), {3, 4}},
      {"batch_norm_eval", bn_specs(), bn(false)},
      // softmax family and losses
      {"log_softmax", {logits35}, [](I x) { return log_softmax(x[0]); }},
      {"softmax", {logits35}, [](I x) { return softmax(x[0]); }},
      {"cross_entropy", {U({4, 5}, -2, 2)}, [](I x) { return cross_entropy(x[0], {2, 0, 4, 1}); }},
      {"kl_div", {logits36, logits36}, [](I x) { return kl_div(x[0], x[1]); }},
      {"mse_loss", {U({3, 4}), U({3, 4})}, [](I x) { return mse_loss(x[0], x[1]); }},
      // BRECQ's lp_loss: channel sum, mean over batch and positions; gradient into pred only
      {"lp_loss", {U({3, 4}), data34}, [](I x) { return lp_loss(x[0], x[1], 2.4f); }},
      {"lp_loss_p2_4d", {U({2, 3, 2, 2}), data4d}, [](I x) { return lp_loss(x[0], x[1], 2.0f); }},
      {"lp_loss_weighted_4d", {U({2, 3, 2, 2}), data4d, U({2, 3, 2, 2}, 0.5f, 1.5f, false)},
       [](I x) { return lp_loss(x[0], x[1], 2.4f, x[2]); }},
  };
  // clang-format on
}

}  // namespace

TEST_CASE("brecq::Rng matches the script's splitmix64 port") {
  Rng rng(golden_ops::fnv1a64("rng"));
  Tensor u = Tensor::empty({8});
  for (int i = 0; i < 8; ++i) u.data<float>()[i] = rng.uniform();
  CHECK(u.to_vector() == golden("rng/uniform").to_vector());
}

TEST_CASE("every op matches PyTorch forward and backward") {
  for (const GoldenCase& c : golden_cases()) {
    CAPTURE(c.name);
    Rng rng(golden_ops::fnv1a64(c.name));
    Inputs xs;
    std::vector<float> sums;
    for (const Spec& s : c.inputs) {
      xs.push_back(make_input(s, rng));
      double acc = 0.0;
      for (float v : xs.back().to_vector()) acc += v;
      sums.push_back(static_cast<float>(acc));
      if (s.grad) xs.back().set_requires_grad(true);
    }
    // Equal input sums mean this table and the script's agree on the inputs.
    check_close(Tensor::from_vector({static_cast<int64_t>(sums.size())}, sums),
                c.name + "/input_sums", 1e-6, 1e-6);
    Tensor out = c.f(xs);
    check_close(out, c.name + "/out", c.tol, c.tol);
    backward(out, Tensor::uniform(out.shape(), rng, 0.5f, 1.5f));
    for (size_t i = 0; i < xs.size(); ++i) {
      if (!c.inputs[i].grad) continue;
      Tensor g = xs[i].grad().defined() ? xs[i].grad() : Tensor::zeros(xs[i].shape());
      check_close(g, c.name + "/grad" + std::to_string(i), c.tol, c.tol);
    }
    for (size_t i : c.mutated)
      check_close(xs[i], c.name + "/after" + std::to_string(i), c.tol, c.tol);
  }
}

TEST_CASE("round is half-to-even like torch.round") {
  Tensor x = Tensor::from_vector({8}, {-2.5f, -1.5f, -0.5f, 0.5f, 1.5f, 2.5f, 3.5f, 2.4999999f});
  CHECK(round(x).to_vector() == std::vector<float>{-2, -2, -0.0f, 0, 2, 2, 4, 2});
  CHECK(round_ste(x).to_vector() == round(x).to_vector());
  CHECK(floor(x).to_vector() == std::vector<float>{-3, -2, -1, 0, 1, 2, 3, 2});
}
