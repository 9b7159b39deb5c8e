#pragma once
// Dispatch point used by nn/optim.hpp for Adam's update.
#include "brecq/kernels/simd/adam.hpp"

namespace brecq::kernels {

inline void adam_update(float* w, const float* g, float* m, float* v, int64_t n,
                        const AdamStep& s) {
  simd::adam_update(w, g, m, v, n, s);
}

}  // namespace brecq::kernels
