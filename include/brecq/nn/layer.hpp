#pragma once
// A weight layer (conv or linear) with its optional BatchNorm and activation: the unit of
// structure every model is built from and the smallest unit the quantization code reconstructs.
#include <optional>
#include <string>

#include "brecq/ops/conv.hpp"
#include "brecq/ops/elementwise.hpp"
#include "brecq/ops/matmul.hpp"
#include "brecq/ops/norm.hpp"

namespace brecq::nn {

enum class Activation { none, relu, relu6 };

inline const char* activation_name(Activation a) {
  switch (a) {
    case Activation::none:
      return "none";
    case Activation::relu:
      return "relu";
    case Activation::relu6:
      return "relu6";
  }
  return "?";
}

inline Tensor apply_activation(Activation a, const Tensor& x) {
  switch (a) {
    case Activation::relu:
      return relu(x);
    case Activation::relu6:
      return relu6(x);
    case Activation::none:
      break;
  }
  return x;
}

/// BatchNorm parameters and running statistics that follow a conv (removed by folding).
struct BatchNorm {
  std::string name;  ///< state-dict prefix, e.g. "layer1.0.bn1"
  Tensor weight, bias, running_mean, running_var;
  float eps = 1e-5f;
  float momentum = 0.1f;

  static BatchNorm make(std::string name, int64_t channels) {
    BatchNorm bn;
    bn.name = std::move(name);
    bn.weight = Tensor::ones(Shape{channels});
    bn.bias = Tensor::zeros(Shape{channels});
    bn.running_mean = Tensor::zeros(Shape{channels});
    bn.running_var = Tensor::ones(Shape{channels});
    return bn;
  }
};

enum class LayerKind { conv, linear };

/// conv2d or linear, then BatchNorm (if any), then the activation.
struct Layer {
  std::string name;  ///< state-dict prefix: the weight is name + ".weight"
  LayerKind kind = LayerKind::conv;
  Conv2dParams conv;  ///< stride, padding, dilation, groups (conv only)
  Tensor weight;      ///< conv [out, in/groups, kh, kw]; linear [out, in]
  Tensor bias;        ///< [out] or undefined
  std::optional<BatchNorm> bn;
  Activation activation = Activation::none;
  int id = -1;         ///< position in Model::layers(), set by Model::finalize()
  int act_point = -1;  ///< activation-quantization point after this layer, or -1

  int64_t out_channels() const { return weight.dim(0); }
  int64_t in_channels() const {
    return kind == LayerKind::linear ? weight.dim(1) : weight.dim(1) * conv.groups;
  }

  static Layer make_conv(std::string name, int64_t in, int64_t out, int64_t kernel,
                         const Conv2dParams& p, bool with_bias, Activation act) {
    check(in > 0 && out > 0 && kernel > 0 && p.groups > 0 && in % p.groups == 0 &&
              out % p.groups == 0,
          "conv layer ", name, ": invalid channels ", in, " -> ", out, ", kernel ", kernel,
          ", groups ", p.groups);
    Layer l;
    l.name = std::move(name);
    l.conv = p;
    l.weight = Tensor::zeros(Shape{out, in / p.groups, kernel, kernel});
    if (with_bias) l.bias = Tensor::zeros(Shape{out});
    l.activation = act;
    return l;
  }
  static Layer make_linear(std::string name, int64_t in, int64_t out,
                           Activation act = Activation::none) {
    check(in > 0 && out > 0, "linear layer ", name, ": invalid sizes ", in, " -> ", out);
    Layer l;
    l.name = std::move(name);
    l.kind = LayerKind::linear;
    l.weight = Tensor::zeros(Shape{out, in});
    l.bias = Tensor::zeros(Shape{out});
    l.activation = act;
    return l;
  }
};

/// The layer's pre-activation output with the given (possibly quantized) weight.
inline Tensor layer_linear_part(const Layer& l, const Tensor& x, const Tensor& weight,
                                bool training) {
  Tensor y =
      l.kind == LayerKind::linear ? linear(x, weight, l.bias) : conv2d(x, weight, l.bias, l.conv);
  if (l.bn) {
    const BatchNorm& bn = *l.bn;
    y = batch_norm2d(y, bn.weight, bn.bias, bn.running_mean, bn.running_var,
                     {.training = training, .momentum = bn.momentum, .eps = bn.eps});
  }
  return y;
}

}  // namespace brecq::nn
