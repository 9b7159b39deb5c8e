#pragma once
// Uniform affine quantizer: explicit, serializable state (bits, per-channel scale and zero
// point), range initialisation (min-max or the L2.4 shrink search of the official BRECQ code),
// and fake quantization with straight-through gradients for x and a learned scale (LSQ-style).
#include <algorithm>
#include <cmath>
#include <string>

#include "brecq/autograd/tape.hpp"
#include "brecq/kernels/fake_quant.hpp"
#include "brecq/kernels/lp.hpp"
#include "brecq/tensor/parallel.hpp"

namespace brecq::quant {

enum class RangeInit { minmax, lp_search };

inline RangeInit parse_range_init(const std::string& s) {
  if (s == "minmax") return RangeInit::minmax;
  if (s == "mse" || s == "lp") return RangeInit::lp_search;
  fail("range init: expected minmax or mse, got '", s, "'");
}

struct QuantizerConfig {
  int bits = 8;
  bool per_channel = false;  ///< one scale per output channel (dim 0)
  bool symmetric = false;    ///< zero point fixed at the middle of the grid
  RangeInit init = RangeInit::lp_search;
  float lp = 2.4f;        ///< exponent of the error the search minimises
  int search_steps = 80;  ///< candidates: range * (1 - 0.01 i), i < steps
};

inline void validate(const QuantizerConfig& c, const std::string& what) {
  check(c.bits >= 2 && c.bits <= 8, what, ": bit-width must be in [2, 8], got ", c.bits);
  check(c.search_steps >= 1 && c.search_steps <= 100, what,
        ": search steps must be in [1, 100], got ", c.search_steps);
  check(c.lp > 0, what, ": L_p exponent must be > 0, got ", c.lp);
}

/// Quantizer state: scale [C] (C = 1 per-tensor) and integer zero points [C] stored as floats.
struct UniformQuantizer {
  QuantizerConfig config;
  Tensor scale{};       ///< [C], > 0
  Tensor zero_point{};  ///< [C], integers in [0, 2^bits - 1]

  bool initialized() const { return scale.defined(); }
  float qmax() const { return static_cast<float>((1 << config.bits) - 1); }
  int64_t channels() const { return scale.numel(); }
};

namespace detail {

/// (scale, zero point) that map [mn, mx] onto the integer grid of config.
inline std::pair<float, float> range_params(float mn, float mx, const QuantizerConfig& c) {
  const float qmax = static_cast<float>((1 << c.bits) - 1);
  if (c.symmetric) {
    const float a = std::max(std::fabs(mn), std::fabs(mx));
    mn = -a, mx = a;
  }
  const float s = std::max((mx - mn) / qmax, 1e-8f);
  return {s, std::nearbyint(-mn / s)};
}

/// Best (scale, zero point) for the values p[0..n) under config.
inline std::pair<float, float> search_range(const float* p, int64_t n, const QuantizerConfig& c) {
  float lo = p[0], hi = p[0];
  for (int64_t i = 1; i < n; ++i) lo = std::min(lo, p[i]), hi = std::max(hi, p[i]);
  const float qmax = static_cast<float>((1 << c.bits) - 1);
  auto params = [&](float mn, float mx) { return range_params(mn, mx, c); };
  if (c.init == RangeInit::minmax) return params(std::min(lo, 0.0f), std::max(hi, 0.0f));
  std::pair<float, float> best = params(lo, hi);
  double best_err = INFINITY;
  std::vector<float> xq(static_cast<size_t>(n));
  for (int i = 0; i < c.search_steps; ++i) {
    const float f = 1.0f - 0.01f * static_cast<float>(i);
    auto cand = params(lo * f, hi * f);
    kernels::fake_quant(p, n, cand.first, cand.second, qmax, xq.data());
    const double err = kernels::lp_distance(p, xq.data(), nullptr, n, c.lp);
    if (err < best_err) best_err = err, best = cand;
  }
  return best;
}

}  // namespace detail

/// Initialises the quantizer's range from `x` (dim 0 = channels when per_channel).
inline void init_range(UniformQuantizer& q, const Tensor& x) {
  validate(q.config, "quantizer");
  check(x.numel() > 0, "quantizer range init: empty tensor");
  Tensor xc = x.contiguous();
  const int64_t C = q.config.per_channel ? x.dim(0) : 1, per = x.numel() / C;
  q.scale = Tensor::empty(Shape{C});
  q.zero_point = Tensor::empty(Shape{C});
  const float* p = xc.data<float>();
  float* s = q.scale.data<float>();
  float* z = q.zero_point.data<float>();
  parallel_for(0, C, 1, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c)
      std::tie(s[c], z[c]) = detail::search_range(p + c * per, per, q.config);
  });
}

/// Shape that broadcasts a [C] parameter over x along dim 0 ([C, 1, 1, ...]) or over all of x.
inline Shape channel_shape(const UniformQuantizer& q, const Tensor& x) {
  if (q.channels() == 1) return Shape{1};
  std::vector<int64_t> d(static_cast<size_t>(x.ndim()), 1);
  d[0] = q.channels();
  return Shape(d);
}

/// y = (clamp(round(x / s) + zp, 0, qmax) - zp) * s, differentiable in x (straight-through
/// inside the range, zero outside) and in `scale` when it requires a gradient (LSQ without the
/// gradient scaling, as the official code learns activation step sizes).
inline Tensor fake_quantize(const Tensor& x, const UniformQuantizer& q) {
  check(q.initialized(), "fake_quantize: quantizer not initialised");
  const int64_t C = q.channels();
  check(C == 1 || (x.ndim() >= 1 && x.dim(0) == C), "fake_quantize: ", C,
        " channel scales for input ", x.shape());
  Tensor xc = x.contiguous();
  Tensor out = Tensor::empty(x.shape());
  const int64_t per = x.numel() / C;
  const float qmax = q.qmax();
  const float* px = xc.data<float>();
  const float* ps = q.scale.data<float>();
  const float* pz = q.zero_point.data<float>();
  float* py = out.data<float>();
  for (int64_t c = 0; c < C; ++c)
    kernels::fake_quant(px + c * per, per, ps[c], pz[c], qmax, py + c * per);
  Tensor scale = q.scale, zp = q.zero_point;
  autograd::record("fake_quantize", out, {&x, &scale},
                   [x, xc, scale, zp, qmax, per](const Tensor& g) {
                     Tensor gc = g.contiguous();
                     const float* pg = gc.data<float>();
                     const float* px = xc.data<float>();
                     const int64_t C = scale.numel();
                     Tensor dx = x.requires_grad() ? Tensor::empty(x.shape()) : Tensor();
                     float* pdx = dx.defined() ? dx.data<float>() : nullptr;
                     Tensor dscale = Tensor::zeros(scale.shape());
                     for (int64_t c = 0; c < C; ++c)  // d/ds with the rounding straight-through
                       dscale.data<float>()[c] = static_cast<float>(kernels::fake_quant_backward(
                           px + c * per, pg + c * per, per, scale.data<float>()[c],
                           zp.data<float>()[c], qmax, pdx ? pdx + c * per : nullptr));
                     if (pdx) autograd::accumulate_grad(x, dx);
                     autograd::accumulate_grad(scale, dscale);
                   });
  return out;
}

}  // namespace brecq::quant
