#pragma once
// Optimizers with PyTorch's update rules, and learning-rate schedules.
#include <cmath>
#include <vector>

#include "brecq/autograd/tape.hpp"
#include "brecq/kernels/adam.hpp"

namespace brecq {

/// Base: a list of parameters and a learning rate that schedules may change.
class Optimizer {
 public:
  explicit Optimizer(std::vector<Tensor> params, float lr) : params_(std::move(params)), lr_(lr) {
    for (const Tensor& p : params_)
      check(p.requires_grad(), "Optimizer: every parameter must have requires_grad set (shape ",
            p.shape(), ")");
    check(lr >= 0.0f, "Optimizer: learning rate must be >= 0, got ", lr);
  }
  virtual ~Optimizer() = default;
  virtual void step() = 0;
  void zero_grad() {
    for (Tensor& p : params_) p.zero_grad();
  }
  float lr() const { return lr_; }
  void set_lr(float lr) { lr_ = lr; }
  const std::vector<Tensor>& params() const { return params_; }

 protected:
  std::vector<Tensor> params_;
  float lr_;
};

struct SgdParams {
  float lr = 0.01f;
  float momentum = 0.0f;
  float weight_decay = 0.0f;
  float dampening = 0.0f;
  bool nesterov = false;
};

/// torch.optim.SGD
class Sgd : public Optimizer {
 public:
  Sgd(std::vector<Tensor> params, const SgdParams& p) : Optimizer(std::move(params), p.lr), p_(p) {
    check(!p.nesterov || (p.momentum > 0 && p.dampening == 0),
          "Sgd: nesterov needs momentum > 0 and zero dampening");
    buf_.resize(params_.size());
  }
  void step() override {
    for (size_t k = 0; k < params_.size(); ++k) {
      Tensor g = params_[k].grad();
      if (!g.defined()) continue;
      float* w = params_[k].data<float>();
      const float* pg = g.data<float>();
      const int64_t n = params_[k].numel();
      // PyTorch starts the momentum buffer at the first gradient, not at zero.
      const bool first = p_.momentum != 0.0f && !buf_[k].defined();
      if (first) buf_[k] = Tensor::empty(params_[k].shape());
      float* b = buf_[k].defined() ? buf_[k].data<float>() : nullptr;
      for (int64_t i = 0; i < n; ++i) {
        float d = pg[i] + p_.weight_decay * w[i];
        if (b) {
          b[i] = first ? d : p_.momentum * b[i] + (1 - p_.dampening) * d;
          d = p_.nesterov ? d + p_.momentum * b[i] : b[i];
        }
        w[i] -= lr_ * d;
      }
    }
  }
  /// Momentum buffers, in parameter order (undefined before a parameter's first step), for saving
  /// and resuming optimizer state.
  std::vector<Tensor>& momentum_buffers() { return buf_; }

 private:
  SgdParams p_;
  std::vector<Tensor> buf_;
};

struct AdamParams {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
};

/// torch.optim.Adam (L2 weight decay added to the gradient, bias-corrected moments).
class Adam : public Optimizer {
 public:
  Adam(std::vector<Tensor> params, const AdamParams& p = {})
      : Optimizer(std::move(params), p.lr), p_(p) {
    for (const Tensor& t : params_) {
      m_.push_back(Tensor::zeros(t.shape()));
      v_.push_back(Tensor::zeros(t.shape()));
    }
  }
  void step() override {
    ++t_;
    const double bc1 = 1.0 - std::pow(static_cast<double>(p_.beta1), t_);
    const double bc2 = 1.0 - std::pow(static_cast<double>(p_.beta2), t_);
    const float step = static_cast<float>(lr_ / bc1);
    const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
    const kernels::AdamStep st{p_.beta1, p_.beta2, p_.eps, p_.weight_decay, step, bc2_sqrt};
    for (size_t k = 0; k < params_.size(); ++k) {
      Tensor g = params_[k].grad();
      if (!g.defined()) continue;
      kernels::adam_update(params_[k].data<float>(), g.data<float>(), m_[k].data<float>(),
                           v_[k].data<float>(), params_[k].numel(), st);
    }
  }
  int64_t steps() const { return t_; }
  /// Moment buffers, in parameter order (for saving and resuming optimizer state).
  std::vector<Tensor>& first_moments() { return m_; }
  std::vector<Tensor>& second_moments() { return v_; }
  void set_steps(int64_t t) { t_ = t; }

 private:
  AdamParams p_;
  std::vector<Tensor> m_, v_;
  int64_t t_ = 0;
};

/// torch.optim.lr_scheduler.CosineAnnealingLR (closed form): lr at step t of t_max.
inline float cosine_lr(float base_lr, int64_t t, int64_t t_max, float eta_min = 0.0f) {
  check(t_max > 0, "cosine_lr: t_max must be > 0, got ", t_max);
  const double c =
      std::cos(3.14159265358979323846 * static_cast<double>(t) / static_cast<double>(t_max));
  return static_cast<float>(eta_min + (base_lr - eta_min) * (1.0 + c) / 2.0);
}

/// torch.optim.lr_scheduler.StepLR: base_lr * gamma^(floor(t / step_size)).
inline float step_lr(float base_lr, int64_t t, int64_t step_size, float gamma = 0.1f) {
  check(step_size > 0, "step_lr: step_size must be > 0, got ", step_size);
  return static_cast<float>(
      base_lr * std::pow(static_cast<double>(gamma), static_cast<double>(t / step_size)));
}

}  // namespace brecq
