#pragma once
// Dispatch point used by ops/loss.hpp for the weighted L_p distance (and its gradient).
#include "brecq/kernels/simd/lp.hpp"

namespace brecq::kernels {

inline double lp_distance(const float* a, const float* b, const float* w, int64_t n, float p,
                          float* grad = nullptr) {
  return simd::lp_distance(a, b, w, n, p, grad);
}

}  // namespace brecq::kernels
