// runtime::Executor on graphs built by hand: a tiny CIFAR ResNet (identity and option-A
// shortcuts), an ImageNet-style ResNet (7x7 stem + max pool, bottleneck with projection) and a
// MobileNetV2-like net (depthwise, inverted residuals, ReLU6, final 1x1 conv block). Every SIMD
// execution equals the scalar reference execution bit for bit, for 1..3 threads; the integer
// logits agree with a float simulation of the same graph (fake quantization at every point,
// which also calibrated the points); every error path is checked. (What the runtime headers
// include is checked by test_headers.cpp.)
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "brecq/runtime/executor.hpp"

namespace {

namespace rt = brecq::runtime;
namespace q = brecq::kernels::qint;

struct Builder {
  std::mt19937 gen;
  rt::Graph g;
  int w_bits = 4, a_bits = 4;

  explicit Builder(uint32_t seed) : gen(seed) {}

  int point(int bits) {
    rt::Point p;
    p.bits = bits;
    p.scale = 0.0f;  // calibrated by the float simulation
    p.enabled = true;
    g.points.push_back(p);
    return static_cast<int>(g.points.size()) - 1;
  }

  rt::Layer layer(const std::string& name, rt::LayerKind kind, int64_t cin, int64_t cout, int64_t k,
                  int64_t stride, int64_t pad, int64_t groups, rt::Activation act, int bits) {
    rt::Layer l;
    l.name = name;
    l.kind = kind;
    l.in_channels = cin;
    l.out_channels = cout;
    l.kernel_h = l.kernel_w = k;
    l.stride = stride;
    l.padding = pad;
    l.groups = groups;
    l.activation = act;
    l.weight_bits = bits;
    const int32_t qmax = (1 << bits) - 1;
    const int64_t fan_in = cin / groups * k * k;
    std::vector<uint8_t> levels(static_cast<size_t>(l.weight_count()));
    std::uniform_int_distribution<int32_t> lv(0, qmax);
    for (auto& v : levels) v = static_cast<uint8_t>(lv(gen));
    l.weight_levels = rt::pack_levels(levels.data(), l.weight_count(), bits);
    std::uniform_real_distribution<float> u(0.7f, 1.3f), b(-0.2f, 0.2f);
    for (int64_t o = 0; o < cout; ++o) {
      l.weight_scale.push_back(u(gen) * 3.4f /
                               (static_cast<float>(qmax) * std::sqrt(float(fan_in))));
      l.weight_zero_point.push_back(qmax / 2 + static_cast<int32_t>(gen() % 3) - 1);
      l.bias.push_back(b(gen));
    }
    return l;
  }
  rt::Layer conv(const std::string& name, int64_t cin, int64_t cout, int64_t k, int64_t stride,
                 rt::Activation act, int64_t groups = 1, int bits = 0) {
    return layer(name, rt::LayerKind::conv, cin, cout, k, stride, k / 2, groups, act,
                 bits ? bits : w_bits);
  }

  /// Gives main-path layers their points (all but the last), the block its out point.
  void add(rt::Block b) {
    for (size_t i = 0; i + 1 < b.layers.size(); ++i) b.layers[i].act_point = point(a_bits);
    if (b.kind != rt::BlockKind::head) b.out_point = point(a_bits);
    g.blocks.push_back(std::move(b));
  }

