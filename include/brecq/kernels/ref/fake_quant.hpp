#pragma once
// Scalar ground truth for uniform fake quantization (quantize, dequantize) of a run of values
// sharing one scale and zero point, and its straight-through backward.
#include <algorithm>
#include <cmath>
#include <cstdint>

namespace brecq::kernels::ref {

/// y_i = (clamp(round(x_i / s) + zp, 0, qmax) - zp) * s, rounding half to even.
inline void fake_quant(const float* x, int64_t n, float s, float zp, float qmax, float* y) {
  for (int64_t i = 0; i < n; ++i) {
    const float q = std::min(std::max(std::nearbyint(x[i] / s) + zp, 0.0f), qmax);
    y[i] = (q - zp) * s;
  }
}

/// Given g = d(loss)/dy: dx_i = g_i where round(x_i / s) + zp lies in [0, qmax], else 0 (dx may
/// be null), and returns d(loss)/ds with the rounding straight-through:
///   sum_i g_i * (inside ? round(x_i / s) - x_i / s : clamp(round(x_i / s) + zp, 0, qmax) - zp).
inline double fake_quant_backward(const float* x, const float* g, int64_t n, float s, float zp,
                                  float qmax, float* dx) {
  double ds = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i] / s, r = std::nearbyint(v), q = r + zp;
    const bool inside = q >= 0.0f && q <= qmax;
    if (dx) dx[i] = inside ? g[i] : 0.0f;
    ds += g[i] * (inside ? r - v : std::min(std::max(q, 0.0f), qmax) - zp);
  }
  return ds;
}

}  // namespace brecq::kernels::ref
