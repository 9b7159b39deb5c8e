#pragma once
// The model registry (make_model by name) and weight initialization: Kaiming-normal for training
// from scratch, and a deterministic fill that tools/make_golden_models.py reproduces bit-exactly
// in Python to compare forward passes with torchvision.
#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "brecq/nn/cifar_resnet.hpp"
#include "brecq/nn/mobilenet_v2.hpp"
#include "brecq/nn/resnet.hpp"
#include "brecq/tensor/rng.hpp"

namespace brecq::nn {

/// Options for make_model. Fields an architecture does not have must keep their defaults.
struct ModelOptions {
  int64_t num_classes = 0;        ///< 0: the architecture's default (1000 ImageNet, 10 CIFAR)
  int64_t in_channels = 3;        ///< 1 for grayscale data such as Fashion-MNIST
  double width_mult = 1.0;        ///< mobilenet_v2 only
  bool small_input_stem = false;  ///< resnet18/34/50, mobilenet_v2 (resnet18_cifar always has it)
  int64_t base_width = 64;        ///< resnet18_cifar only: conv1/layer1 channels (64-128-256-512)
};

/// Reconstruction settings an architecture needs beyond the official defaults (the command line
/// and the benchmarks apply them, print them and let a flag override them).
struct ReconstructionPreset {
  std::optional<float> rounding_lambda{};  ///< AdaRound regulariser weight (default 0.01)
  std::string_view why = "";               ///< the reason, printed with the preset
};

/// One registry entry.
struct ModelInfo {
  std::string_view name;
  std::string_view description;
  int64_t default_num_classes = 1000;
  std::string_view preprocess;  ///< input preset the model expects: "imagenet" or "cifar"
  bool has_width_mult = false;
  bool has_small_input_stem = false;
  bool has_base_width = false;
  Model (*build)(const ModelOptions&) = nullptr;  ///< num_classes already resolved
  ReconstructionPreset preset{};
};

namespace detail {
inline ResNetOptions resnet_options(const ModelOptions& o) {
  return {.num_classes = o.num_classes,
          .in_channels = o.in_channels,
          .small_input_stem = o.small_input_stem,
          .base_width = o.base_width};
}
inline CifarResNetOptions cifar_resnet_options(const ModelOptions& o) {
  return {.num_classes = o.num_classes, .in_channels = o.in_channels};
}
}  // namespace detail

/// Every registered architecture, in a fixed order.
inline std::span<const ModelInfo> model_registry() {
  using O = const ModelOptions&;
  using detail::cifar_resnet_options;
  using detail::resnet_options;
  static const std::array<ModelInfo, 9> table{{
      {"resnet18", "torchvision ResNet-18 (BasicBlock, 2-2-2-2)", 1000, "imagenet", false, true,
       false, [](O o) { return resnet18(resnet_options(o)); }},
      {"resnet34", "torchvision ResNet-34 (BasicBlock, 3-4-6-3)", 1000, "imagenet", false, true,
       false, [](O o) { return resnet34(resnet_options(o)); }},
      {"resnet50", "torchvision ResNet-50 (Bottleneck, 3-4-6-3)", 1000, "imagenet", false, true,
       false, [](O o) { return resnet50(resnet_options(o)); }},
      {"resnet18_cifar", "ResNet-18 with a 3x3 stride-1 stem and no max-pool (32x32 inputs)", 10,
       "cifar", false, false, true,
       [](O o) {
         ResNetOptions r = resnet_options(o);
         r.small_input_stem = true;
         return resnet18(r);
       }},
      {"mobilenet_v2",
       "torchvision MobileNetV2 (ReLU6, width multiplier)",
       1000,
       "imagenet",
       true,
       true,
       false,
       [](O o) {
         return mobilenet_v2({.num_classes = o.num_classes,
                              .in_channels = o.in_channels,
                              .width_mult = o.width_mult,
                              .small_input_stem = o.small_input_stem});
       },
       {.rounding_lambda = 0.1f,
        .why = "depthwise convolutions need a stronger rounding regulariser; official repository "
               "issue #16 got 0.14 % top-1 at 0.01"}},
      {"resnet20_cifar", "CIFAR ResNet-20 of He et al. (option-A shortcuts)", 10, "cifar", false,
       false, false, [](O o) { return resnet20_cifar(cifar_resnet_options(o)); }},
      {"resnet32_cifar", "CIFAR ResNet-32 of He et al. (option-A shortcuts)", 10, "cifar", false,
       false, false, [](O o) { return resnet32_cifar(cifar_resnet_options(o)); }},
      {"resnet44_cifar", "CIFAR ResNet-44 of He et al. (option-A shortcuts)", 10, "cifar", false,
       false, false, [](O o) { return resnet44_cifar(cifar_resnet_options(o)); }},
      {"resnet56_cifar", "CIFAR ResNet-56 of He et al. (option-A shortcuts)", 10, "cifar", false,
       false, false, [](O o) { return resnet56_cifar(cifar_resnet_options(o)); }},
  }};
  return table;
}

/// The registered names, comma-separated (for messages and usage texts).
inline std::string model_names_list() {
  std::string s;
  for (const ModelInfo& i : model_registry()) s += (s.empty() ? "" : ", ") + std::string(i.name);
  return s;
}

inline std::vector<std::string> model_names() {
  std::vector<std::string> out;
  for (const ModelInfo& i : model_registry()) out.emplace_back(i.name);
  return out;
}

/// The registry entry for `name`; an unknown name raises Error listing the valid ones.
inline const ModelInfo& model_info(std::string_view name) {
  for (const ModelInfo& i : model_registry())
    if (i.name == name) return i;
  fail("unknown model '", name, "'; expected one of: ", model_names_list());
}

/// Builds the named architecture with zero weights and identity BatchNorms (load weights, or
/// call init_kaiming to train from scratch). Model::arch is the registry name.
inline Model make_model(std::string_view name, const ModelOptions& o = {}) {
  const ModelInfo& info = model_info(name);
  check(o.num_classes >= 0, "make_model ", name, ": num_classes must be >= 0 (0 = default ",
        info.default_num_classes, "), got ", o.num_classes);
  check(o.in_channels >= 1, "make_model ", name, ": in_channels must be >= 1, got ", o.in_channels);
  check(info.has_width_mult || o.width_mult == 1.0, "make_model ", name,
        ": width_mult must be 1 (only mobilenet_v2 has a width multiplier), got ", o.width_mult);
  check(info.has_small_input_stem || !o.small_input_stem, "make_model ", name,
        ": small_input_stem is only an option of resnet18, resnet34, resnet50 and mobilenet_v2");
  check(info.has_base_width || o.base_width == 64, "make_model ", name,
        ": base_width must be 64 (only resnet18_cifar has a base width), got ", o.base_width);
  check(o.base_width >= 1, "make_model ", name, ": base_width must be >= 1, got ", o.base_width);
  ModelOptions resolved = o;
  if (resolved.num_classes == 0) resolved.num_classes = info.default_num_classes;
  Model m = info.build(resolved);
  m.arch = std::string(name);
  return m;
}

// ---- initialization ------------------------------------------------------------------------

/// 64-bit FNV-1a of the bytes of s.
inline constexpr uint64_t fnv1a64(std::string_view s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (char c : s) {
    h ^= static_cast<uint8_t>(c);
    h *= 0x100000001B3ull;
  }
  return h;
}

/// Fills a contiguous f32 tensor with uniform values in [lo, hi) from Rng(seed ^ fnv1a64(name)):
/// value = float(lo + (hi - lo) * u) computed in double, u = Rng::uniform() (24 random bits).
/// Bit-exact with deterministic_fill() in tools/make_golden_models.py.
inline void fill_deterministic(Tensor& t, uint64_t seed, std::string_view name, float lo,
                               float hi) {
  check(t.is_contiguous(), "fill_deterministic: tensor ", name, " of shape ", t.shape(),
        " is not contiguous");
  Rng rng(seed ^ fnv1a64(name));
  float* p = t.data<float>();
  const double dlo = lo, span = static_cast<double>(hi) - dlo;
  for (int64_t i = 0; i < t.numel(); ++i)
    p[i] = static_cast<float>(dlo + span * static_cast<double>(rng.uniform()));
}

inline Tensor deterministic_uniform(Shape shape, uint64_t seed, std::string_view name, float lo,
                                    float hi) {
  Tensor t = Tensor::empty(std::move(shape));
  fill_deterministic(t, seed, name, lo, hi);
  return t;
}

/// Deterministic weights for golden tests, tensor by state-dict name (order-independent):
/// conv/linear weights U(-a, a) with a = sqrt(3 / fan_in), biases U(-0.1, 0.1), BN weight
/// U(0.5, 1.5), BN bias U(-0.1, 0.1), running_mean U(-0.1, 0.1), running_var U(0.5, 1.5).
inline void init_deterministic(Model& m, uint64_t seed) {
  for (Layer* l : m.layers()) {
    const int64_t fan_in = l->weight.numel() / l->out_channels();
    const float a = static_cast<float>(std::sqrt(3.0 / static_cast<double>(fan_in)));
    fill_deterministic(l->weight, seed, l->name + ".weight", -a, a);
    if (l->bias.defined()) fill_deterministic(l->bias, seed, l->name + ".bias", -0.1f, 0.1f);
    if (l->bn) {
      BatchNorm& bn = *l->bn;
      fill_deterministic(bn.weight, seed, bn.name + ".weight", 0.5f, 1.5f);
      fill_deterministic(bn.bias, seed, bn.name + ".bias", -0.1f, 0.1f);
      fill_deterministic(bn.running_mean, seed, bn.name + ".running_mean", -0.1f, 0.1f);
      fill_deterministic(bn.running_var, seed, bn.name + ".running_var", 0.5f, 1.5f);
    }
  }
}

/// torchvision's initialization for training from scratch: conv weights Kaiming-normal
/// (fan_out, ReLU gain: std = sqrt(2 / (out * kh * kw))), conv biases 0, BatchNorm weight 1,
/// bias 0 and fresh running statistics, linear weight and bias U(-1/sqrt(in), 1/sqrt(in)).
inline void init_kaiming(Model& m, Rng& rng) {
  for (Layer* l : m.layers()) {
    if (l->kind == LayerKind::conv) {
      const int64_t fan_out = l->out_channels() * l->weight.dim(2) * l->weight.dim(3);
      l->weight.copy_from(
          Tensor::randn(l->weight.shape(), rng,
                        static_cast<float>(std::sqrt(2.0 / static_cast<double>(fan_out)))));
      if (l->bias.defined()) l->bias.fill(0.0f);
    } else {
      const float a = static_cast<float>(1.0 / std::sqrt(static_cast<double>(l->in_channels())));
      l->weight.copy_from(Tensor::uniform(l->weight.shape(), rng, -a, a));
      if (l->bias.defined()) l->bias.copy_from(Tensor::uniform(l->bias.shape(), rng, -a, a));
    }
    if (l->bn) {
      l->bn->weight.fill(1.0f);
      l->bn->bias.fill(0.0f);
      l->bn->running_mean.fill(0.0f);
      l->bn->running_var.fill(1.0f);
    }
  }
}

}  // namespace brecq::nn
