#pragma once
// Scalar ground truth for AdaRound's soft weights and rounding regulariser, each with its
// gradient w.r.t. the rounding logits alpha, computed in the same pass (the weight pass calls
// both every iteration on every weight of the unit).
//   h(alpha) = clamp(sigmoid(alpha) (zeta - gamma) + gamma, 0, 1)
// Clamps pass the gradient at their bounds, as ops/elementwise.hpp's clamp does.
#include <cmath>
#include <cstdint>

namespace brecq::kernels {
inline constexpr float kAdaRoundGamma = -0.1f, kAdaRoundZeta = 1.1f;
}  // namespace brecq::kernels

namespace brecq::kernels::ref {

/// h(alpha) and dh/dalpha.
inline void adaround_h(float alpha, float& h, float& dh) {
  constexpr float g = kAdaRoundGamma, z = kAdaRoundZeta;
  const float sig = 1.0f / (1.0f + std::exp(-alpha));
  const float raw = sig * (z - g) + g;
  h = std::fmin(std::fmax(raw, 0.0f), 1.0f);
  dh = raw >= 0.0f && raw <= 1.0f ? (z - g) * sig * (1.0f - sig) : 0.0f;
}

/// w_i = s_c (clamp(f_i + h(alpha_i) + z_c, 0, qmax) - z_c) with c = i / per_channel, and, when
/// dw is not null, dw_i = dw_i / dalpha_i.
inline void adaround_soft_weight(const float* alpha, const float* floor_q, const float* scale,
                                 const float* zero_point, int64_t n, int64_t per_channel,
                                 float qmax, float* w, float* dw) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = i / per_channel;
    float h, dh;
    adaround_h(alpha[i], h, dh);
    const float v = floor_q[i] + h + zero_point[c];
    w[i] = (std::fmin(std::fmax(v, 0.0f), qmax) - zero_point[c]) * scale[c];
    if (dw) dw[i] = v >= 0.0f && v <= qmax ? scale[c] * dh : 0.0f;
  }
}

/// sum_i 1 - |2 h(alpha_i) - 1|^beta, and d_i = its gradient w.r.t. alpha_i.
inline double adaround_regularizer(const float* alpha, int64_t n, float beta, float* d) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    float h, dh;
    adaround_h(alpha[i], h, dh);
    const float t = 2.0f * h - 1.0f, a = std::fabs(t);
    sum += 1.0 - std::pow(static_cast<double>(a), static_cast<double>(beta));
    d[i] = a == 0.0f ? 0.0f : -beta * std::pow(a, beta - 1.0f) * (t > 0 ? 2.0f : -2.0f) * dh;
  }
  return sum;
}

}  // namespace brecq::kernels::ref
