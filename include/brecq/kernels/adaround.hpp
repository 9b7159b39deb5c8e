#pragma once
// Dispatch point used by quant/adaround.hpp for the soft weights and the rounding regulariser.
#include "brecq/kernels/simd/adaround.hpp"

namespace brecq::kernels {

inline void adaround_soft_weight(const float* alpha, const float* floor_q, const float* scale,
                                 const float* zero_point, int64_t n, int64_t per_channel,
                                 float qmax, float* w, float* dw) {
  simd::adaround_soft_weight(alpha, floor_q, scale, zero_point, n, per_channel, qmax, w, dw);
}
inline double adaround_regularizer(const float* alpha, int64_t n, float beta, float* d) {
  return simd::adaround_regularizer(alpha, n, beta, d);
}

}  // namespace brecq::kernels
