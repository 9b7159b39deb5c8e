#pragma once
// Scalar ground truth for the weighted L_p distance used by reconstruction losses.
#include <cmath>
#include <cstdint>

namespace brecq::kernels::ref {

/// sum_i w_i^2 |a_i - b_i|^p (w may be null: all ones).
inline double lp_distance(const float* a, const float* b, const float* w, int64_t n, float p) {
  double acc = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
    acc += (w ? static_cast<double>(w[i]) * w[i] : 1.0) * std::pow(d, static_cast<double>(p));
  }
  return acc;
}

/// out_i = scale * w_i^2 * p |a_i - b_i|^(p-1) sign(a_i - b_i): the gradient of lp_distance
/// w.r.t. a, times scale.
inline void lp_distance_grad(const float* a, const float* b, const float* w, int64_t n, float p,
                             float scale, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const float d = a[i] - b[i];
    const float g = d == 0.0f ? 0.0f : p * std::pow(std::fabs(d), p - 1.0f) * (d > 0 ? 1.0f : -1.0f);
    out[i] = scale * (w ? w[i] * w[i] : 1.0f) * g;
  }
}

}  // namespace brecq::kernels::ref
