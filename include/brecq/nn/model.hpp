#pragma once
// A model as data: an ordered list of blocks (stem, the residual/inverted-residual blocks of each
// stage, the head), each a main path of Layers, an optional shortcut and a residual add. The
// quantization code walks this description only, never a concrete architecture class.
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "brecq/nn/layer.hpp"
#include "brecq/ops/pool.hpp"
#include "brecq/ops/shape.hpp"

namespace brecq::nn {

enum class ShortcutKind {
  none,        ///< no residual add
  identity,    ///< out = main(x) + x
  option_a,    ///< CIFAR ResNet: x[:, :, ::s, ::s] zero-padded on the channel axis
  projection,  ///< out = main(x) + shortcut_layers(x)  (1x1 conv + BN)
};

enum class BlockKind { stem, basic, bottleneck, inverted_residual, conv, head };

inline const char* block_kind_name(BlockKind k) {
  switch (k) {
    case BlockKind::stem:
      return "stem";
    case BlockKind::basic:
      return "basic";
    case BlockKind::bottleneck:
      return "bottleneck";
    case BlockKind::inverted_residual:
      return "inverted_residual";
    case BlockKind::conv:
      return "conv";
    case BlockKind::head:
      return "head";
  }
  return "?";
}

struct Block {
  std::string name;  ///< e.g. "layer2.0"
  BlockKind kind = BlockKind::basic;
  int stage = 0;  ///< index of the stage (group of blocks between downsamplings); stem 0
  bool global_pool_before = false;  ///< head: [N,C,H,W] -> [N,C] before the layers
  std::vector<Layer> layers{};      ///< main path, in order
  ShortcutKind shortcut = ShortcutKind::none;
  std::vector<Layer> shortcut_layers{};          ///< projection shortcut
  int64_t option_a_stride = 1;                   ///< option A: spatial subsampling
  int64_t option_a_pad = 0;                      ///< option A: zero channels added on each side
  Activation out_activation = Activation::none;  ///< after the residual add
  std::optional<Pool2dParams> max_pool_after{};  ///< ImageNet ResNet stem
  int out_point = -1;  ///< activation-quantization point at the block output, or -1
};

/// What a caller can change or observe during a forward pass: the weight used by each layer
/// (quantized weights), the activation-quantization points, and each layer's input and output
/// (layer_output may record them, or replace the output, e.g. by a leaf to differentiate at).
struct ForwardHooks {
  std::function<Tensor(const Layer&)> weight{};                  ///< default: layer.weight
  std::function<Tensor(int point, const Tensor&)> activation{};  ///< default: identity
  std::function<Tensor(const Layer&, const Tensor& in, const Tensor& out)> layer_output{};
  bool training = false;  ///< BatchNorm uses batch statistics and updates running ones
};

/// One layer with hooks: linear part, activation, then its activation-quantization point.
inline Tensor forward_layer(const Layer& l, const Tensor& x, const ForwardHooks& h) {
  Tensor w = h.weight ? h.weight(l) : l.weight;
  Tensor y = apply_activation(l.activation, layer_linear_part(l, x, w, h.training));
  if (l.act_point >= 0 && h.activation) y = h.activation(l.act_point, y);
  if (h.layer_output) y = h.layer_output(l, x, y);
  return y;
}

inline Tensor forward_block(const Block& b, const Tensor& x, const ForwardHooks& h) {
  Tensor y = b.global_pool_before ? global_avg_pool(x) : x;
  for (const Layer& l : b.layers) y = forward_layer(l, y, h);
  switch (b.shortcut) {
    case ShortcutKind::none:
      break;
    case ShortcutKind::identity:
      y = add(y, x);
      break;
    case ShortcutKind::option_a:
      y = add(y, pad_channels(subsample(x, b.option_a_stride, b.option_a_stride), b.option_a_pad,
                              b.option_a_pad));
      break;
    case ShortcutKind::projection: {
      Tensor s = x;
      for (const Layer& l : b.shortcut_layers) s = forward_layer(l, s, h);
      y = add(y, s);
      break;
    }
  }
  y = apply_activation(b.out_activation, y);
  if (b.max_pool_after) y = max_pool2d(y, *b.max_pool_after);
  if (b.out_point >= 0 && h.activation) y = h.activation(b.out_point, y);
  return y;
}

class Model {
 public:
  std::string arch;  ///< e.g. "resnet20_cifar"
  int64_t num_classes = 0;
  int64_t in_channels = 3;
  std::vector<Block> blocks;  ///< stem first, head last
  /// Activation-quantization point of the model input (the image), point 0; applied when a
  /// forward pass starts at the first block.
  int input_point = -1;

