#pragma once
// A float64 interpreter of a runtime::Graph, one image at a time with direct
// loops: the exact arithmetic the integer runtime must reproduce (its integer
// accumulators and 31-bit multipliers differ from it only at rounding ties
// closer than ~1e-9 of a level). The input is quantized in float32 exactly as
// the simulation's fake quantizer does, so all three see the same levels.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "brecq/runtime/graph.hpp"

namespace brecq::test {

struct RefTensor {
  int64_t c = 0, h = 0, w = 0;
  std::vector<double> v{};  ///< [c][h][w]
};

inline void ref_quantize(const runtime::Graph& g, int p, RefTensor& x) {
  if (p < 0) return;
  const runtime::Point& pt = g.points[static_cast<size_t>(p)];
  for (double& v : x.v) {
    const double q = std::clamp(std::nearbyint(v / pt.scale) + pt.zero_point, 0.0,
                                static_cast<double>(pt.qmax()));
    v = (q - pt.zero_point) * static_cast<double>(pt.scale);
  }
}

inline void ref_activation(runtime::Activation a, RefTensor& x) {
  if (a == runtime::Activation::none) return;
  for (double& v : x.v)
    v = a == runtime::Activation::relu ? std::max(v, 0.0) : std::clamp(v, 0.0, 6.0);
}

inline RefTensor ref_layer(const runtime::Layer& l, const RefTensor& x) {
  const bool conv = l.kind == runtime::LayerKind::conv;
  RefTensor y{
      l.out_channels,
      conv ? runtime::conv_output_size(x.h, l.kernel_h, l.stride, l.padding, l.dilation) : 1,
      conv ? runtime::conv_output_size(x.w, l.kernel_w, l.stride, l.padding, l.dilation) : 1};
  y.v.assign(static_cast<size_t>(y.c * y.h * y.w), 0.0);
  const int64_t cin_g = l.in_channels / l.groups, cout_g = l.out_channels / l.groups;
  for (int64_t o = 0; o < l.out_channels; ++o) {
    const double s = l.weight_scale[static_cast<size_t>(o)];
    const double z = l.weight_zero_point[static_cast<size_t>(o)];
    const int64_t c0 = o / cout_g * cin_g;
    for (int64_t oy = 0; oy < y.h; ++oy)
      for (int64_t ox = 0; ox < y.w; ++ox) {
        double acc = l.bias.empty() ? 0.0 : l.bias[static_cast<size_t>(o)];
        for (int64_t ci = 0; ci < cin_g; ++ci)
          for (int64_t ky = 0; ky < l.kernel_h; ++ky)
            for (int64_t kx = 0; kx < l.kernel_w; ++kx) {
              const int64_t iy = oy * l.stride - l.padding + ky * l.dilation;
              const int64_t ix = ox * l.stride - l.padding + kx * l.dilation;
              if (iy < 0 || iy >= x.h || ix < 0 || ix >= x.w) continue;
              const int64_t k = ((o * cin_g + ci) * l.kernel_h + ky) * l.kernel_w + kx;
              acc += (l.level(k) - z) * s *
                     x.v[static_cast<size_t>(((c0 + ci) * x.h + iy) * x.w + ix)];
            }
        y.v[static_cast<size_t>((o * y.h + oy) * y.w + ox)] = acc;
      }
  }
  ref_activation(l.activation, y);
  return y;
}

/// Logits of one image (float [C, H, W], normalised) under graph g.
inline std::vector<double> ref_forward(const runtime::Graph& g, const float* image, int64_t H,
                                       int64_t W) {
  const int64_t C = g.options.in_channels;
  RefTensor x{C, H, W, std::vector<double>(static_cast<size_t>(C * H * W))};
  const runtime::Point& in = g.points[static_cast<size_t>(g.input_point)];
  for (size_t i = 0; i < x.v.size(); ++i) {
    const float q =
        std::clamp(std::nearbyint(image[i] / in.scale) + static_cast<float>(in.zero_point), 0.0f,
                   static_cast<float>(in.qmax()));
    x.v[i] = (static_cast<double>(q) - in.zero_point) * static_cast<double>(in.scale);
  }
  for (const runtime::Block& b : g.blocks) {
    RefTensor y = x;
    if (b.global_pool_before) {
      y = {x.c, 1, 1, std::vector<double>(static_cast<size_t>(x.c), 0.0)};
      for (int64_t c = 0; c < x.c; ++c) {
        for (int64_t i = 0; i < x.h * x.w; ++i)
          y.v[static_cast<size_t>(c)] += x.v[static_cast<size_t>(c * x.h * x.w + i)];
        y.v[static_cast<size_t>(c)] /= static_cast<double>(x.h * x.w);
      }
    }
    for (const runtime::Layer& l : b.layers) {
      y = ref_layer(l, y);
      ref_quantize(g, l.act_point, y);
    }
    if (b.shortcut == runtime::ShortcutKind::identity)
      for (size_t i = 0; i < y.v.size(); ++i) y.v[i] += x.v[i];
    if (b.shortcut == runtime::ShortcutKind::option_a)
      for (int64_t c = 0; c < y.c; ++c) {
        const int64_t sc = c - b.option_a_pad;
        if (sc < 0 || sc >= x.c) continue;
        for (int64_t oy = 0; oy < y.h; ++oy)
          for (int64_t ox = 0; ox < y.w; ++ox)
            y.v[static_cast<size_t>((c * y.h + oy) * y.w + ox)] += x.v[static_cast<size_t>(
                (sc * x.h + oy * b.option_a_stride) * x.w + ox * b.option_a_stride)];
      }
    if (b.shortcut == runtime::ShortcutKind::projection) {
      RefTensor s = x;
      for (const runtime::Layer& l : b.shortcut_layers) s = ref_layer(l, s);
      for (size_t i = 0; i < y.v.size(); ++i) y.v[i] += s.v[i];
    }
    ref_activation(b.out_activation, y);
    if (b.max_pool_after) {
      const runtime::MaxPool& mp = *b.max_pool_after;
      RefTensor p{y.c, runtime::conv_output_size(y.h, mp.kernel, mp.stride, mp.padding, 1),
                  runtime::conv_output_size(y.w, mp.kernel, mp.stride, mp.padding, 1)};
      p.v.assign(static_cast<size_t>(p.c * p.h * p.w), -INFINITY);
      for (int64_t c = 0; c < p.c; ++c)
        for (int64_t oy = 0; oy < p.h; ++oy)
          for (int64_t ox = 0; ox < p.w; ++ox)
            for (int64_t ky = 0; ky < mp.kernel; ++ky)
              for (int64_t kx = 0; kx < mp.kernel; ++kx) {
                const int64_t iy = oy * mp.stride - mp.padding + ky,
                              ix = ox * mp.stride - mp.padding + kx;
                if (iy < 0 || iy >= y.h || ix < 0 || ix >= y.w) continue;
                double& d = p.v[static_cast<size_t>((c * p.h + oy) * p.w + ox)];
                d = std::max(d, y.v[static_cast<size_t>((c * y.h + iy) * y.w + ix)]);
              }
      y = p;
    }
    ref_quantize(g, b.out_point, y);
    x = std::move(y);
  }
  return x.v;
}

}  // namespace brecq::test
