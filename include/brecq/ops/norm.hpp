#pragma once
// 2-D batch normalization, training (batch statistics, running-stat update) and eval modes.
#include <cmath>

#include "brecq/autograd/tape.hpp"
#include "brecq/tensor/parallel.hpp"

namespace brecq {

struct BatchNormParams {
  bool training = false;
  float momentum = 0.1f;  ///< running = (1 - momentum) * running + momentum * batch (PyTorch)
  float eps = 1e-5f;
};

/// y = (x - mean) / sqrt(var + eps) * weight + bias per channel of NCHW x. In training mode the
/// batch statistics are used and running_mean / running_var (if defined) are updated in place
/// with the unbiased variance, as PyTorch does.
inline Tensor batch_norm2d(const Tensor& x, const Tensor& weight, const Tensor& bias,
                           Tensor running_mean, Tensor running_var, const BatchNormParams& p = {}) {
  check(x.ndim() == 4, "batch_norm2d: expects NCHW input, got ", x.shape());
  const int64_t N = x.dim(0), C = x.dim(1), HW = x.dim(2) * x.dim(3), count = N * HW;
  for (const Tensor* t :
       std::initializer_list<const Tensor*>{&weight, &bias, &running_mean, &running_var})
    check(!t->defined() || (t->ndim() == 1 && t->dim(0) == C), "batch_norm2d: parameter of shape ",
          shape_of(*t), " does not match ", C, " channels of input ", x.shape());
  check(p.training || (running_mean.defined() && running_var.defined()),
        "batch_norm2d: eval mode needs running statistics");
  check(!p.training || count > 1,
        "batch_norm2d: training needs more than one value per channel, got ", x.shape());
  Tensor xc = x.contiguous();
  const float* px = xc.data<float>();
  auto mean = std::make_shared<std::vector<float>>(static_cast<size_t>(C));
  auto invstd = std::make_shared<std::vector<float>>(static_cast<size_t>(C));
  parallel_for(0, C, 1, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      double m, v;
      if (p.training) {
        double s = 0.0, ss = 0.0;
        for (int64_t n = 0; n < N; ++n)
          for (int64_t i = 0; i < HW; ++i) s += px[(n * C + c) * HW + i];
        m = s / static_cast<double>(count);
        for (int64_t n = 0; n < N; ++n)
          for (int64_t i = 0; i < HW; ++i) {
            double d = px[(n * C + c) * HW + i] - m;
            ss += d * d;
          }
        v = ss / static_cast<double>(count);
        if (running_mean.defined()) {
          float& rm = running_mean.data<float>()[c];
          float& rv = running_var.data<float>()[c];
          rm = static_cast<float>((1.0 - p.momentum) * rm + p.momentum * m);
          rv = static_cast<float>((1.0 - p.momentum) * rv +
                                  p.momentum * v * static_cast<double>(count) / (count - 1));
        }
      } else {
        m = running_mean.data<float>()[c];
        v = running_var.data<float>()[c];
      }
      (*mean)[static_cast<size_t>(c)] = static_cast<float>(m);
      (*invstd)[static_cast<size_t>(c)] = static_cast<float>(1.0 / std::sqrt(v + p.eps));
    }
  });
  Tensor out = Tensor::empty(x.shape());
  float* py = out.data<float>();
  const float* pw = weight.defined() ? weight.data<float>() : nullptr;
  const float* pb = bias.defined() ? bias.data<float>() : nullptr;
  parallel_for(0, N * C, 1, [&](int64_t b, int64_t e) {
    for (int64_t nc = b; nc < e; ++nc) {
      const int64_t c = nc % C;
      const float a = (*invstd)[static_cast<size_t>(c)] * (pw ? pw[c] : 1.0f);
      const float sh = (pb ? pb[c] : 0.0f) - (*mean)[static_cast<size_t>(c)] * a;
      for (int64_t i = 0; i < HW; ++i) py[nc * HW + i] = px[nc * HW + i] * a + sh;
    }
  });
  const bool training = p.training;
  autograd::record(
      "batch_norm2d", out, {&x, &weight, &bias},
      [x, xc, weight, bias, mean, invstd, training](const Tensor& grad) {
        const int64_t N = x.dim(0), C = x.dim(1), HW = x.dim(2) * x.dim(3);
        const double cnt = static_cast<double>(N * HW);
        Tensor gc = grad.contiguous();
        const float* pg = gc.data<float>();
        const float* px = xc.data<float>();
        Tensor dx = x.requires_grad() ? Tensor::empty(x.shape()) : Tensor();
        Tensor dw = Tensor::empty(Shape{C}), db = Tensor::empty(Shape{C});
        for (int64_t c = 0; c < C; ++c) {
          const double m = (*mean)[static_cast<size_t>(c)], is = (*invstd)[static_cast<size_t>(c)];
          double sg = 0.0, sgx = 0.0;  // sum(g), sum(g * xhat)
          for (int64_t n = 0; n < N; ++n)
            for (int64_t i = 0; i < HW; ++i) {
              const int64_t k = (n * C + c) * HW + i;
              sg += pg[k];
              sgx += pg[k] * (px[k] - m) * is;
            }
          dw.data<float>()[c] = static_cast<float>(sgx);
          db.data<float>()[c] = static_cast<float>(sg);
          if (!dx.defined()) continue;
          const double gamma = weight.defined() ? weight.data<float>()[c] : 1.0;
          float* pd = dx.data<float>();
          for (int64_t n = 0; n < N; ++n)
            for (int64_t i = 0; i < HW; ++i) {
              const int64_t k = (n * C + c) * HW + i;
              if (training) {
                const double xhat = (px[k] - m) * is;
                pd[k] = static_cast<float>(gamma * is * (pg[k] - sg / cnt - xhat * sgx / cnt));
              } else {
                pd[k] = static_cast<float>(gamma * is * pg[k]);
              }
            }
        }
        if (dx.defined()) autograd::accumulate_grad(x, dx);
        autograd::accumulate_grad(weight, dw);
        autograd::accumulate_grad(bias, db);
      });
  return out;
}

}  // namespace brecq
