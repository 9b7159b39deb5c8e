#pragma once
// Matrix multiply and fully connected layers on top of kernels::sgemm.
#include <optional>

#include "brecq/autograd/tape.hpp"
#include "brecq/kernels/gemm.hpp"
#include "brecq/ops/reduce.hpp"

namespace brecq {

namespace detail {
/// C[M,N] = op(A) op(B) for contiguous 2-D A and B (no autograd).
inline Tensor gemm(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  const int64_t M = trans_a ? a.dim(1) : a.dim(0), K = trans_a ? a.dim(0) : a.dim(1);
  const int64_t N = trans_b ? b.dim(0) : b.dim(1);
  Tensor c = Tensor::empty(Shape{M, N});
  kernels::sgemm(M, N, K, a.data<float>(), a.dim(1), b.data<float>(), b.dim(1), c.data<float>(), N,
                 {.trans_a = trans_a, .trans_b = trans_b});
  return c;
}
}  // namespace detail

/// [M, K] x [K, N] -> [M, N]
inline Tensor matmul(const Tensor& a, const Tensor& b) {
  check(a.ndim() == 2 && b.ndim() == 2 && a.dim(1) == b.dim(0), "matmul: shapes ", a.shape(),
        " and ", b.shape(), " are not [M, K] x [K, N]");
  Tensor ac = a.contiguous(), bc = b.contiguous();
  Tensor out = detail::gemm(ac, bc, false, false);
  autograd::record("matmul", out, {&a, &b}, [a, b, ac, bc](const Tensor& g) {
    Tensor gc = g.contiguous();
    if (a.requires_grad()) autograd::accumulate_grad(a, detail::gemm(gc, bc, false, true));
    if (b.requires_grad()) autograd::accumulate_grad(b, detail::gemm(ac, gc, true, false));
  });
  return out;
}

/// y = x w^T + bias with x [N, in], w [out, in], bias [out] (may be undefined).
inline Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias = Tensor()) {
  check(x.ndim() == 2 && w.ndim() == 2 && x.dim(1) == w.dim(1), "linear: input ", x.shape(),
        " and weight ", w.shape(), " are not [N, in] and [out, in]");
  check(!bias.defined() || (bias.ndim() == 1 && bias.dim(0) == w.dim(0)), "linear: bias ",
        shape_of(bias), " does not match weight ", w.shape());
  Tensor xc = x.contiguous(), wc = w.contiguous();
  Tensor out = detail::gemm(xc, wc, false, true);  // [N, out]
  if (bias.defined()) {
    Tensor bc = bias.contiguous();
    float* y = out.data<float>();
    const float* pb = bc.data<float>();
    for (int64_t n = 0; n < out.dim(0); ++n)
      for (int64_t o = 0; o < out.dim(1); ++o) y[n * out.dim(1) + o] += pb[o];
  }
  autograd::record("linear", out, {&x, &w, &bias}, [x, w, bias, xc, wc](const Tensor& g) {
    Tensor gc = g.contiguous();
    if (x.requires_grad()) autograd::accumulate_grad(x, detail::gemm(gc, wc, false, false));
    if (w.requires_grad()) autograd::accumulate_grad(w, detail::gemm(gc, xc, true, false));
    if (bias.defined() && bias.requires_grad())
      autograd::accumulate_grad(bias, sum_to(gc, bias.shape()));
  });
  return out;
}

}  // namespace brecq
