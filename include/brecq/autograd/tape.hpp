#pragma once
// Reverse-mode autodiff on an append-only tape. Ops record one Node per differentiable result;
// because a node can only consume tensors created before it, reverse creation order is a valid
// topological order and backward() is a plain loop: deterministic, no recursion.
#include <functional>
#include <memory>
#include <vector>

#include "brecq/tensor/tensor.hpp"

namespace brecq {

namespace autograd {

struct Node {
  const char* op;                         ///< op name, for error messages
  std::shared_ptr<TensorImpl> output;     ///< the recorded result
  std::function<void(const Tensor&)> fn;  ///< receives d(loss)/d(output), accumulates into inputs
};

class Tape {
 public:
  void record(Node node) { nodes_.push_back(std::move(node)); }
  /// Drops every node and the intermediate tensors they keep alive.
  void clear() { nodes_.clear(); }
  size_t size() const { return nodes_.size(); }
  std::vector<Node>& nodes() { return nodes_; }

 private:
  std::vector<Node> nodes_;
};

/// The calling thread's tape.
inline Tape& tape() {
  thread_local Tape t;
  return t;
}

inline bool& grad_mode_flag() {
  thread_local bool enabled = true;
  return enabled;
}
inline bool grad_enabled() { return grad_mode_flag(); }

/// Scope in which ops record nothing (evaluation, caching calibration activations, optimizer
/// steps).
class NoGrad {
 public:
  NoGrad() : previous_(grad_mode_flag()) { grad_mode_flag() = false; }
  ~NoGrad() { grad_mode_flag() = previous_; }
  NoGrad(const NoGrad&) = delete;
  NoGrad& operator=(const NoGrad&) = delete;

 private:
  bool previous_;
};

/// True when grad mode is on and some input requires a gradient.
inline bool any_requires_grad(std::initializer_list<const Tensor*> inputs) {
  if (!grad_enabled()) return false;
  for (const Tensor* t : inputs)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}

/// Records `fn` as the backward of `output` if any input requires a gradient.
template <typename Fn>
inline void record(const char* op, Tensor& output, std::initializer_list<const Tensor*> inputs,
                   Fn&& fn) {
  if (!any_requires_grad(inputs)) return;
  output.impl().requires_grad = true;
  output.impl().is_leaf = false;
  tape().record(Node{op, output.impl_ptr(), std::forward<Fn>(fn)});
}

/// Adds g into t's gradient when t requires one. A gradient may share g's data (no copy);
/// accumulation then writes into a fresh tensor instead of in place (copy on write), so a
/// gradient handed to several inputs is never modified behind their backs.
inline void accumulate_grad(const Tensor& t, const Tensor& g) {
  if (!t.defined() || !t.requires_grad()) return;
  TensorImpl& ti = t.impl();
  check(g.shape() == t.shape(), "autograd: gradient of shape ", g.shape(),
        " does not match its tensor of shape ", t.shape());
  if (!ti.grad) {
    ti.grad = g.is_contiguous() ? g.impl_ptr() : g.clone().impl_ptr();
    return;
  }
  Tensor acc(ti.grad);
  Tensor gc = g.contiguous();
  const bool exclusive = ti.grad.use_count() == 2 && ti.grad->storage.use_count() == 1;
  if (!exclusive) acc = acc.clone();
  float* a = acc.data<float>();
  const float* b = gc.data<float>();
  for (int64_t i = 0, n = acc.numel(); i < n; ++i) a[i] += b[i];
  ti.grad = acc.impl_ptr();
}

}  // namespace autograd

using autograd::NoGrad;

/// Back-propagates from `root` (a scalar unless `seed` is given) through the calling thread's
/// tape, accumulating gradients into every tensor that requires one, intermediates included
/// (read them with grad()). The tape is cleared afterwards. Gradients may share data with each
/// other (copy on write): read them, do not modify them in place.
inline void backward(const Tensor& root, Tensor seed = Tensor()) {
  check(root.requires_grad(),
        "backward: the root tensor does not require a gradient "
        "(no parameter with requires_grad reached it)");
  if (!seed.defined()) {
    check(root.numel() == 1, "backward: root must be a scalar without a seed, got shape ",
          root.shape());
    seed = Tensor::ones(root.shape());
  }
  check(seed.shape() == root.shape(), "backward: seed shape ", seed.shape(),
        " does not match root shape ", root.shape());
  autograd::accumulate_grad(root, seed.clone());  // never alias the caller's seed
  auto& nodes = autograd::tape().nodes();
  {
    NoGrad no_grad;
    for (size_t i = nodes.size(); i-- > 0;) {
      autograd::Node& n = nodes[i];
      if (!n.output->grad) continue;
      n.fn(Tensor(n.output->grad));
    }
  }
  autograd::tape().clear();
}

}  // namespace brecq
