#pragma once
// BatchNorm folding over the model description: w' = w * g / sqrt(var + eps),
// b' = (b - mean) * g / sqrt(var + eps) + beta, for every conv followed by BN.
#include <cmath>

#include "brecq/nn/model.hpp"

namespace brecq::nn {

inline void fold_batchnorm(Layer& l) {
  if (!l.bn) return;
  const BatchNorm& bn = *l.bn;
  const int64_t C = l.out_channels(), per = l.weight.numel() / C;
  Tensor w = l.weight.contiguous().clone();
  Tensor b = Tensor::zeros(Shape{C});
  float* pw = w.data<float>();
  float* pb = b.data<float>();
  for (int64_t c = 0; c < C; ++c) {
    const double scale = static_cast<double>(bn.weight.data<float>()[c]) /
                         std::sqrt(static_cast<double>(bn.running_var.data<float>()[c]) + bn.eps);
    for (int64_t i = 0; i < per; ++i) pw[c * per + i] = static_cast<float>(pw[c * per + i] * scale);
    const double b0 = l.bias.defined() ? l.bias.data<float>()[c] : 0.0;
    pb[c] = static_cast<float>((b0 - bn.running_mean.data<float>()[c]) * scale +
                               bn.bias.data<float>()[c]);
  }
  l.weight = w;
  l.bias = b;
  l.bn.reset();
}

/// Folds every BatchNorm of the model into its preceding conv, in place.
inline void fold_batchnorm(Model& m) {
  for (Layer* l : m.layers()) fold_batchnorm(*l);
}

}  // namespace brecq::nn
