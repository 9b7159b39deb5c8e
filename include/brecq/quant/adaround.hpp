#pragma once
// AdaRound (Nagel et al. 2020) as used by BRECQ: W_q = s * (clamp(floor(W/s) + h(alpha) + zp,
// 0, qmax) - zp) with the rectified sigmoid h = clamp(sigmoid(alpha) (zeta - gamma) + gamma, 0, 1),
// alpha initialised so that h(alpha) = frac(W/s), and the regulariser sum(1 - |2h - 1|^beta).
#include <cmath>

#include "brecq/kernels/adaround.hpp"
#include "brecq/ops/elementwise.hpp"
#include "brecq/quant/quantizer.hpp"

namespace brecq::quant {

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
    constexpr float g = kernels::kAdaRoundGamma, z = kernels::kAdaRoundZeta;
    for (int64_t i = 0; i < w.numel(); ++i) {
      const float v = pw[i] / ps[i / per];
      pf[i] = std::floor(v);
      const float rest = v - pf[i];  // in [0, 1): sigmoid(alpha) = (rest - gamma) / (zeta - gamma)
      pa[i] = -std::log((z - g) / (rest - g) - 1.0f);
    }
    a.alpha.set_requires_grad(true);
    return a;
  }

  /// W_q = s (clamp(floor(W / s) + h(alpha) + z, 0, qmax) - z), differentiable in alpha (the
  /// weight pass keeps the quantizer fixed). One fused pass, which also stores dW_q/dalpha for
  /// the backward when alpha requires a gradient.
  Tensor soft_weight(const UniformQuantizer& q) const {
    check(!q.scale.requires_grad() && !q.zero_point.requires_grad(),
          "AdaRound::soft_weight: the weight quantizer is fixed while rounding is learned");
    Tensor w = Tensor::empty(alpha.shape());
    const bool grad = autograd::any_requires_grad({&alpha});
    Tensor dw = grad ? Tensor::empty(alpha.shape()) : Tensor();
    kernels::adaround_soft_weight(alpha.data<float>(), floor_q.data<float>(), q.scale.data<float>(),
                                  q.zero_point.data<float>(), alpha.numel(),
                                  alpha.numel() / q.channels(), q.qmax(), w.data<float>(),
                                  grad ? dw.data<float>() : nullptr);
    autograd::record("adaround_soft_weight", w, {&alpha}, [alpha = alpha, dw](const Tensor& g) {
      autograd::accumulate_grad(alpha, mul(g, dw));
    });
    return w;
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
      const float v =
          std::min(std::max(pf[i] + (pa[i] >= 0.0f ? 1.0f : 0.0f) + pz[c], 0.0f), q.qmax());
      po[i] = (v - pz[c]) * ps[c];
    }
    return out;
  }

  /// sum(1 - |2 h(alpha) - 1|^beta), fused with its gradient like soft_weight.
  Tensor regularizer(float beta) const {
    Tensor d = Tensor::empty(alpha.shape());
    Tensor out = Tensor::scalar(static_cast<float>(
        kernels::adaround_regularizer(alpha.data<float>(), alpha.numel(), beta, d.data<float>())));
    autograd::record("adaround_regularizer", out, {&alpha}, [alpha = alpha, d](const Tensor& g) {
      autograd::accumulate_grad(alpha, mul(d, g.item()));
    });
    return out;
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
