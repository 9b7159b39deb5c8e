#pragma once
// Sums and means over all or chosen dimensions.
#include <algorithm>

#include "brecq/ops/broadcast.hpp"
#include "brecq/ops/elementwise.hpp"

namespace brecq {

/// Sum of every element, as a scalar (shape []).
inline Tensor sum(const Tensor& x) {
  Tensor xc = x.contiguous();
  const float* p = xc.data<float>();
  double acc = 0.0;
  for (int64_t i = 0, n = x.numel(); i < n; ++i) acc += p[i];
  Tensor out = Tensor::scalar(static_cast<float>(acc));
  autograd::record("sum", out, {&x}, [x](const Tensor& g) {
    autograd::accumulate_grad(x, Tensor::full(x.shape(), g.item()));
  });
  return out;
}

inline Tensor mean(const Tensor& x) {
  check(x.numel() > 0, "mean: tensor of shape ", x.shape(), " is empty");
  Tensor s = sum(x);
  return s * (1.0f / static_cast<float>(x.numel()));
}

/// Sum over `dims` (negative counts from the end); keepdim keeps them as size 1.
inline Tensor sum(const Tensor& x, std::vector<int64_t> dims, bool keepdim = false) {
  std::vector<int64_t> kept = x.shape().dims(), dropped;
  for (int64_t& d : dims) {
    d = x.shape().wrap(d);
    kept[static_cast<size_t>(d)] = 1;
  }
  for (int64_t i = 0; i < x.ndim(); ++i)
    if (std::find(dims.begin(), dims.end(), i) == dims.end()) dropped.push_back(x.dim(i));
  Shape keep_shape(kept);
  Tensor s = sum_to(x.contiguous(), keep_shape);
  if (s.same_storage(x)) s = s.clone();  // nothing reduced: still a new tensor
  Tensor out = keepdim ? s : s.view(Shape(dropped));
  autograd::record("sum_dims", out, {&x}, [x, keep_shape](const Tensor& g) {
    autograd::accumulate_grad(x, expand_copy(g.contiguous().view(keep_shape), x.shape()));
  });
  return out;
}

inline Tensor mean(const Tensor& x, std::vector<int64_t> dims, bool keepdim = false) {
  int64_t count = 1;
  for (int64_t d : dims) count *= x.dim(d);
  check(count > 0, "mean: reduced dimensions of shape ", x.shape(), " are empty");
  return sum(x, std::move(dims), keepdim) * (1.0f / static_cast<float>(count));
}

}  // namespace brecq
