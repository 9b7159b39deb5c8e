#pragma once
// Max, average and global average pooling over NCHW input.
#include <limits>

#include "brecq/autograd/tape.hpp"
#include "brecq/tensor/parallel.hpp"

namespace brecq {

struct Pool2dParams {
  int64_t kernel = 2;
  int64_t stride = 0;  ///< 0 means "same as kernel"
  int64_t padding = 0;
};

namespace detail {
struct PoolGeometry {
  int64_t planes, H, W, OH, OW, k, s, pad;
};
inline PoolGeometry pool_geometry(const char* op, const Tensor& x, const Pool2dParams& p) {
  check(x.ndim() == 4, op, ": expects NCHW input, got ", x.shape());
  const int64_t s = p.stride ? p.stride : p.kernel;
  check(p.kernel >= 1 && s >= 1 && p.padding >= 0 && 2 * p.padding <= p.kernel, op,
        ": invalid kernel ", p.kernel, ", stride ", s, " or padding ", p.padding);
  PoolGeometry g{x.dim(0) * x.dim(1), x.dim(2), x.dim(3), 0, 0, p.kernel, s, p.padding};
  g.OH = (g.H + 2 * g.pad - g.k) / s + 1;
  g.OW = (g.W + 2 * g.pad - g.k) / s + 1;
  check(g.H + 2 * g.pad >= g.k && g.W + 2 * g.pad >= g.k, op, ": input ", x.shape(),
        " smaller than kernel ", p.kernel);
  return g;
}
}  // namespace detail

/// Max pooling (padding counts as -inf, as in PyTorch).
inline Tensor max_pool2d(const Tensor& x, const Pool2dParams& p = {}) {
  const detail::PoolGeometry g = detail::pool_geometry("max_pool2d", x, p);
  Tensor xc = x.contiguous();
  Tensor out = Tensor::empty(Shape{x.dim(0), x.dim(1), g.OH, g.OW});
  auto argmax = std::make_shared<std::vector<int64_t>>(static_cast<size_t>(out.numel()));
  const float* px = xc.data<float>();
  float* py = out.data<float>();
  parallel_for(0, g.planes, 1, [&](int64_t b, int64_t e) {
    for (int64_t pl = b; pl < e; ++pl)
      for (int64_t oh = 0; oh < g.OH; ++oh)
        for (int64_t ow = 0; ow < g.OW; ++ow) {
          float best = -std::numeric_limits<float>::infinity();
          int64_t where = -1;
          for (int64_t kh = 0; kh < g.k; ++kh) {
            const int64_t ih = oh * g.s - g.pad + kh;
            if (ih < 0 || ih >= g.H) continue;
            for (int64_t kw = 0; kw < g.k; ++kw) {
              const int64_t iw = ow * g.s - g.pad + kw;
              if (iw < 0 || iw >= g.W) continue;
              const int64_t idx = (pl * g.H + ih) * g.W + iw;
              if (where < 0 || px[idx] > best) best = px[idx], where = idx;
            }
          }
          const int64_t o = (pl * g.OH + oh) * g.OW + ow;
          py[o] = best;
          (*argmax)[static_cast<size_t>(o)] = where;
        }
  });
  autograd::record("max_pool2d", out, {&x}, [x, argmax](const Tensor& grad) {
    Tensor gc = grad.contiguous();
    Tensor dx = Tensor::zeros(x.shape());
    const float* pg = gc.data<float>();
    float* pd = dx.data<float>();
    for (size_t o = 0; o < argmax->size(); ++o) pd[(*argmax)[o]] += pg[o];
    autograd::accumulate_grad(x, dx);
  });
  return out;
}

/// Average pooling; padded cells count in the divisor (PyTorch's count_include_pad=True).
inline Tensor avg_pool2d(const Tensor& x, const Pool2dParams& p = {}) {
  const detail::PoolGeometry g = detail::pool_geometry("avg_pool2d", x, p);
  Tensor xc = x.contiguous();
  Tensor out = Tensor::empty(Shape{x.dim(0), x.dim(1), g.OH, g.OW});
  const float* px = xc.data<float>();
  float* py = out.data<float>();
  const float inv = 1.0f / static_cast<float>(g.k * g.k);
  // Calls f(output index, input index) for every window cell inside the input.
  auto visit = [g](int64_t pl, auto&& f) {
    for (int64_t oh = 0; oh < g.OH; ++oh)
      for (int64_t ow = 0; ow < g.OW; ++ow)
        for (int64_t kh = 0; kh < g.k; ++kh) {
          const int64_t ih = oh * g.s - g.pad + kh;
          if (ih < 0 || ih >= g.H) continue;
          for (int64_t kw = 0; kw < g.k; ++kw) {
            const int64_t iw = ow * g.s - g.pad + kw;
            if (iw >= 0 && iw < g.W) f((pl * g.OH + oh) * g.OW + ow, (pl * g.H + ih) * g.W + iw);
          }
        }
  };
  out.fill(0.0f);
  parallel_for(0, g.planes, 1, [&](int64_t b, int64_t e) {
    for (int64_t pl = b; pl < e; ++pl)
      visit(pl, [&](int64_t o, int64_t i) { py[o] += px[i] * inv; });
  });
  autograd::record("avg_pool2d", out, {&x}, [x, g, inv, visit](const Tensor& grad) {
    Tensor gc = grad.contiguous();
    Tensor dx = Tensor::zeros(x.shape());
    const float* pg = gc.data<float>();
    float* pd = dx.data<float>();
    for (int64_t pl = 0; pl < g.planes; ++pl)
      visit(pl, [&](int64_t o, int64_t i) { pd[i] += pg[o] * inv; });
    autograd::accumulate_grad(x, dx);
  });
  return out;
}

/// [N, C, H, W] -> [N, C]: mean over the spatial dimensions.
inline Tensor global_avg_pool(const Tensor& x) {
  check(x.ndim() == 4, "global_avg_pool: expects NCHW input, got ", x.shape());
  const int64_t planes = x.dim(0) * x.dim(1), hw = x.dim(2) * x.dim(3);
  check(hw > 0, "global_avg_pool: empty spatial size in ", x.shape());
  Tensor xc = x.contiguous();
  Tensor out = Tensor::empty(Shape{x.dim(0), x.dim(1)});
  const float* px = xc.data<float>();
  float* py = out.data<float>();
  for (int64_t p = 0; p < planes; ++p) {
    float acc = 0.0f;
    for (int64_t i = 0; i < hw; ++i) acc += px[p * hw + i];
    py[p] = acc / static_cast<float>(hw);
  }
  autograd::record("global_avg_pool", out, {&x}, [x, planes, hw](const Tensor& grad) {
    Tensor gc = grad.contiguous();
    Tensor dx = Tensor::empty(x.shape());
    const float* pg = gc.data<float>();
    float* pd = dx.data<float>();
    const float inv = 1.0f / static_cast<float>(hw);
    for (int64_t p = 0; p < planes; ++p)
      for (int64_t i = 0; i < hw; ++i) pd[p * hw + i] = pg[p] * inv;
    autograd::accumulate_grad(x, dx);
  });
  return out;
}

}  // namespace brecq
