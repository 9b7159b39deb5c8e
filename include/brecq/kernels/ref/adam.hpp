#pragma once
// Scalar ground truth for one Adam step over a parameter tensor (torch.optim.Adam's update).
#include <cmath>
#include <cstdint>

namespace brecq::kernels {

/// The constants of one step: lr / (1 - beta1^t) and sqrt(1 - beta2^t) fold the bias corrections.
struct AdamStep {
  float beta1, beta2, eps, weight_decay;
  float step;      ///< lr / (1 - beta1^t)
  float bc2_sqrt;  ///< sqrt(1 - beta2^t)
};

}  // namespace brecq::kernels

namespace brecq::kernels::ref {

/// d = g + wd w; m = b1 m + (1 - b1) d; v = b2 v + (1 - b2) d^2; w -= step m / (sqrt(v) / bc2 +
/// eps).
inline void adam_update(float* w, const float* g, float* m, float* v, int64_t n,
                        const AdamStep& s) {
  for (int64_t i = 0; i < n; ++i) {
    const float d = g[i] + s.weight_decay * w[i];
    m[i] = s.beta1 * m[i] + (1 - s.beta1) * d;
    v[i] = s.beta2 * v[i] + (1 - s.beta2) * d * d;
    w[i] -= s.step * m[i] / (std::sqrt(v[i]) / s.bc2_sqrt + s.eps);
  }
}

}  // namespace brecq::kernels::ref
