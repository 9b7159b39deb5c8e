#pragma once
// Parameter structs shared by the ref:: and simd:: kernels. Kernels see raw pointers and these
// structs only, never Tensor or the tape.
#include <cstdint>

namespace brecq::kernels {

/// C = alpha * op(A) * op(B) + beta * C, row-major; op(A) is M x K, op(B) is K x N.
struct GemmParams {
  bool trans_a = false;
  bool trans_b = false;
  float alpha = 1.0f;
  float beta = 0.0f;
};

/// Geometry of a 2-D convolution over NCHW input and (C_out, C_in/groups, KH, KW) weights.
struct Conv2dGeometry {
  int64_t batch = 1, in_channels = 1, in_h = 1, in_w = 1;
  int64_t out_channels = 1, kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dilation_h = 1, dilation_w = 1;
  int64_t groups = 1;

  int64_t out_h() const {
    return (in_h + 2 * pad_h - dilation_h * (kernel_h - 1) - 1) / stride_h + 1;
  }
  int64_t out_w() const {
    return (in_w + 2 * pad_w - dilation_w * (kernel_w - 1) - 1) / stride_w + 1;
  }
  int64_t in_per_group() const { return in_channels / groups; }
  int64_t out_per_group() const { return out_channels / groups; }
  bool is_depthwise() const { return groups == in_channels && groups == out_channels; }
};

}  // namespace brecq::kernels
