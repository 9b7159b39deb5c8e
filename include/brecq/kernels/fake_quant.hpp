#pragma once
// Dispatch point used by quant/quantizer.hpp for fake quantization.
#include "brecq/kernels/simd/fake_quant.hpp"

namespace brecq::kernels {

inline void fake_quant(const float* x, int64_t n, float s, float zp, float qmax, float* y) {
  simd::fake_quant(x, n, s, zp, qmax, y);
}
inline double fake_quant_backward(const float* x, const float* g, int64_t n, float s, float zp,
                                  float qmax, float* dx) {
  return simd::fake_quant_backward(x, g, n, s, zp, qmax, dx);
}

}  // namespace brecq::kernels