  void head(int64_t cin, int64_t classes) {
    rt::Block h;
    h.name = "fc";
    h.kind = rt::BlockKind::head;
    h.global_pool_before = true;
    h.layers.push_back(
        layer("fc", rt::LayerKind::linear, cin, classes, 1, 1, 0, 1, rt::Activation::none, 8));
    add(std::move(h));
  }
};

rt::Block block(const std::string& name, rt::BlockKind kind, std::vector<rt::Layer> layers,
                rt::ShortcutKind sc = rt::ShortcutKind::none,
                rt::Activation out = rt::Activation::none) {
  rt::Block b;
  b.name = name;
  b.kind = kind;
  b.layers = std::move(layers);
  b.shortcut = sc;
  b.out_activation = out;
  return b;
}

void start(Builder& B, const std::string& arch, int64_t classes, int64_t h, int64_t w) {
  B.g.options.arch = arch;
  B.g.options.num_classes = classes;
  B.g.options.in_channels = 3;
  B.g.options.input_height = h;
  B.g.options.input_width = w;
  B.g.input_point = B.point(8);
}

rt::Graph cifar_resnet(uint32_t seed, int wb, int ab) {
  Builder B(seed);
  B.w_bits = wb;
  B.a_bits = ab;
  using A = rt::Activation;
  start(B, "tiny_cifar_resnet", 10, 12, 10);
  B.add(block("conv1", rt::BlockKind::stem, {B.conv("conv1", 3, 16, 3, 1, A::relu, 1, 8)}));
  B.add(block("layer1.0", rt::BlockKind::basic,
              {B.conv("layer1.0.conv1", 16, 16, 3, 1, A::relu),
               B.conv("layer1.0.conv2", 16, 16, 3, 1, A::none)},
              rt::ShortcutKind::identity, A::relu));
  rt::Block down = block("layer2.0", rt::BlockKind::basic,
                         {B.conv("layer2.0.conv1", 16, 32, 3, 2, A::relu),
                          B.conv("layer2.0.conv2", 32, 32, 3, 1, A::none)},
                         rt::ShortcutKind::option_a, A::relu);
  down.option_a_stride = 2;
  down.option_a_pad = 8;
  B.add(std::move(down));
  B.head(32, 10);
  return B.g;
}

rt::Graph imagenet_resnet(uint32_t seed, int wb, int ab) {
  Builder B(seed);
  B.w_bits = wb;
  B.a_bits = ab;
  using A = rt::Activation;
  start(B, "tiny_resnet", 7, 29, 27);
  rt::Block stem =
      block("conv1", rt::BlockKind::stem, {B.conv("conv1", 3, 24, 7, 2, A::relu, 1, 8)});
  stem.max_pool_after = rt::MaxPool{};
  B.add(std::move(stem));
  rt::Block bott = block("layer1.0", rt::BlockKind::bottleneck,
                         {B.conv("layer1.0.conv1", 24, 16, 1, 1, A::relu),
                          B.conv("layer1.0.conv2", 16, 16, 3, 2, A::relu),
                          B.conv("layer1.0.conv3", 16, 64, 1, 1, A::none)},
                         rt::ShortcutKind::projection, A::relu);
  bott.shortcut_layers.push_back(B.conv("layer1.0.downsample.0", 24, 64, 1, 2, A::none));
  B.add(std::move(bott));
  B.add(block("layer1.1", rt::BlockKind::basic,
              {B.conv("layer1.1.conv1", 64, 64, 3, 1, A::relu, 4),
               B.conv("layer1.1.conv2", 64, 64, 3, 1, A::none)},
              rt::ShortcutKind::identity, A::relu));
  B.head(64, 7);
  return B.g;
}

rt::Graph mobilenet(uint32_t seed, int wb, int ab) {
  Builder B(seed);
  B.w_bits = wb;
  B.a_bits = ab;
  using A = rt::Activation;
  start(B, "tiny_mobilenet_v2", 5, 16, 18);
  B.add(block("features.0", rt::BlockKind::stem,
              {B.conv("features.0.0", 3, 16, 3, 2, A::relu6, 1, 8)}));
  B.add(block("features.1", rt::BlockKind::inverted_residual,
              {B.conv("features.1.conv.0.0", 16, 16, 3, 1, A::relu6, 16),
               B.conv("features.1.conv.1", 16, 8, 1, 1, A::none)}));
  B.add(block("features.2", rt::BlockKind::inverted_residual,
              {B.conv("features.2.conv.0.0", 8, 48, 1, 1, A::relu6),
               B.conv("features.2.conv.1.0", 48, 48, 3, 2, A::relu6, 48),
               B.conv("features.2.conv.2", 48, 24, 1, 1, A::none)}));
  B.add(block("features.3", rt::BlockKind::inverted_residual,
              {B.conv("features.3.conv.0.0", 24, 72, 1, 1, A::relu6),
               B.conv("features.3.conv.1.0", 72, 72, 3, 1, A::relu6, 72),
               B.conv("features.3.conv.2", 72, 24, 1, 1, A::none)},
              rt::ShortcutKind::identity));
  B.add(block("features.4", rt::BlockKind::conv, {B.conv("features.4.0", 24, 40, 1, 1, A::relu6)}));
  B.head(40, 5);
  return B.g;
}

// ---- float simulation of a graph (NHWC), calibrating uncalibrated points by min-max ---------

struct FTensor {
  int64_t n = 0, h = 0, w = 0, c = 0;
  std::vector<float> v;
};

float act(rt::Activation a, float x) {
  if (a == rt::Activation::relu) return std::max(x, 0.0f);
  if (a == rt::Activation::relu6) return std::min(std::max(x, 0.0f), 6.0f);
  return x;
}

void fake_quant(rt::Point& p, std::vector<float>& v) {
  if (p.scale == 0.0f) {
    float mn = 0.0f, mx = 0.0f;
    for (float x : v) mn = std::min(mn, x), mx = std::max(mx, x);
    p.scale = std::max((mx - mn) / static_cast<float>(p.qmax()), 1e-6f);
    p.zero_point = static_cast<int32_t>(std::nearbyint(-mn / p.scale));
  }
  for (float& x : v) {
    const float qv = std::min(std::max(std::nearbyint(x / p.scale) + float(p.zero_point), 0.0f),
                              float(p.qmax()));
    x = (qv - float(p.zero_point)) * p.scale;
  }
}

FTensor conv_f(const rt::Layer& l, const FTensor& x) {
  FTensor y;
  y.n = x.n;
  y.c = l.out_channels;
  y.h = (x.h + 2 * l.padding - l.kernel_h) / l.stride + 1;
  y.w = (x.w + 2 * l.padding - l.kernel_w) / l.stride + 1;
  y.v.assign(static_cast<size_t>(y.n * y.h * y.w * y.c), 0.0f);
  const int64_t cin_g = l.in_channels / l.groups, cout_g = l.out_channels / l.groups;
  for (int64_t n = 0; n < y.n; ++n)
    for (int64_t oh = 0; oh < y.h; ++oh)
      for (int64_t ow = 0; ow < y.w; ++ow)
        for (int64_t o = 0; o < y.c; ++o) {
          double acc = l.bias.empty() ? 0.0 : l.bias[static_cast<size_t>(o)];
          const int64_t grp = o / cout_g;
          for (int64_t ci = 0; ci < cin_g; ++ci)
            for (int64_t kh = 0; kh < l.kernel_h; ++kh)
              for (int64_t kw = 0; kw < l.kernel_w; ++kw) {
                const int64_t ih = oh * l.stride - l.padding + kh,
                              iw = ow * l.stride - l.padding + kw;
                if (ih < 0 || ih >= x.h || iw < 0 || iw >= x.w) continue;
                const int64_t widx = ((o * cin_g + ci) * l.kernel_h + kh) * l.kernel_w + kw;
                const float wv = static_cast<float>(l.level(widx) -
                                                    l.weight_zero_point[static_cast<size_t>(o)]) *
                                 l.weight_scale[static_cast<size_t>(o)];
                acc +=
                    static_cast<double>(wv) *
                    x.v[static_cast<size_t>(((n * x.h + ih) * x.w + iw) * x.c + grp * cin_g + ci)];
              }
          y.v[static_cast<size_t>(((n * y.h + oh) * y.w + ow) * y.c + o)] = static_cast<float>(acc);
        }
  return y;
}

/// Float logits of graph g (points calibrated on first use) for NCHW images x.
std::vector<float> simulate(rt::Graph& g, const std::vector<float>& images, int64_t n) {
  const int64_t C = g.options.in_channels, H = g.options.input_height, W = g.options.input_width;
  FTensor x{n, H, W, C, std::vector<float>(static_cast<size_t>(n * H * W * C))};
  for (int64_t b = 0; b < n; ++b)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t p = 0; p < H * W; ++p)
        x.v[static_cast<size_t>((b * H * W + p) * C + c)] =
            images[static_cast<size_t>((b * C + c) * H * W + p)];
  fake_quant(g.points[static_cast<size_t>(g.input_point)], x.v);
  std::vector<float> logits;
  for (rt::Block& b : g.blocks) {
    if (b.kind == rt::BlockKind::head) {
      const rt::Layer& l = b.layers[0];
      for (int64_t s = 0; s < n; ++s)
        for (int64_t o = 0; o < l.out_channels; ++o) {
          double acc = l.bias[static_cast<size_t>(o)];
          for (int64_t c = 0; c < x.c; ++c) {
            double m = 0.0;
            for (int64_t p = 0; p < x.h * x.w; ++p)
              m += x.v[static_cast<size_t>((s * x.h * x.w + p) * x.c + c)];
            m /= static_cast<double>(x.h * x.w);
            acc += m * (l.level(o * x.c + c) - l.weight_zero_point[static_cast<size_t>(o)]) *
                   l.weight_scale[static_cast<size_t>(o)];
          }
          logits.push_back(static_cast<float>(acc));
        }
      break;
    }
    FTensor y = x;
    for (rt::Layer& l : b.layers) {
      y = conv_f(l, y);
      for (float& v : y.v) v = act(l.activation, v);
      if (l.act_point >= 0) fake_quant(g.points[static_cast<size_t>(l.act_point)], y.v);
    }
    if (b.shortcut == rt::ShortcutKind::identity)
      for (size_t i = 0; i < y.v.size(); ++i) y.v[i] += x.v[i];
    if (b.shortcut == rt::ShortcutKind::projection) {
      const FTensor s = conv_f(b.shortcut_layers[0], x);
      for (size_t i = 0; i < y.v.size(); ++i) y.v[i] += s.v[i];
    }
    if (b.shortcut == rt::ShortcutKind::option_a)
      for (int64_t s = 0; s < y.n; ++s)
        for (int64_t oh = 0; oh < y.h; ++oh)
          for (int64_t ow = 0; ow < y.w; ++ow)
            for (int64_t c = 0; c < x.c; ++c)
              y.v[static_cast<size_t>(((s * y.h + oh) * y.w + ow) * y.c + c + b.option_a_pad)] +=
                  x.v[static_cast<size_t>(
                      ((s * x.h + oh * b.option_a_stride) * x.w + ow * b.option_a_stride) * x.c +
                      c)];
    for (float& v : y.v) v = act(b.out_activation, v);
    if (b.max_pool_after) {
      const rt::MaxPool mp = *b.max_pool_after;
      FTensor z{y.n,
                (y.h + 2 * mp.padding - mp.kernel) / mp.stride + 1,
                (y.w + 2 * mp.padding - mp.kernel) / mp.stride + 1,
                y.c,
                {}};
      z.v.assign(static_cast<size_t>(z.n * z.h * z.w * z.c), -1e30f);
      for (int64_t s = 0; s < z.n; ++s)
        for (int64_t oh = 0; oh < z.h; ++oh)
          for (int64_t ow = 0; ow < z.w; ++ow)
            for (int64_t kh = 0; kh < mp.kernel; ++kh)
              for (int64_t kw = 0; kw < mp.kernel; ++kw) {
                const int64_t ih = oh * mp.stride - mp.padding + kh,
                              iw = ow * mp.stride - mp.padding + kw;
                if (ih < 0 || ih >= y.h || iw < 0 || iw >= y.w) continue;
                for (int64_t c = 0; c < z.c; ++c) {
                  float& d = z.v[static_cast<size_t>(((s * z.h + oh) * z.w + ow) * z.c + c)];
                  d = std::max(d, y.v[static_cast<size_t>(((s * y.h + ih) * y.w + iw) * y.c + c)]);
                }
              }
      y = z;
    }
    fake_quant(g.points[static_cast<size_t>(b.out_point)], y.v);
    x = y;
  }
  return logits;
}