  /// Numbers the layers and activation-quantization points. Builders call it once.
  void finalize() {
    int layer_id = 0, point = 0;
    input_point = point++;
    for (Block& b : blocks) {
      for (size_t i = 0; i < b.layers.size(); ++i) {
        b.layers[i].id = layer_id++;
        // Inside a block every layer but the last feeds the next one directly: quantize there.
        b.layers[i].act_point = i + 1 < b.layers.size() ? point++ : -1;
      }
      for (Layer& l : b.shortcut_layers) {
        l.id = layer_id++;
        l.act_point = -1;
      }
      b.out_point = b.kind == BlockKind::head ? -1 : point++;
    }
    num_points_ = point;
  }

  int num_points() const { return num_points_; }
  int num_stages() const { return blocks.empty() ? 0 : blocks.back().stage + 1; }

  /// Every layer in forward order (main path, then shortcut, block by block).
  std::vector<Layer*> layers() {
    std::vector<Layer*> out;
    for (Block& b : blocks) {
      for (Layer& l : b.layers) out.push_back(&l);
      for (Layer& l : b.shortcut_layers) out.push_back(&l);
    }
    return out;
  }
  std::vector<const Layer*> layers() const {
    std::vector<const Layer*> out;
    for (const Block& b : blocks) {
      for (const Layer& l : b.layers) out.push_back(&l);
      for (const Layer& l : b.shortcut_layers) out.push_back(&l);
    }
    return out;
  }

  /// Runs blocks [first, last) on x.
  Tensor forward_blocks(const Tensor& x, size_t first, size_t last,
                        const ForwardHooks& h = {}) const {
    check(first <= last && last <= blocks.size(), "Model::forward_blocks: range [", first, ", ",
          last, ") outside the ", blocks.size(), " blocks of ", arch);
    Tensor y = x;
    if (first == 0 && last > 0 && input_point >= 0 && h.activation)
      y = h.activation(input_point, y);
    for (size_t i = first; i < last; ++i) y = forward_block(blocks[i], y, h);
    return y;
  }
  Tensor forward(const Tensor& x, const ForwardHooks& h = {}) const {
    check(x.ndim() == 4 && x.dim(1) == in_channels, arch, ": expected input [N, ", in_channels,
          ", H, W], got ", x.shape());
    return forward_blocks(x, 0, blocks.size(), h);
  }

  /// Named parameters and buffers as PyTorch's state_dict names them (num_batches_tracked aside).
  std::vector<std::pair<std::string, Tensor>> state_dict() const {
    std::vector<std::pair<std::string, Tensor>> out;
    for (const Layer* l : layers()) {
      out.emplace_back(l->name + ".weight", l->weight);
      if (l->bias.defined()) out.emplace_back(l->name + ".bias", l->bias);
      if (l->bn) {
        out.emplace_back(l->bn->name + ".weight", l->bn->weight);
        out.emplace_back(l->bn->name + ".bias", l->bn->bias);
        out.emplace_back(l->bn->name + ".running_mean", l->bn->running_mean);
        out.emplace_back(l->bn->name + ".running_var", l->bn->running_var);
      }
    }
    return out;
  }

  /// Parameters to train (weights, biases, BN affine), not running statistics.
  std::vector<Tensor> parameters() const {
    std::vector<Tensor> out;
    for (const Layer* l : layers()) {
      out.push_back(l->weight);
      if (l->bias.defined()) out.push_back(l->bias);
      if (l->bn) {
        out.push_back(l->bn->weight);
        out.push_back(l->bn->bias);
      }
    }
    return out;
  }

  /// Copies tensors in by name. Strict: every missing, unexpected (num_batches_tracked aside) or
  /// wrong-shape tensor is reported by name in one error.
  void load_state_dict(const std::map<std::string, Tensor>& tensors, bool strict = true) {
    std::string problems;
    std::set<std::string> used;
    for (auto& [name, dst] : state_dict()) {
      auto it = tensors.find(name);
      if (it == tensors.end()) {
        if (strict) problems += "\n  missing: " + name + " " + dst.shape().str();
        continue;
      }
      used.insert(name);
      if (it->second.shape() != dst.shape()) {
        problems += "\n  wrong shape: " + name + " expected " + dst.shape().str() + ", got " +
                    it->second.shape().str();
        continue;
      }
      dst.copy_from(it->second);
    }
    if (strict)
      for (auto& [name, t] : tensors)
        if (!used.count(name) && !name.ends_with("num_batches_tracked"))
          problems += "\n  unexpected: " + name + " " + t.shape().str();
    check(problems.empty(), arch, ": state dict does not match the model:", problems);
  }

  Model clone() const {
    Model m = *this;
    for (Layer* l : m.layers()) {
      l->weight = l->weight.clone();
      if (l->bias.defined()) l->bias = l->bias.clone();
      if (l->bn) {
        l->bn->weight = l->bn->weight.clone();
        l->bn->bias = l->bn->bias.clone();
        l->bn->running_mean = l->bn->running_mean.clone();
        l->bn->running_var = l->bn->running_var.clone();
      }
    }
    return m;
  }

 private:
  int num_points_ = 0;
};

}  // namespace brecq::nn
