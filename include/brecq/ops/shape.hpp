#pragma once
// Differentiable shape ops: reshape, flatten, narrow, strided subsampling and channel padding
// (the last two build the CIFAR ResNet "option A" shortcut), concatenation along channels.
#include <cstring>

#include "brecq/autograd/tape.hpp"
#include "brecq/ops/broadcast.hpp"

namespace brecq {

/// New shape over the same elements; one dimension may be -1 (inferred).
inline Tensor reshape(const Tensor& x, std::vector<int64_t> dims) {
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] == -1) {
      check(infer < 0, "reshape: more than one -1 in the target shape for input ", x.shape());
      infer = static_cast<int64_t>(i);
    } else {
      known *= dims[i];
    }
  }
  if (infer >= 0) {
    check(known > 0 && x.numel() % known == 0, "reshape: cannot infer -1 reshaping ", x.shape());
    dims[static_cast<size_t>(infer)] = x.numel() / known;
  }
  Shape target(dims);
  check(target.numel() == x.numel(), "reshape: input ", x.shape(), " cannot become ", target);
  Tensor out = x.contiguous().view(target);  // a view when x is contiguous, else a copy
  Shape in_shape = x.shape();
  autograd::record("reshape", out, {&x}, [x, in_shape](const Tensor& g) {
    autograd::accumulate_grad(x, g.contiguous().view(in_shape));
  });
  return out;
}

/// [N, d1, d2, ...] -> [N, d1*d2*...]
inline Tensor flatten(const Tensor& x) {
  check(x.ndim() >= 1, "flatten: expects at least one dimension, got ", x.shape());
  return reshape(x, {x.dim(0), -1});
}

/// Entries [start, start+length) of dimension d, as a contiguous copy.
inline Tensor narrow(const Tensor& x, int64_t d, int64_t start, int64_t length) {
  d = x.shape().wrap(d);
  Tensor out = x.narrow(d, start, length).clone();
  autograd::record("narrow", out, {&x}, [x, d, start, length](const Tensor& g) {
    Tensor dx = Tensor::zeros(x.shape());
    dx.narrow(d, start, length).copy_from(g);
    autograd::accumulate_grad(x, dx);
  });
  return out;
}

/// x[:, :, ::stride_h, ::stride_w] for NCHW input.
inline Tensor subsample(const Tensor& x, int64_t stride_h, int64_t stride_w) {
  check(x.ndim() == 4, "subsample: expects NCHW input, got ", x.shape());
  check(stride_h >= 1 && stride_w >= 1, "subsample: strides must be >= 1, got ", stride_h, ", ",
        stride_w);
  const int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3);
  const int64_t OH = (H + stride_h - 1) / stride_h, OW = (W + stride_w - 1) / stride_w;
  Tensor xc = x.contiguous();
  Tensor out = Tensor::empty(Shape{N, C, OH, OW});
  const float* px = xc.data<float>();
  float* py = out.data<float>();
  for (int64_t p = 0; p < N * C; ++p)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow)
        py[(p * OH + oh) * OW + ow] = px[(p * H + oh * stride_h) * W + ow * stride_w];
  autograd::record("subsample", out, {&x}, [x, stride_h, stride_w](const Tensor& g) {
    const int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3);
    const int64_t OH = g.dim(2), OW = g.dim(3);
    Tensor dx = Tensor::zeros(x.shape());
    Tensor gc = g.contiguous();
    const float* pg = gc.data<float>();
    float* pd = dx.data<float>();
    for (int64_t p = 0; p < N * C; ++p)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow)
          pd[(p * H + oh * stride_h) * W + ow * stride_w] = pg[(p * OH + oh) * OW + ow];
    autograd::accumulate_grad(x, dx);
  });
  return out;
}

/// Zero-pads the channel axis of NCHW input: `before` channels in front, `after` behind.
inline Tensor pad_channels(const Tensor& x, int64_t before, int64_t after) {
  check(x.ndim() == 4, "pad_channels: expects NCHW input, got ", x.shape());
  check(before >= 0 && after >= 0, "pad_channels: padding must be >= 0, got ", before, ", ", after);
  const int64_t C = x.dim(1);
  Tensor out = Tensor::zeros(Shape{x.dim(0), C + before + after, x.dim(2), x.dim(3)});
  out.narrow(1, before, C).copy_from(x);
  autograd::record("pad_channels", out, {&x}, [x, before, C](const Tensor& g) {
    autograd::accumulate_grad(x, g.narrow(1, before, C).clone());
  });
  return out;
}

/// Concatenation along dimension d.
inline Tensor cat(const std::vector<Tensor>& xs, int64_t d) {
  check(!xs.empty(), "cat: needs at least one tensor");
  d = xs[0].shape().wrap(d);
  Shape shape = xs[0].shape();
  int64_t total = 0;
  for (const Tensor& t : xs) {
    check(t.ndim() == shape.ndim(), "cat: shapes ", shape, " and ", t.shape(), " differ in rank");
    for (int64_t i = 0; i < shape.ndim(); ++i)
      check(i == d || t.dim(i) == shape[i], "cat: shapes ", shape, " and ", t.shape(),
            " differ outside dimension ", d);
    total += t.dim(d);
  }
  shape[d] = total;
  Tensor out = Tensor::empty(shape);
  int64_t at = 0;
  for (const Tensor& t : xs) {
    out.narrow(d, at, t.dim(d)).copy_from(t);
    at += t.dim(d);
  }
  if (autograd::grad_enabled()) {
    bool any = false;
    for (const Tensor& t : xs) any = any || t.requires_grad();
    if (any) {
      out.impl().requires_grad = true;
      out.impl().is_leaf = false;
      autograd::tape().record({"cat", out.impl_ptr(), [xs, d](const Tensor& g) {
                                 int64_t at = 0;
                                 for (const Tensor& t : xs) {
                                   autograd::accumulate_grad(t, g.narrow(d, at, t.dim(d)).clone());
                                   at += t.dim(d);
                                 }
                               }});
    }
  }
  return out;
}

}  // namespace brecq