std::vector<float> random_images(int64_t n, int64_t h, int64_t w, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n * 3 * h * w));
  for (float& x : v) x = d(gen);
  return v;
}

std::vector<q::Isa> all_isas() {
  std::vector<q::Isa> out;
  for (q::Isa i : {q::Isa::ref, q::Isa::avx2, q::Isa::avx512_vnni})
    if (q::isa_supported(i)) out.push_back(i);
  return out;
}

/// Calibrates g on images, then checks every ISA and thread count against ref, and ref against
/// the float simulation.
void check_graph(rt::Graph g, int64_t n, uint32_t seed, double max_mean_rel) {
  const int64_t H = g.options.input_height, W = g.options.input_width;
  const std::vector<float> images = random_images(n, H, W, seed);
  const std::vector<float> sim = simulate(g, images, n);  // calibrates the points
  rt::validate(g, "test graph");
  rt::validate_integer(g, "test graph");
  rt::Executor ref(g, {.max_batch = n, .threads = 2, .isa = q::Isa::ref});
  std::vector<uint8_t> levels(images.size());
  ref.quantize_input(images.data(), n, levels.data());
  const int64_t K = g.options.num_classes;
  std::vector<float> want(static_cast<size_t>(n * K));
  ref.run(levels.data(), n, want.data());
  for (q::Isa isa : all_isas()) {
    rt::Executor ex(g, {.max_batch = n + 2, .height = H, .width = W, .threads = 3, .isa = isa});
    for (int t : {1, 2, 3}) {
      CAPTURE(q::isa_name(isa));
      CAPTURE(t);
      std::vector<float> got(want.size(), -1.0f);
      ex.set_threads(t);
      ex.run(levels.data(), n, got.data());
      CHECK(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0);
    }
  }
  // Against the float simulation: same predictions mostly, small logit differences.
  double diff = 0.0, mag = 0.0;
  int same = 0;
  for (int64_t s = 0; s < n; ++s) {
    const float* a = want.data() + s * K;
    const float* b = sim.data() + s * K;
    same += std::max_element(a, a + K) - a == std::max_element(b, b + K) - b;
    for (int64_t k = 0; k < K; ++k) diff += std::fabs(a[k] - b[k]), mag += std::fabs(b[k]);
  }
  CAPTURE(diff / mag);
  CAPTURE(same);
  CHECK(diff / mag < max_mean_rel);
  CHECK(same >= n * 3 / 4);
}

}  // namespace

