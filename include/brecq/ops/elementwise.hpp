#pragma once
// Element-wise ops with broadcasting, forward and backward together. Backward rules are written
// with the same ops (under NoGrad), so each is a line or two.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "brecq/ops/broadcast.hpp"
#include "brecq/tensor/parallel.hpp"

namespace brecq {

namespace detail {

constexpr int64_t kElementwiseGrain = 1 << 15;

/// out[i] = f(a[i]) over a contiguous copy of a. (The loops below capture their pointers by value,
/// so that stores through y cannot be assumed to change them and the loops vectorise.)
template <typename F>
inline Tensor map_unary(const Tensor& a, F f) {
  Tensor ac = a.contiguous();
  Tensor out = Tensor::empty(a.shape());
  const float* x = ac.data<float>();
  float* y = out.data<float>();
  parallel_for(0, a.numel(), kElementwiseGrain, [&, x, y](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) y[i] = f(x[i]);
  });
  return out;
}

/// out = f(a, b) with broadcasting.
template <typename F>
inline Tensor map_binary(std::string_view op, const Tensor& a, const Tensor& b, F f) {
  check(a.dtype() == DType::f32 && b.dtype() == DType::f32, op, ": expects f32 tensors, got ",
        dtype_name(a.dtype()), " and ", dtype_name(b.dtype()));
  Shape shape = broadcast_shapes(op, a.shape(), b.shape());
  Tensor out = Tensor::empty(shape);
  float* y = out.data<float>();
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  if (a.shape() == shape && b.shape() == shape && a.is_contiguous() && b.is_contiguous()) {
    parallel_for(0, out.numel(), kElementwiseGrain, [&, y, pa, pb](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) y[i] = f(pa[i], pb[i]);
    });
  } else if (b.numel() == 1 && a.shape() == shape && a.is_contiguous()) {
    const float v = *pb;
    for (int64_t i = 0, n = out.numel(); i < n; ++i) y[i] = f(pa[i], v);
  } else {
    int64_t k = 0;
    for_each_offset2(shape, broadcast_strides(a, shape), broadcast_strides(b, shape),
                     [&](int64_t oa, int64_t ob) { y[k++] = f(pa[oa], pb[ob]); });
  }
  return out;
}

}  // namespace detail

// ---- binary ------------------------------------------------------------------------------------

inline Tensor add(const Tensor& a, const Tensor& b);
inline Tensor sub(const Tensor& a, const Tensor& b);
inline Tensor mul(const Tensor& a, const Tensor& b);
inline Tensor div(const Tensor& a, const Tensor& b);
inline Tensor neg(const Tensor& a);

inline Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = detail::map_binary("add", a, b, [](float x, float y) { return x + y; });
  autograd::record("add", out, {&a, &b}, [a, b](const Tensor& g) {
    if (a.requires_grad()) autograd::accumulate_grad(a, sum_to(g, a.shape()));
    if (b.requires_grad()) autograd::accumulate_grad(b, sum_to(g, b.shape()));
  });
  return out;
}

inline Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = detail::map_binary("sub", a, b, [](float x, float y) { return x - y; });
  autograd::record("sub", out, {&a, &b}, [a, b](const Tensor& g) {
    if (a.requires_grad()) autograd::accumulate_grad(a, sum_to(g, a.shape()));
    if (b.requires_grad()) autograd::accumulate_grad(b, sum_to(neg(g), b.shape()));
  });
  return out;
}

inline Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = detail::map_binary("mul", a, b, [](float x, float y) { return x * y; });
  autograd::record("mul", out, {&a, &b}, [a, b](const Tensor& g) {
    if (a.requires_grad()) autograd::accumulate_grad(a, sum_to(mul(g, b), a.shape()));
    if (b.requires_grad()) autograd::accumulate_grad(b, sum_to(mul(g, a), b.shape()));
  });
  return out;
}

inline Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = detail::map_binary("div", a, b, [](float x, float y) { return x / y; });
  autograd::record("div", out, {&a, &b}, [a, b, out](const Tensor& g) {
    if (a.requires_grad()) autograd::accumulate_grad(a, sum_to(div(g, b), a.shape()));
    // d(a/b)/db = -(a/b)/b
    if (b.requires_grad())
      autograd::accumulate_grad(b, sum_to(neg(div(mul(g, out), b)), b.shape()));
  });
  return out;
}

