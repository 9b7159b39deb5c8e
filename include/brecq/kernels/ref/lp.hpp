#pragma once
// Scalar ground truth for the weighted L_p distance used by reconstruction losses.
#include <cmath>
#include <cstdint>

namespace brecq::kernels::ref {

/// sum_i w_i^2 |a_i - b_i|^p (w may be null: all ones). When grad is not null, also writes its
/// gradient w.r.t. a: grad_i = w_i^2 p |a_i - b_i|^(p-1) sign(a_i - b_i).
inline double lp_distance(const float* a, const float* b, const float* w, int64_t n, float p,
                          float* grad = nullptr) {
  double acc = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
    const float w2 = w ? w[i] * w[i] : 1.0f;
    acc += w2 * std::pow(d, static_cast<double>(p));
    if (grad) {
      const float df = a[i] - b[i];
      grad[i] =
          df == 0.0f ? 0.0f : w2 * p * std::pow(std::fabs(df), p - 1.0f) * (df > 0 ? 1.0f : -1.0f);
    }
  }
  return acc;
}

}  // namespace brecq::kernels::ref
