#pragma once
// Broadcasting rules (NumPy/PyTorch) and the reductions their backward passes need.
#include <string_view>

#include "brecq/autograd/tape.hpp"

namespace brecq {

namespace detail {

/// Shape both operands broadcast to; throws naming the op and both shapes.
inline Shape broadcast_shapes(std::string_view op, const Shape& a, const Shape& b) {
  const int64_t nd = std::max(a.ndim(), b.ndim());
  std::vector<int64_t> out(static_cast<size_t>(nd));
  for (int64_t i = 0; i < nd; ++i) {
    int64_t da = i < nd - a.ndim() ? 1 : a[i - (nd - a.ndim())];
    int64_t db = i < nd - b.ndim() ? 1 : b[i - (nd - b.ndim())];
    check(da == db || da == 1 || db == 1, op, ": shapes ", a, " and ", b,
          " cannot be broadcast together");
    out[static_cast<size_t>(i)] = da == 1 ? db : da;
  }
  return Shape(std::move(out));
}

/// Strides that read `t` as if it had shape `target` (0 along broadcast dimensions).
inline std::vector<int64_t> broadcast_strides(const Tensor& t, const Shape& target) {
  const int64_t nd = target.ndim(), lead = nd - t.ndim();
  std::vector<int64_t> s(static_cast<size_t>(nd), 0);
  for (int64_t i = lead; i < nd; ++i)
    s[static_cast<size_t>(i)] =
        t.dim(i - lead) == 1 ? 0 : t.strides()[static_cast<size_t>(i - lead)];
  return s;
}

}  // namespace detail

/// Sums `g` down to `shape` over the broadcast dimensions (no autograd): the backward of
/// broadcasting.
inline Tensor sum_to(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  Tensor out = Tensor::zeros(shape);
  // out viewed with g's shape: stride 0 along reduced dimensions.
  std::vector<int64_t> so = detail::broadcast_strides(out, g.shape());
  float* o = out.data<float>();
  const float* p = g.data<float>();
  detail::for_each_offset2(g.shape(), g.strides(), so, [&](int64_t a, int64_t b) { o[b] += p[a]; });
  return out;
}

/// Materialises `t` broadcast to `shape` (no autograd).
inline Tensor expand_copy(const Tensor& t, const Shape& shape) {
  Tensor out = Tensor::empty(shape);
  std::vector<int64_t> st = detail::broadcast_strides(t, shape);
  float* o = out.data<float>();
  const float* p = t.data<float>();
  detail::for_each_offset2(shape, out.strides(), st, [&](int64_t a, int64_t b) { o[a] = p[b]; });
  return out;
}

}  // namespace brecq