TEST_CASE(
    "Executor: CIFAR ResNet (identity, option A) SIMD equals ref, agrees with the simulation") {
  check_graph(cifar_resnet(1, 4, 4), 5, 11, 0.05);
  check_graph(cifar_resnet(2, 2, 4), 4, 12, 0.05);
  check_graph(cifar_resnet(3, 8, 8), 3, 13, 0.01);
}

TEST_CASE("Executor: ImageNet-style ResNet (7x7 stem, max pool, bottleneck, projection, groups)") {
  check_graph(imagenet_resnet(4, 4, 8), 3, 14, 0.01);
  check_graph(imagenet_resnet(5, 8, 8), 2, 15, 0.01);
}

TEST_CASE("Executor: MobileNetV2-like (depthwise, inverted residuals, ReLU6, 1x1 conv block)") {
  check_graph(mobilenet(6, 4, 4), 4, 16, 0.1);
  check_graph(mobilenet(7, 8, 8), 3, 17, 0.01);
}

TEST_CASE("quantize_levels rounds like the fake quantizer (half to even, clamped)") {
  rt::Point p;
  p.bits = 8;
  p.scale = 0.5f;
  p.zero_point = 10;
  p.enabled = true;
  const std::vector<float> x{0.25f, 0.75f, -0.25f, 1.0f, -100.0f, 1000.0f, -5.0f};
  std::vector<uint8_t> y(x.size());
  rt::quantize_levels(p, x.data(), static_cast<int64_t>(x.size()), y.data());
  CHECK(y == std::vector<uint8_t>{10, 12, 10, 12, 0, 255, 0});
}

