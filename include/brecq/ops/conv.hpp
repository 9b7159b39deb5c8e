#pragma once
// 2-D convolution (stride, padding, dilation, groups; depthwise as groups == channels), forward
// and backward, on top of kernels::conv2d_*.
#include "brecq/autograd/tape.hpp"
#include "brecq/kernels/conv.hpp"

namespace brecq {

struct Conv2dParams {
  int64_t stride = 1;
  int64_t padding = 0;
  int64_t dilation = 1;
  int64_t groups = 1;
};

namespace detail {
inline kernels::Conv2dGeometry conv_geometry(const Tensor& x, const Tensor& w, const Tensor& bias,
                                             const Conv2dParams& p) {
  check(x.ndim() == 4, "conv2d: input must be NCHW, got ", x.shape());
  check(w.ndim() == 4, "conv2d: weight must be [out, in/groups, kh, kw], got ", w.shape());
  check(p.stride >= 1 && p.dilation >= 1 && p.padding >= 0 && p.groups >= 1,
        "conv2d: invalid stride ", p.stride, ", padding ", p.padding, ", dilation ", p.dilation,
        " or groups ", p.groups);
  check(x.dim(1) % p.groups == 0 && w.dim(0) % p.groups == 0, "conv2d: channels of input ",
        x.shape(), " and weight ", w.shape(), " are not divisible by groups ", p.groups);
  check(w.dim(1) * p.groups == x.dim(1), "conv2d: input ", x.shape(), " has ", x.dim(1),
        " channels but weight ", w.shape(), " with groups ", p.groups, " expects ",
        w.dim(1) * p.groups);
  check(!bias.defined() || (bias.ndim() == 1 && bias.dim(0) == w.dim(0)), "conv2d: bias ",
        shape_of(bias), " does not match weight ", w.shape());
  kernels::Conv2dGeometry g{.batch = x.dim(0),
                            .in_channels = x.dim(1),
                            .in_h = x.dim(2),
                            .in_w = x.dim(3),
                            .out_channels = w.dim(0),
                            .kernel_h = w.dim(2),
                            .kernel_w = w.dim(3),
                            .stride_h = p.stride,
                            .stride_w = p.stride,
                            .pad_h = p.padding,
                            .pad_w = p.padding,
                            .dilation_h = p.dilation,
                            .dilation_w = p.dilation,
                            .groups = p.groups};
  // Compare sizes, not out_h() >= 1: integer division truncates a negative numerator up to 0.
  check(g.in_h + 2 * g.pad_h > g.dilation_h * (g.kernel_h - 1) &&
            g.in_w + 2 * g.pad_w > g.dilation_w * (g.kernel_w - 1),
        "conv2d: input ", x.shape(), " is smaller than kernel ", w.shape(), " with padding ",
        p.padding, " and dilation ", p.dilation);
  return g;
}
}  // namespace detail

/// NCHW convolution; weight [out, in/groups, kh, kw]; bias [out] or undefined.
inline Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias = Tensor(),
                     const Conv2dParams& p = {}) {
  const kernels::Conv2dGeometry g = detail::conv_geometry(x, w, bias, p);
  Tensor xc = x.contiguous(), wc = w.contiguous();
  Tensor bc = bias.defined() ? bias.contiguous() : Tensor();
  Tensor out = Tensor::empty(Shape{g.batch, g.out_channels, g.out_h(), g.out_w()});
  kernels::conv2d_forward(g, xc.data<float>(), wc.data<float>(),
                          bc.defined() ? bc.data<float>() : nullptr, out.data<float>());
  autograd::record("conv2d", out, {&x, &w, &bias}, [x, w, bias, xc, wc, g](const Tensor& grad) {
    Tensor gc = grad.contiguous();
    if (x.requires_grad()) {
      Tensor dx = Tensor::empty(x.shape());
      kernels::conv2d_backward_input(g, gc.data<float>(), wc.data<float>(), dx.data<float>());
      autograd::accumulate_grad(x, dx);
    }
    const bool need_w = w.requires_grad(), need_b = bias.defined() && bias.requires_grad();
    if (need_w || need_b) {
      Tensor dw = Tensor::empty(w.shape());
      Tensor db = need_b ? Tensor::empty(bias.shape()) : Tensor();
      kernels::conv2d_backward_weight(g, xc.data<float>(), gc.data<float>(), dw.data<float>(),
                                      need_b ? db.data<float>() : nullptr);
      if (need_w) autograd::accumulate_grad(w, dw);
      if (need_b) autograd::accumulate_grad(bias, db);
    }
  });
  return out;
}

}  // namespace brecq
