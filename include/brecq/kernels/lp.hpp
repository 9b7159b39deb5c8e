#pragma once
// Dispatch point used by ops/loss.hpp for the weighted L_p distance.
#include "brecq/kernels/simd/lp.hpp"

namespace brecq::kernels {

inline double lp_distance(const float* a, const float* b, const float* w, int64_t n, float p) {
  return simd::lp_distance(a, b, w, n, p);
}
inline void lp_distance_grad(const float* a, const float* b, const float* w, int64_t n, float p,
                             float scale, float* out) {
  simd::lp_distance_grad(a, b, w, n, p, scale, out);
}

}  // namespace brecq::kernels