/// Element-wise maximum / minimum; the gradient goes to the larger (smaller) operand, to `a` on
/// ties.
inline Tensor maximum(const Tensor& a, const Tensor& b) {
  Tensor out = detail::map_binary("maximum", a, b, [](float x, float y) { return x >= y ? x : y; });
  autograd::record("maximum", out, {&a, &b}, [a, b](const Tensor& g) {
    Tensor ma =
        detail::map_binary("maximum", a, b, [](float x, float y) { return x >= y ? 1.f : 0.f; });
    if (a.requires_grad()) autograd::accumulate_grad(a, sum_to(mul(g, ma), a.shape()));
    if (b.requires_grad())
      autograd::accumulate_grad(
          b, sum_to(mul(g, detail::map_unary(ma, [](float m) { return 1 - m; })), b.shape()));
  });
  return out;
}

inline Tensor add(const Tensor& a, float s) { return add(a, Tensor::scalar(s)); }
inline Tensor sub(const Tensor& a, float s) { return sub(a, Tensor::scalar(s)); }
inline Tensor mul(const Tensor& a, float s) { return mul(a, Tensor::scalar(s)); }
inline Tensor div(const Tensor& a, float s) { return div(a, Tensor::scalar(s)); }

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator+(const Tensor& a, float s) { return add(a, s); }
inline Tensor operator-(const Tensor& a, float s) { return sub(a, s); }
inline Tensor operator*(const Tensor& a, float s) { return mul(a, s); }
inline Tensor operator/(const Tensor& a, float s) { return div(a, s); }
inline Tensor operator*(float s, const Tensor& a) { return mul(a, s); }
inline Tensor operator-(float s, const Tensor& a) { return sub(Tensor::scalar(s), a); }
inline Tensor operator-(const Tensor& a) { return neg(a); }

/// out = mask ? a : b element-wise (mask: 0 or 1, the shape of a and b); the gradient goes to a
/// where the mask is set and to b elsewhere.
inline Tensor where(const Tensor& mask, const Tensor& a, const Tensor& b) {
  check(mask.shape() == a.shape() && a.shape() == b.shape(), "where: mask ", mask.shape(), ", a ",
        a.shape(), " and b ", b.shape(), " must have one shape");
  Tensor mc = mask.contiguous(), ac = a.contiguous(), bc = b.contiguous();
  Tensor out = Tensor::empty(a.shape());
  {
    const float *pm = mc.data<float>(), *pa = ac.data<float>(), *pb = bc.data<float>();
    float* po = out.data<float>();
    parallel_for(0, out.numel(), detail::kElementwiseGrain, [=](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) po[i] = pm[i] != 0.0f ? pa[i] : pb[i];
    });
  }
  autograd::record("where", out, {&a, &b}, [mc, a, b](const Tensor& g) {
    Tensor gc = g.contiguous();
    Tensor ga = a.requires_grad() ? Tensor::empty(a.shape()) : Tensor();
    Tensor gb = b.requires_grad() ? Tensor::empty(b.shape()) : Tensor();
    const float *pm = mc.data<float>(), *pg = gc.data<float>();
    float* pa = ga.defined() ? ga.data<float>() : nullptr;
    float* pb = gb.defined() ? gb.data<float>() : nullptr;
    parallel_for(0, gc.numel(), detail::kElementwiseGrain, [=](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) {
        const bool m = pm[i] != 0.0f;
        if (pa) pa[i] = m ? pg[i] : 0.0f;
        if (pb) pb[i] = m ? 0.0f : pg[i];
      }
    });
    if (pa) autograd::accumulate_grad(a, ga);
    if (pb) autograd::accumulate_grad(b, gb);
  });
  return out;
}

// ---- unary -------------------------------------------------------------------------------------

