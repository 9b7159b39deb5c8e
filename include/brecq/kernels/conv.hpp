#pragma once
// Dispatch point used by ops/conv.hpp: the fast path for every call.
#include "brecq/kernels/simd/conv.hpp"

namespace brecq::kernels {

inline void conv2d_forward(const Conv2dGeometry& g, const float* x, const float* w,
                           const float* bias, float* y) {
  simd::conv2d_forward(g, x, w, bias, y);
}
inline void conv2d_backward_input(const Conv2dGeometry& g, const float* dy, const float* w,
                                  float* dx) {
  simd::conv2d_backward_input(g, dy, w, dx);
}
inline void conv2d_backward_weight(const Conv2dGeometry& g, const float* x, const float* dy,
                                   float* dw, float* dbias) {
  simd::conv2d_backward_weight(g, x, dy, dw, dbias);
}

}  // namespace brecq::kernels
