#pragma once
// AdaRound (Nagel et al. 2020) as used by BRECQ: W_q = s * (clamp(floor(W/s) + h(alpha) + zp,
// 0, qmax) - zp) with the rectified sigmoid h = clamp(sigmoid(alpha) (zeta - gamma) + gamma, 0, 1),
// alpha initialised so that h(alpha) = frac(W/s), and the regulariser sum(1 - |2h - 1|^beta).
#include <cmath>

#include "brecq/ops/elementwise.hpp"
#include "brecq/ops/reduce.hpp"
#include "brecq/quant/quantizer.hpp"

namespace brecq::quant {

struct AdaRoundConstants {
  static constexpr float gamma = -0.1f;
  static constexpr float zeta = 1.1f;
};

/// Learnable rounding of one weight tensor on top of an initialised per-channel quantizer.
struct AdaRound {
  Tensor floor_q;  ///< floor(W / s), same shape as W
  Tensor alpha;    ///< rounding logits, same shape as W (requires_grad while learning)

  static AdaRound init(const Tensor& w, const UniformQuantizer& q) {
    check(q.initialized(), "AdaRound: weight quantizer not initialised");
    AdaRound a;
    Tensor wc = w.contiguous();
    a.floor_q = Tensor::empty(w.shape());
    a.alpha = Tensor::empty(w.shape());
    const int64_t C = q.channels(), per = w.numel() / C;
    const float* pw = wc.data<float>();
    const float* ps = q.scale.data<float>();
    float* pf = a.floor_q.data<float>();
    float* pa = a.alpha.data<float>();
    constexpr float g = AdaRoundConstants::gamma, z = AdaRoundConstants::zeta;
    for (int64_t i = 0; i < w.numel(); ++i) {
      const float v = pw[i] / ps[i / per];
      pf[i] = std::floor(v);
      const float rest = v - pf[i];  // in [0, 1): sigmoid(alpha) = (rest - gamma) / (zeta - gamma)
      pa[i] = -std::log((z - g) / (rest - g) - 1.0f);
    }
    a.alpha.set_requires_grad(true);
    return a;
  }

  /// h(alpha) in [0, 1], differentiable.
  Tensor soft_targets() const {
    constexpr float g = AdaRoundConstants::gamma, z = AdaRoundConstants::zeta;
    return clamp(add(mul(sigmoid(alpha), z - g), g), 0.0f, 1.0f);
  }

  /// Weights with soft rounding (during learning), differentiable w.r.t. alpha.
  Tensor soft_weight(const UniformQuantizer& q) const {
    Shape cs = channel_shape(q, alpha);
    Tensor s = q.scale.view(cs), zp = q.zero_point.view(cs);
    Tensor qv = clamp(add(add(floor_q, soft_targets()), zp), 0.0f, q.qmax());
    return mul(sub(qv, zp), s);
  }

  /// Weights with hard rounding: up where alpha >= 0.
  Tensor hard_weight(const UniformQuantizer& q) const {
    Tensor out = Tensor::empty(alpha.shape());
    const int64_t per = alpha.numel() / q.channels();
    const float* pf = floor_q.data<float>();
    const float* pa = alpha.data<float>();
    const float* ps = q.scale.data<float>();
    const float* pz = q.zero_point.data<float>();
    float* po = out.data<float>();
    for (int64_t i = 0; i < out.numel(); ++i) {
      const int64_t c = i / per;
      const float v = std::min(std::max(pf[i] + (pa[i] >= 0.0f ? 1.0f : 0.0f) + pz[c], 0.0f), q.qmax());
      po[i] = (v - pz[c]) * ps[c];
    }
    return out;
  }

  /// lambda * sum(1 - |2h - 1|^beta), differentiable w.r.t. alpha.
  Tensor regularizer(float beta) const {
    Tensor h = soft_targets();
    return sum(1.0f - pow(abs(sub(mul(h, 2.0f), 1.0f)), beta));
  }
};

/// Round-to-nearest weights under q (no learning).
inline Tensor nearest_weight(const Tensor& w, const UniformQuantizer& q) {
  NoGrad ng;
  return fake_quantize(w, q);
}

/// beta of the official schedule: constant start_b until warmup, then linear decay to end_b.
inline float adaround_beta(int64_t t, int64_t t_max, float warmup, float start_b, float end_b) {
  const double start = warmup * static_cast<double>(t_max);
  if (t < start) return start_b;
  const double rel = (t - start) / (static_cast<double>(t_max) - start);
  return static_cast<float>(end_b + (start_b - end_b) * std::max(0.0, 1.0 - rel));
}

}  // namespace brecq::quant
