#pragma once
// torchvision's MobileNetV2 (Sandler et al., 2018) with its state-dict names: features.0.0 / .1
// (stem conv + BN), features.N.conv.M... (inverted residuals), features.18.0 / .1 (last 1x1
// conv), classifier.1 (the Linear after the Dropout). ReLU6 everywhere; channel counts scaled by
// width_mult and rounded with torchvision's _make_divisible(v, 8).
//
// Structure: stem Block features.0 (stage 0); one inverted_residual Block per features.N with
// the main path in `layers` (ReLU6 on all but the last, no activation after the add) and an
// identity shortcut when stride 1 and channels are unchanged; a conv Block features.18; a head
// Block (global average pool, classifier.1). `stage` is 1 for features.1 and grows by one at
// every stride-2 block; features.18 shares the last stage, the head gets the next one.
//
// small_input_stem (for 28x28 and 32x32 inputs, as CIFAR adaptations of MobileNetV2 do): the
// stem conv and the first 24-channel block keep stride 1, so the network downsamples by 8, not 32.
#include <algorithm>
#include <array>
#include <cmath>
#include <string>

#include "brecq/nn/resnet.hpp"

namespace brecq::nn {

/// torchvision's _make_divisible: v rounded to the nearest multiple of `divisor` (at least
/// `divisor`), never more than 10 % below v.
inline int64_t make_divisible(double v, int64_t divisor = 8) {
  check(v > 0 && divisor > 0, "make_divisible: expected v > 0 and divisor > 0, got ", v, ", ",
        divisor);
  const double d = static_cast<double>(divisor);
  int64_t r = std::max(divisor, static_cast<int64_t>(v + d / 2) / divisor * divisor);
  if (static_cast<double>(r) < 0.9 * v) r += divisor;
  return r;
}

struct MobileNetV2Options {
  int64_t num_classes = 1000;
  int64_t in_channels = 3;
  double width_mult = 1.0;
  int64_t round_nearest = 8;
  bool small_input_stem = false;  ///< stride-1 stem and first 24-channel block (overall stride 8)
};

namespace detail {

struct InvertedResidualSpec {
  std::string name;  ///< e.g. "features.3"
  int64_t in = 0;
  int64_t out = 0;
  int64_t stride = 1;
  int64_t expand_ratio = 1;
  int stage = 0;
};

/// [1x1 expand conv + BN + ReLU6 unless expand_ratio == 1] -> 3x3 depthwise conv + BN + ReLU6
/// -> 1x1 project conv + BN; identity shortcut when stride 1 and in == out.
inline Block inverted_residual(const InvertedResidualSpec& s) {
  const int64_t hidden = s.in * s.expand_ratio;  // torchvision: int(round(inp * expand_ratio))
  Block b;
  b.name = s.name;
  b.kind = BlockKind::inverted_residual;
  b.stage = s.stage;
  int k = 0;  // index inside <name>.conv
  auto sub = [&](int i, const char* suffix = "") {
    return s.name + ".conv." + std::to_string(i) + suffix;
  };
  if (s.expand_ratio != 1) {
    b.layers.push_back(
        conv_bn({sub(k, ".0"), sub(k, ".1"), s.in, hidden, 1, 1, 1, Activation::relu6}));
    ++k;
  }
  b.layers.push_back(conv_bn(
      {sub(k, ".0"), sub(k, ".1"), hidden, hidden, 3, s.stride, hidden, Activation::relu6}));
  ++k;
  b.layers.push_back(conv_bn({sub(k), sub(k + 1), hidden, s.out, 1, 1, 1, Activation::none}));
  b.shortcut = s.stride == 1 && s.in == s.out ? ShortcutKind::identity : ShortcutKind::none;
  return b;
}

}  // namespace detail

/// MobileNetV2 with zero weights and identity BatchNorms; load weights or use init_kaiming.
inline Model mobilenet_v2(const MobileNetV2Options& o = {}) {
  check(o.width_mult > 0, "mobilenet_v2: width_mult must be > 0, got ", o.width_mult);
  check(o.in_channels >= 1, "mobilenet_v2: in_channels must be >= 1, got ", o.in_channels);
  struct Setting {
    int64_t t, c, n, s;  // expand ratio, output channels, repeats, first stride
  };
  constexpr std::array<Setting, 7> settings{{{1, 16, 1, 1},
                                             {6, 24, 2, 2},
                                             {6, 32, 3, 2},
                                             {6, 64, 4, 2},
                                             {6, 96, 3, 1},
                                             {6, 160, 3, 2},
                                             {6, 320, 1, 1}}};
  const int64_t rn = o.round_nearest;
  const int64_t stem_stride = o.small_input_stem ? 1 : 2;
  int64_t channels = make_divisible(32 * o.width_mult, rn);
  const int64_t last_channels = make_divisible(1280 * std::max(1.0, o.width_mult), rn);

  Model m;
  m.arch = "mobilenet_v2";
  m.num_classes = o.num_classes;
  m.in_channels = o.in_channels;
  m.blocks.push_back(detail::stem_block(
      "features.0", detail::conv_bn({"features.0.0", "features.0.1", o.in_channels, channels, 3,
                                     stem_stride, 1, Activation::relu6})));
  int index = 1, stage = 0;
  for (const Setting& st : settings) {
    const int64_t out = make_divisible(static_cast<double>(st.c) * o.width_mult, rn);
    // the first stride-2 setting (24 channels) is the one a small input stem keeps at stride 1
    const bool keep_full_size = o.small_input_stem && st.c == 24;
    for (int64_t i = 0; i < st.n; ++i, ++index) {
      const int64_t stride = i == 0 && !keep_full_size ? st.s : 1;
      if (index == 1 || stride == 2) ++stage;
      m.blocks.push_back(detail::inverted_residual({.name = "features." + std::to_string(index),
                                                    .in = channels,
                                                    .out = out,
                                                    .stride = stride,
                                                    .expand_ratio = st.t,
                                                    .stage = stage}));
      channels = out;
    }
  }
  const std::string last = "features." + std::to_string(index);
  Block conv_block;
  conv_block.name = last;
  conv_block.kind = BlockKind::conv;
  conv_block.stage = stage;
  conv_block.layers.push_back(detail::conv_bn(
      {last + ".0", last + ".1", channels, last_channels, 1, 1, 1, Activation::relu6}));
  m.blocks.push_back(std::move(conv_block));
  m.blocks.push_back(detail::head_block("classifier.1", last_channels, o.num_classes, stage + 1));
  m.blocks.back().name = "classifier";
  m.finalize();
  return m;
}

}  // namespace brecq::nn