TEST_CASE("Executor rejects invalid graphs and arguments") {
  rt::Graph g = cifar_resnet(8, 4, 4);
  const std::vector<float> images = random_images(2, 12, 10, 1);
  (void)simulate(g, images, 2);
  rt::Executor ex(g, {.max_batch = 2, .threads = 2});
  CHECK(ex.num_classes() == 10);
  CHECK(ex.height() == 12);
  std::vector<uint8_t> levels(images.size());
  ex.quantize_input(images.data(), 2, levels.data());
  std::vector<float> logits(20);
  CHECK_THROWS_WITH_AS(ex.run(levels.data(), 3, logits.data()),
                       doctest::Contains("batch 3 outside [1, 2]"), brecq::Error);
  CHECK_THROWS_WITH_AS(ex.set_threads(3), doctest::Contains("threads 3 outside [1, 2]"),
                       brecq::Error);
  CHECK_THROWS_WITH_AS(ex.run(nullptr, 2, logits.data()), doctest::Contains("null input"),
                       brecq::Error);
  CHECK_THROWS_WITH_AS(rt::Executor(g, {.max_batch = 0}), doctest::Contains("max_batch"),
                       brecq::Error);
  CHECK_THROWS_WITH_AS(rt::Executor(g, {.threads = 0}), doctest::Contains("threads"), brecq::Error);
  {
    rt::Graph bad = g;  // a 4-bit input point cannot hold level 200
    bad.points[static_cast<size_t>(bad.input_point)].bits = 4;
    bad.points[static_cast<size_t>(bad.input_point)].zero_point = 3;
    rt::Executor e4(bad, {.max_batch = 2});
    std::vector<uint8_t> big(levels.size(), 200);
    CHECK_THROWS_WITH_AS(e4.run(big.data(), 2, logits.data()), doctest::Contains("exceed 15"),
                         brecq::Error);
  }
  {
    rt::Graph bad = g;
    bad.points[static_cast<size_t>(bad.blocks[1].layers[0].act_point)].enabled = false;
    CHECK_THROWS_WITH_AS(rt::Executor(bad, {}), doctest::Contains("not quantized"), brecq::Error);
  }
  {
    rt::Graph bad = g;  // ReLU before the residual add has no fused form
    bad.blocks[1].layers[1].activation = rt::Activation::relu;
    CHECK_THROWS_WITH_AS(rt::Executor(bad, {}), doctest::Contains("before the residual add"),
                         brecq::Error);
  }
  {
    rt::Graph bad = g;
    bad.options.input_height = 0;
    CHECK_THROWS_WITH_AS(rt::Executor(bad, {}), doctest::Contains("input size unknown"),
                         brecq::Error);
  }
  {
    rt::Graph bad = g;  // a projection shortcut of two layers
    bad.blocks[1].shortcut = rt::ShortcutKind::projection;
    rt::Layer s = bad.blocks[1].layers[1];
    s.name = "sc0";
    s.kernel_h = s.kernel_w = 1;
    s.padding = 0;
    s.weight_levels.assign(static_cast<size_t>(rt::packed_size(s.weight_count(), s.weight_bits)),
                           0);
    bad.blocks[1].shortcut_layers = {s, s};
    bad.blocks[1].shortcut_layers[1].name = "sc1";
    CHECK_THROWS_WITH_AS(rt::Executor(bad, {}), doctest::Contains("supports one conv"),
                         brecq::Error);
  }
}