/// Records y = f(x) with dy/dx given by dfdx(x, y) evaluated element-wise, or, when dfdx takes
/// (x, y, g), with the input gradient dfdx(x, y, g) itself (masks such as relu's then select g
/// instead of multiplying by 0 or 1, which vectorises).
template <typename F, typename D>
inline Tensor unary_op(const char* op, const Tensor& x, F f, D dfdx) {
  check(x.dtype() == DType::f32, op, ": expects an f32 tensor, got ", dtype_name(x.dtype()));
  Tensor out = detail::map_unary(x, f);
  autograd::record(op, out, {&x}, [x, out, dfdx](const Tensor& g) {
    Tensor xc = x.contiguous(), gc = g.contiguous();
    Tensor dx = Tensor::empty(x.shape());
    const float* px = xc.data<float>();
    const float* py = out.data<float>();
    const float* pg = gc.data<float>();
    float* pd = dx.data<float>();
    // Pointers captured by value: through a reference the compiler must assume that the stores
    // to pd may change them, and keeps the loop scalar.
    parallel_for(0, x.numel(), detail::kElementwiseGrain,
                 [&, px, py, pg, pd](int64_t b, int64_t e) {
                   for (int64_t i = b; i < e; ++i) {
                     if constexpr (std::is_invocable_v<D, float, float, float>) {
                       pd[i] = dfdx(px[i], py[i], pg[i]);
                     } else {
                       pd[i] = pg[i] * dfdx(px[i], py[i]);
                     }
                   }
                 });
    autograd::accumulate_grad(x, dx);
  });
  return out;
}

inline Tensor neg(const Tensor& a) {
  return unary_op(
      "neg", a, [](float x) { return -x; }, [](float, float) { return -1.0f; });
}
inline Tensor relu(const Tensor& a) {
  return unary_op(
      "relu", a, [](float x) { return x > 0 ? x : 0.0f; },
      [](float x, float, float g) { return x > 0 ? g : 0.0f; });
}
inline Tensor relu6(const Tensor& a) {
  return unary_op(
      "relu6", a, [](float x) { return std::min(std::max(x, 0.0f), 6.0f); },
      [](float x, float, float g) { return x > 0 && x < 6 ? g : 0.0f; });
}
inline Tensor sigmoid(const Tensor& a) {
  return unary_op(
      "sigmoid", a, [](float x) { return 1.0f / (1.0f + std::exp(-x)); },
      [](float, float y) { return y * (1.0f - y); });
}
/// Clamps to [lo, hi]; gradient 1 strictly inside, 0 outside (PyTorch passes it at the bounds).
inline Tensor clamp(const Tensor& a, float lo, float hi) {
  check(lo <= hi, "clamp: lower bound ", lo, " exceeds upper bound ", hi);
  return unary_op(
      "clamp", a, [lo, hi](float x) { return std::min(std::max(x, lo), hi); },
      [lo, hi](float x, float, float g) { return x >= lo && x <= hi ? g : 0.0f; });
}
inline Tensor abs(const Tensor& a) {
  return unary_op(
      "abs", a, [](float x) { return std::fabs(x); },
      [](float x, float) { return x > 0 ? 1.0f : (x < 0 ? -1.0f : 0.0f); });
}
/// x^p for a scalar exponent.
inline Tensor pow(const Tensor& a, float p) {
  return unary_op(
      "pow", a, [p](float x) { return std::pow(x, p); },
      [p](float x, float) { return p == 0 ? 0.0f : p * std::pow(x, p - 1); });
}
inline Tensor square(const Tensor& a) {
  return unary_op(
      "square", a, [](float x) { return x * x; }, [](float x, float) { return 2 * x; });
}
inline Tensor sqrt(const Tensor& a) {
  return unary_op(
      "sqrt", a, [](float x) { return std::sqrt(x); }, [](float, float y) { return 0.5f / y; });
}
inline Tensor exp(const Tensor& a) {
  return unary_op(
      "exp", a, [](float x) { return std::exp(x); }, [](float, float y) { return y; });
}
inline Tensor log(const Tensor& a) {
  return unary_op(
      "log", a, [](float x) { return std::log(x); }, [](float x, float) { return 1.0f / x; });
}
/// Round half to even (as torch.round); zero gradient.
inline Tensor round(const Tensor& a) {
  return unary_op(
      "round", a, [](float x) { return std::nearbyint(x); }, [](float, float) { return 0.0f; });
}
inline Tensor floor(const Tensor& a) {
  return unary_op(
      "floor", a, [](float x) { return std::floor(x); }, [](float, float) { return 0.0f; });
}
/// Rounding with a straight-through gradient (identity backward), for quantizer training.
inline Tensor round_ste(const Tensor& a) {
  return unary_op(
      "round_ste", a, [](float x) { return std::nearbyint(x); }, [](float, float) { return 1.0f; });
}
inline Tensor floor_ste(const Tensor& a) {
  return unary_op(
      "floor_ste", a, [](float x) { return std::floor(x); }, [](float, float) { return 1.0f; });
}

}  // namespace brecq
