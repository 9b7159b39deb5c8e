#pragma once
// Softmax family and losses. Composite losses are built from differentiable primitives;
// log_softmax has its own backward because it is numerically delicate and hot in training.
#include <cmath>

#include "brecq/kernels/lp.hpp"
#include "brecq/ops/elementwise.hpp"
#include "brecq/ops/reduce.hpp"

namespace brecq {

/// log(softmax(x)) along the last dimension of a 2-D [N, classes] tensor.
inline Tensor log_softmax(const Tensor& x) {
  check(x.ndim() == 2, "log_softmax: expects [N, classes], got ", x.shape());
  const int64_t N = x.dim(0), K = x.dim(1);
  Tensor xc = x.contiguous();
  Tensor out = Tensor::empty(x.shape());
  const float* px = xc.data<float>();
  float* py = out.data<float>();
  for (int64_t n = 0; n < N; ++n) {
    float mx = px[n * K];
    for (int64_t k = 1; k < K; ++k) mx = std::max(mx, px[n * K + k]);
    double s = 0.0;
    for (int64_t k = 0; k < K; ++k) s += std::exp(static_cast<double>(px[n * K + k] - mx));
    const float lse = mx + static_cast<float>(std::log(s));
    for (int64_t k = 0; k < K; ++k) py[n * K + k] = px[n * K + k] - lse;
  }
  autograd::record("log_softmax", out, {&x}, [x, out](const Tensor& grad) {
    const int64_t N = x.dim(0), K = x.dim(1);
    Tensor gc = grad.contiguous();
    Tensor dx = Tensor::empty(x.shape());
    const float* pg = gc.data<float>();
    const float* py = out.data<float>();
    float* pd = dx.data<float>();
    for (int64_t n = 0; n < N; ++n) {
      double s = 0.0;
      for (int64_t k = 0; k < K; ++k) s += pg[n * K + k];
      for (int64_t k = 0; k < K; ++k)
        pd[n * K + k] = pg[n * K + k] - std::exp(py[n * K + k]) * static_cast<float>(s);
    }
    autograd::accumulate_grad(x, dx);
  });
  return out;
}

inline Tensor softmax(const Tensor& x) { return exp(log_softmax(x)); }

namespace detail {
/// [N] integer labels as a [N, classes] one-hot float tensor, validated.
inline Tensor one_hot(const std::vector<int>& labels, int64_t N, int64_t K) {
  check(static_cast<int64_t>(labels.size()) == N, "cross_entropy: ", labels.size(),
        " labels for a batch of ", N);
  Tensor t = Tensor::zeros(Shape{N, K});
  for (int64_t n = 0; n < N; ++n) {
    const int l = labels[static_cast<size_t>(n)];
    check(l >= 0 && l < K, "cross_entropy: label ", l, " at position ", n, " outside [0, ", K, ")");
    t.data<float>()[n * K + l] = 1.0f;
  }
  return t;
}
}  // namespace detail

/// Mean negative log-likelihood of integer labels under softmax(logits).
inline Tensor cross_entropy(const Tensor& logits, const std::vector<int>& labels) {
  check(logits.ndim() == 2, "cross_entropy: expects logits [N, classes], got ", logits.shape());
  Tensor target = detail::one_hot(labels, logits.dim(0), logits.dim(1));
  return neg(sum(mul(log_softmax(logits), target))) * (1.0f / static_cast<float>(logits.dim(0)));
}

/// KL(p || q) with p = softmax(target_logits) and q = softmax(logits), averaged over the batch
/// (PyTorch's kl_div(log q, p, reduction="batchmean")). Gradient flows into both arguments.
inline Tensor kl_div(const Tensor& logits, const Tensor& target_logits) {
  check(logits.shape() == target_logits.shape() && logits.ndim() == 2, "kl_div: logits ",
        logits.shape(), " and target logits ", target_logits.shape(), " must both be [N, classes]");
  Tensor log_p = log_softmax(target_logits);
  Tensor log_q = log_softmax(logits);
  return sum(mul(exp(log_p), sub(log_p, log_q))) * (1.0f / static_cast<float>(logits.dim(0)));
}

/// Mean squared error.
inline Tensor mse_loss(const Tensor& a, const Tensor& b) { return mean(square(sub(a, b))); }

/// sum(w^2 |pred - target|^p) / (numel / channels): the channel sum averaged over batch and
/// positions (the official BRECQ lp_loss; w = optional Fisher weights, else 1). One fused pass;
/// the gradient flows into pred only (target and w are data).
inline Tensor lp_loss(const Tensor& pred, const Tensor& target, float p,
                      const Tensor& w = Tensor()) {
  check(pred.shape() == target.shape() && (!w.defined() || w.shape() == pred.shape()),
        "lp_loss: prediction ", pred.shape(), ", target ", target.shape(), " and weights ",
        shape_of(w), " must have one shape");
  check(pred.ndim() >= 1 && pred.numel() > 0, "lp_loss: needs a non-empty batch, got ",
        pred.shape());
  check(p > 0, "lp_loss: exponent must be > 0, got ", p);
  const double norm = 1.0 / static_cast<double>(pred.numel() / (pred.ndim() > 1 ? pred.dim(1) : 1));
  Tensor pc = pred.contiguous(), tc = target.contiguous(),
         wc = w.defined() ? w.contiguous() : Tensor();
  const float* pw = wc.defined() ? wc.data<float>() : nullptr;
  // The gradient comes out of the same pass (it shares |d|^p), scaled in the backward.
  Tensor grad = autograd::any_requires_grad({&pred}) ? Tensor::empty(pred.shape()) : Tensor();
  const double dist = kernels::lp_distance(pc.data<float>(), tc.data<float>(), pw, pred.numel(), p,
                                           grad.defined() ? grad.data<float>() : nullptr);
  Tensor out = Tensor::scalar(static_cast<float>(dist * norm));
  autograd::record("lp_loss", out, {&pred}, [pred, grad, norm](const Tensor& g) {
    autograd::accumulate_grad(pred, mul(grad, static_cast<float>(g.item() * norm)));
  });
  return out;
}

}  // namespace brecq
