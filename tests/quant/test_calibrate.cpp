#include <doctest/doctest.h>

#include <cmath>
#include <numbers>

#include "../support.hpp"
#include "brecq/quant/calibrate.hpp"
#include "tiny_model.hpp"

using namespace brecq;
using namespace brecq::quant;

// Helpers and cases in a named namespace: the suite is a unity build.
namespace brecq::test::calibrate {

/// The values as a [1, n] tensor (one channel-free batch).
inline Tensor row(const std::vector<float>& v) {
  return Tensor::from_vector(Shape{1, static_cast<int64_t>(v.size())}, v);
}

inline std::vector<float> iota(int64_t from, int64_t to) {
  std::vector<float> v;
  for (int64_t i = from; i < to; ++i) v.push_back(static_cast<float>(i));
  return v;
}

/// The (scale, zero point) q holds for channel c.
inline std::pair<float, float> params(const UniformQuantizer& q, int64_t c = 0) {
  return {q.scale.data<float>()[c], q.zero_point.data<float>()[c]};
}

inline std::pair<float, float> expected(float lo, float hi, const QuantizerConfig& c) {
  return quant::detail::range_params(std::min(lo, 0.0f), std::max(hi, 0.0f), c);
}

/// Decides a quantizer of config c with observer `method` over `batches`.
inline UniformQuantizer observe_all(const std::string& method, const QuantizerConfig& c,
                                    const std::vector<Tensor>& batches,
                                    const ObserverParams& p = {}) {
  std::unique_ptr<RangeObserver> o = observer_factory(method, p)(c);
  for (const Tensor& b : batches) o->observe(b);
  UniformQuantizer q{c};
  o->decide(q);
  return q;
}

/// Sum of squared fake-quantization errors of v under (s, z) on `bits`, in double.
inline double squared_error(const std::vector<float>& v, float s, float z, int bits) {
  const double qmax = (1 << bits) - 1;
  double e = 0;
  for (float x : v) {
    const double l = std::clamp(std::nearbyint(static_cast<double>(x) / s) + z, 0.0, qmax);
    const double d = x - (l - z) * s;
    e += d * d;
  }
  return e;
}

/// relu(N(0, 1)) samples, n of them, plus `outliers` values at `outlier`.
inline std::vector<float> clipped_gaussian(int64_t n, int64_t outliers, float outlier,
                                           uint64_t seed = 3) {
  Rng rng(seed);
  const Tensor g = Tensor::randn(Shape{n}, rng);
  std::vector<float> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(std::max(g.data<float>()[i], 0.0f));
  v.insert(v.end(), static_cast<size_t>(outliers), outlier);
  return v;
}

/// One 1x1 conv (3 -> 2 channels, bias 0, no BatchNorm), the whole model.
inline nn::Model one_conv(const std::vector<float>& w) {
  nn::Model m;
  m.arch = "one_conv";
  m.num_classes = 2;
  nn::Block b{.name = "stem", .kind = nn::BlockKind::stem};
  b.layers.push_back(nn::Layer::make_conv("conv", 3, 2, 1, {}, true, nn::Activation::none));
  b.layers[0].weight = Tensor::from_vector(Shape{2, 3, 1, 1}, w);
  m.blocks = {b};
  m.finalize();
  return m;
}

/// Mean over images and positions of a - b, per channel (dim 1).
inline std::vector<double> channel_mean_difference(const Tensor& a, const Tensor& b) {
  const Tensor x = a.contiguous(), y = b.contiguous();
  const int64_t N = x.dim(0), C = x.dim(1), per = x.numel() / (N * C);
  std::vector<double> out(static_cast<size_t>(C), 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < per; ++i) {
        const int64_t k = (n * C + c) * per + i;
        out[static_cast<size_t>(c)] +=
            (x.data<float>()[k] - y.data<float>()[k]) / static_cast<double>(N * per);
      }
  return out;
}

TEST_CASE("percentile observer: exact order statistics of 0..9999, per tensor and per channel") {
  const QuantizerConfig c{.bits = 8};
  // Two batches: the observer ranks their union. Position 0.9999 * 9999 = 9998.0001.
  const std::vector<Tensor> halves{row(iota(0, 5000)), row(iota(5000, 10000))};
  CHECK(params(observe_all("percentile", c, halves)) == expected(0, 9998.0001f, c));
  CHECK(params(observe_all("percentile", c, halves, {.percentile = 50})) ==
        expected(0, 4999.5f, c));
  CHECK(params(observe_all("percentile", c, halves, {.percentile = 100})) ==
        params(observe_all("minmax", c, halves)));
  // The low end is the (100 - p) percentile: -9999..0 clips to -9998.0001.
  std::vector<float> neg = iota(-9999, 1);
  CHECK(params(observe_all("percentile", c, {row(neg)})) == expected(-9998.0001f, 0, c));
  // Per channel (dim 0): channel 1 is channel 0 doubled.
  std::vector<float> two = iota(0, 10000);
  for (float x : iota(0, 10000)) two.push_back(2 * x);
  const QuantizerConfig pc{.bits = 8, .per_channel = true};
  const UniformQuantizer q =
      observe_all("percentile", pc, {Tensor::from_vector(Shape{2, 10000}, two)});
  CHECK(params(q, 0) == expected(0, 9998.0001f, pc));
  CHECK(params(q, 1).first == doctest::Approx(expected(0, 19996.0002f, pc).first));
}

TEST_CASE("EMA observer: lo = m lo + (1 - m) batch min over two batches") {
  const QuantizerConfig c{.bits = 4};
  const std::vector<Tensor> b{row({-1, 0.5f, 2}), row({-3, 4, 0})};
  const float m = 0.9f;
  CHECK(params(observe_all("ema", c, b, {.momentum = m})) ==
        expected(m * -1 + (1 - m) * -3, m * 2 + (1 - m) * 4, c));
  // Momentum 0: the last batch alone.
  CHECK(params(observe_all("ema", c, b, {.momentum = 0})) == expected(-3, 4, c));
  // Per channel.
  const QuantizerConfig pc{.bits = 4, .per_channel = true};
  const UniformQuantizer q = observe_all("ema", pc,
                                         {Tensor::from_vector(Shape{2, 2}, {0, 1, -2, 2}),
                                          Tensor::from_vector(Shape{2, 2}, {0, 3, -4, 6})},
                                         {.momentum = 0.5f});
  CHECK(params(q, 0) == expected(0, 2, pc));
  CHECK(params(q, 1) == expected(-3, 4, pc));
}

TEST_CASE("MSE observer: the range a brute-force search over the same candidates picks") {
  const std::vector<float> v = clipped_gaussian(20000, 5, 12.0f);
  for (int bits : {2, 4, 8}) {
    CAPTURE(bits);
    const QuantizerConfig c{.bits = bits};
    // Brute force: every shrink factor 1 - 0.01 i of [min, max], squared error in double.
    double best = INFINITY;
    for (int i = 0; i < 80; ++i) {
      const float f = 1.0f - 0.01f * static_cast<float>(i);
      const auto [s, z] = quant::detail::range_params(0.0f, 12.0f * f, c);
      best = std::min(best, squared_error(v, s, z, bits));
    }
    // Two batches: the search runs on their union.
    const std::vector<float> a(v.begin(), v.begin() + 7000), b(v.begin() + 7000, v.end());
    const auto [s, z] = params(observe_all("mse", c, {row(a), row(b)}));
    CHECK(squared_error(v, s, z, bits) == doctest::Approx(best).epsilon(1e-6));
    CHECK(s * static_cast<float>((1 << bits) - 1) < 12.0f);  // the outliers are clipped
  }
}

TEST_CASE("KL observer: a clipped Gaussian with outliers gets a threshold below the max") {
  // relu(N(0, 1)) plus 5 outliers at 20: the histogram spans [0, 20], the bulk [0, ~4.5].
  const std::vector<float> v = clipped_gaussian(200000, 5, 20.0f);
  auto threshold = [&](int bits) {
    const QuantizerConfig c{.bits = bits};
    const auto [s, z] = params(observe_all("kl", c, {row(v)}));
    CHECK(z == 0);  // non-negative data: the range starts at 0
    return s * static_cast<float>((1 << bits) - 1);
  };
  const float t4 = threshold(4), t6 = threshold(6);
  CAPTURE(t4);
  CAPTURE(t6);
  // Far below the max, inside the Gaussian's tail. For comparison, the MSE-optimal clip of a
  // half Gaussian on 16 levels is 2.94 sigma (Banner et al. 2019, 5-bit symmetric).
  MESSAGE("KL thresholds: 4 bits ", t4, ", 6 bits ", t6);
  CHECK(t4 > 2.0f);
  CHECK(t4 < 4.5f);
  CHECK(t6 > t4);  // more levels: less clipping
  CHECK(t6 < 20.0f);
  // Signed data: threshold on |x|, range cut to the observed [min, max].
  Rng rng(5);
  const Tensor g = Tensor::randn(Shape{1, 100000}, rng);
  const UniformQuantizer q = observe_all("kl", {.bits = 4}, {g});
  const float lo = -q.zero_point.item() * q.scale.item(), hi = lo + 15 * q.scale.item();
  CHECK(lo < -1.5f);
  CHECK(hi > 1.5f);
  CHECK(hi < 4.5f);
}

TEST_CASE("observer factory and observers: every error names the input, expected and actual") {
  test::check_error([] { observer_factory("bogus"); },
                    {"observer method", "minmax, ema, percentile, mse, kl", "'bogus'"});
  test::check_error([] { observer_factory("percentile", {.percentile = 0}); },
                    {"percentile", "(0, 100]", "got 0"});
  test::check_error([] { observer_factory("percentile", {.percentile = 100.5f}); },
                    {"(0, 100]", "got 100.5"});
  test::check_error([] { observer_factory("ema", {.momentum = 1}); },
                    {"momentum", "[0, 1)", "got 1"});
  test::check_error([] { observer_factory("mse", {.lp = 0}); }, {"mse observer", "> 0, got 0"});
  test::check_error([] { observer_factory("kl", {.kl_bins = 100}); },
                    {"bins", "[256, 1048576]", "got 100"});
  for (const std::string& m : observer_methods()) {
    CAPTURE(m);
    UniformQuantizer q{{.bits = 4}};
    test::check_error([&] { observer_factory(m)({.bits = 4})->decide(q); }, {"no batch observed"});
  }
  for (const char* m : {"ema", "percentile", "kl"}) {
    CAPTURE(m);
    std::unique_ptr<RangeObserver> o = observer_factory(m)({.bits = 4, .per_channel = true});
    o->observe(Tensor::zeros(Shape{3, 2}));
    test::check_error(
        [&] {
          o->observe(Tensor::zeros(Shape{4, 2}));
        },
        {"3 channels before, now 4"});
  }
}

TEST_CASE("data-free: ranges are the BatchNorm mean + k std, clipped by the ReLU") {
  nn::Model fp = test::tiny_resnet(4);
  auto plant = [&](const std::string& layer, std::vector<float> gamma, std::vector<float> beta) {
    for (nn::Layer* l : fp.layers())
      if (l->name == layer) {
        l->bn->weight = Tensor::from_vector(Shape{4}, gamma);
        l->bn->bias = Tensor::from_vector(Shape{4}, beta);
      }
  };
  plant("conv1", {1, 1, 1, 1}, {0, 0, 0, 0});                      // stem: relu(N(0, 1))
  plant("layer1.0.conv1", {0.5f, 2, -1, 1}, {0.1f, -0.3f, 2, 0});  // max: -0.3 + 3 * 2
  plant("layer1.0.conv2", {2, 2, 2, 2}, {0.5f, 0.5f, 0.5f, 0.5f});
  const float k = 3;
  QuantModel qm(fp, {.w_bits = 4, .a_bits = 4});
  init_activations_from_batchnorm(qm, fp, {.k = k, .input = ActivationRange{-2, 2.5f}});
  auto check_point = [&](const std::string& name, float lo, float hi) {
    CAPTURE(name);
    const UniformQuantizer& q = qm.act_q[static_cast<size_t>(qm.point(name))];
    REQUIRE(q.initialized());
    const auto [s, z] = expected(lo, hi, q.config);
    CHECK(params(q).first == doctest::Approx(s).epsilon(1e-6));
    CHECK(params(q).second == z);
  };
  check_point("stem", 0, 3);  // the stem's output point (8 bits): 0 + 3 * 1
  check_point("layer1.0.conv1", 0, 5.7f);
  // The block output: relu(N(0.5, 4) + relu(N(0, 1))), the sum's moments added.
  const double m = 0.5 + 1 / std::sqrt(2 * std::numbers::pi),
               var = 4 + 0.5 - 1 / (2 * std::numbers::pi);
  check_point("layer1.0", 0, static_cast<float>(m + k * std::sqrt(var)));
  check_point("input", -2, 2.5f);
  // Every enabled point is set; the ranges equal batchnorm_ranges'.
  const auto r = batchnorm_ranges(fp, k);
  for (int p = 0; p < qm.model.num_points(); ++p) {
    CAPTURE(p);
    CHECK(qm.act_q[static_cast<size_t>(p)].initialized());
    CHECK(r[static_cast<size_t>(p)].has_value() == (p != qm.model.input_point));
  }
  // Without an input range, or with a point that no BatchNorm reaches, it refuses by name.
  test::check_error([&] { init_activations_from_batchnorm(qm, fp); },
                    {"activation point 0 (input)", "BatchNormRangeParams::input"});
  nn::Model no_bn = fp.clone();
  no_bn.blocks[1].layers[0].bn.reset();
  test::check_error(
      [&] {
        init_activations_from_batchnorm(qm, no_bn, {.input = ActivationRange{0, 1}});
      },
      {"(layer1.0.conv1)", "layer layer1.0.conv1 has no BatchNorm"});
  test::check_error([&] { batchnorm_ranges(fp, 0); }, {"k (std multiples)", "got 0"});
  test::check_error(
      [&] {
        init_activations_from_batchnorm(qm, test::tiny_resnet(8), {.input = ActivationRange{}});
      },
      {"data-free ranges: layer 0 is 'conv1' [8, 3, 3, 3] in the model", "[4, 3, 3, 3]"});
}

TEST_CASE("data-free: min-max round-to-nearest weights, per channel or one range per tensor") {
  const nn::Model fp = test::tiny_resnet();
  for (bool per_channel : {true, false}) {
    CAPTURE(per_channel);
    QuantModel qm(fp, {.w_bits = 3});
    round_weights_to_nearest(qm, {.per_channel = per_channel});
    for (const nn::Layer* l : qm.model.layers()) {
      const UniformQuantizer& q = qm.weight_q[static_cast<size_t>(l->id)];
      REQUIRE(q.channels() == l->out_channels());
      const Tensor w = l->weight.contiguous();
      const int64_t per = w.numel() / q.channels();
      for (int64_t c = 0; c < q.channels(); ++c) {
        const float* p = w.data<float>() + (per_channel ? c * per : 0);
        const auto [mn, mx] = std::minmax_element(p, p + (per_channel ? per : w.numel()));
        CHECK(params(q, c) == expected(*mn, *mx, q.config));
      }
      // Round-to-nearest: every hard weight is within half a step of the FP one (in range).
      const Tensor h = qm.quantized_weight(*l).contiguous();
      for (int64_t i = 0; i < w.numel(); ++i)
        CHECK(std::fabs(h.data<float>()[i] - w.data<float>()[i]) <=
              0.5f * q.scale.data<float>()[i / per] * 1.0001f);
    }
  }
}

TEST_CASE("bias correction removes a planted output bias") {
  // Channel 0's weights {0, 0.9, 3} on the 2-bit min-max grid {0, 1, 2, 3}: 0.9 -> 1, a weight
  // error of +0.1 on input channel 1; channel 1's {0, 2, 3} are on the grid.
  const nn::Model fp = one_conv({0, 0.9f, 3, 0, 2, 3});
  QuantModel qm(fp, {.w_bits = 2, .first_last_bits = 2, .w_init = RangeInit::minmax});
  Rng rng(9);
  const Tensor x = Tensor::uniform(Shape{16, 3, 4, 4}, rng, 0.0f, 1.0f);
  double mean_x1 = 0;
  for (int64_t n = 0; n < 16; ++n)
    for (int64_t i = 0; i < 16; ++i) mean_x1 += x.data<float>()[(n * 3 + 1) * 16 + i] / 256.0;
  NoGrad ng;
  const std::vector<double> before = channel_mean_difference(qm.forward(x), fp.forward(x));
  CHECK(before[0] == doctest::Approx(0.1 * mean_x1).epsilon(1e-4));
  CHECK(before[1] == doctest::Approx(0.0).epsilon(1e-6));
  const std::vector<BiasShift> rep = correct_biases(qm, x, {.batch = 5});  // 4 batches
  REQUIRE(rep.size() == 1);
  CHECK(rep[0].layer == "conv");
  CHECK(rep[0].max_abs == doctest::Approx(0.1 * mean_x1).epsilon(1e-4));
  const std::vector<double> after = channel_mean_difference(qm.forward(x), fp.forward(x));
  CHECK(std::fabs(after[0]) < 1e-6);
  CHECK(std::fabs(after[1]) < 1e-6);
  CHECK(qm.model.layers()[0]->bias.data<float>()[0] ==
        doctest::Approx(-0.1 * mean_x1).epsilon(1e-4));
  test::check_error(
      [&] {
        correct_biases(qm, Tensor::zeros(Shape{2, 3}));
      },
      {"calibration images", "[N, C, H, W]", "[2, 3]"});
  test::check_error([&] { correct_biases(qm, x, {.batch = 0}); }, {"batch", ">= 1, got 0"});
}

TEST_CASE("bias correction, layer by layer, lowers the output shift of a 2-bit residual net") {
  const nn::Model fp = test::tiny_resnet();
  QuantModel qm(fp, {.w_bits = 2, .first_last_bits = 2});
  Rng rng(4);
  const Tensor x = Tensor::randn(Shape{32, 3, 8, 8}, rng);
  NoGrad ng;
  auto shift = [&] {
    double s = 0;
    for (double d : channel_mean_difference(qm.forward(x), fp.forward(x))) s += std::fabs(d);
    return s;
  };
  const double before = shift();
  const std::vector<BiasShift> rep = correct_biases(qm, x);
  CHECK(rep.size() == qm.model.layers().size());
  CHECK(shift() < 0.5 * before);
}

TEST_CASE("calibrate_activations: every method sets every point; the input keeps min-max") {
  const nn::Model fp = test::tiny_resnet();
  Rng rng(2);
  const std::vector<Tensor> batches{Tensor::randn(Shape{4, 3, 8, 8}, rng),
                                    Tensor::randn(Shape{3, 3, 8, 8}, rng)};
  QuantModel ref(fp, {.w_bits = 4, .a_bits = 4});
  MinMaxObserver in(ref.act_q[0].config);
  for (const Tensor& b : batches) in.observe(b);
  in.decide(ref.act_q[0]);
  for (const std::string& m : observer_methods()) {
    CAPTURE(m);
    QuantModel qm(fp, {.w_bits = 4, .a_bits = 4});
    calibrate_activations(qm, batches, observer_factory(m));
    for (size_t p = 0; p < qm.act_q.size(); ++p) CHECK(qm.act_q[p].initialized());
    CHECK(qm.act_enabled[0]);
    CHECK(params(qm.act_q[0]) == params(ref.act_q[0]));
  }
  QuantModel qm(fp, {.w_bits = 4, .a_bits = 4});
  test::check_error([&] { calibrate_activations(qm, {}, observer_factory("kl")); },
                    {"no calibration batch"});
  test::check_error([&] { calibrate_activations(qm, batches, {}); }, {"no observer factory"});
}

}  // namespace brecq::test::calibrate
