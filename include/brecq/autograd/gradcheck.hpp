#pragma once
// Central finite-difference check of analytic gradients.
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "brecq/autograd/tape.hpp"

namespace brecq::autograd {

struct GradcheckParams {
  double eps = 1e-3;   ///< finite-difference step
  double atol = 1e-3;  ///< absolute tolerance
  double rtol = 1e-2;  ///< relative tolerance
};

struct GradcheckResult {
  bool ok = true;
  double max_abs_error = 0.0;
  std::string message;  ///< first mismatch: input index, element, analytic and numeric values
};

/// Compares d(sum(f(inputs) * seed))/d(inputs) computed by backward() with central differences.
/// Inputs are perturbed in place (and restored); f is evaluated in double precision via a
/// random projection seed, so the check covers non-scalar outputs too.
inline GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                                 std::vector<Tensor> inputs, const GradcheckParams& p = {}) {
  for (Tensor& t : inputs) {
    t = t.clone();
    t.set_requires_grad(true);
  }
  Tensor out0;
  {
    NoGrad ng;
    out0 = f(inputs);
  }
  Rng rng(12345);
  Tensor seed = Tensor::uniform(out0.shape(), rng, 0.5f, 1.5f);
  auto project = [&](const Tensor& out) {
    Tensor oc = out.contiguous();
    const float* po = oc.data<float>();
    const float* ps = seed.data<float>();
    double s = 0.0;
    for (int64_t i = 0; i < oc.numel(); ++i) s += static_cast<double>(po[i]) * ps[i];
    return s;
  };
  tape().clear();
  Tensor out = f(inputs);
  backward(out, seed);
  GradcheckResult r;
  NoGrad ng;
  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor& x = inputs[k];
    Tensor g = x.grad();
    float* px = x.data<float>();
    for (int64_t i = 0; i < x.numel(); ++i) {
      const float orig = px[i];
      px[i] = static_cast<float>(orig + p.eps);
      const double fp = project(f(inputs));
      px[i] = static_cast<float>(orig - p.eps);
      const double fm = project(f(inputs));
      px[i] = orig;
      const double numeric = (fp - fm) / (2 * p.eps);
      const double analytic = g.defined() ? g.data<float>()[i] : 0.0;
      const double err = std::fabs(numeric - analytic);
      r.max_abs_error = std::max(r.max_abs_error, err);
      if (r.ok && err > p.atol + p.rtol * std::fabs(numeric)) {
        r.ok = false;
        r.message = detail::concat("input ", k, " element ", i, ": analytic ", analytic,
                                   ", numeric ", numeric);
      }
    }
  }
  return r;
}

}  // namespace brecq::autograd
