#pragma once
// torchvision's ResNet-18/34 (BasicBlock) and ResNet-50 (Bottleneck, "v1.5": stride on the 3x3
// conv), with torchvision's state-dict names (conv1, bn1, layer1.0.conv1, layer1.0.downsample.0,
// fc, ...). Also the building blocks shared with the CIFAR ResNets and MobileNetV2: a conv + BN
// layer, a residual block, a stage of residual blocks, and the classifier head.
//
// Structure (see nn/model.hpp): stem Block (conv1 + bn1 + ReLU, then 3x3/2 max-pool unless
// small_input_stem), one Block per residual block with the main path in `layers` (ReLU on all
// but the last layer, ReLU after the add), projection shortcuts in `shortcut_layers`, and a head
// Block (global average pool, then fc). `stage` is 0 for the stem, 1..4 for layer1..layer4 and
// 5 for the head.
#include <optional>
#include <string>
#include <vector>

#include "brecq/nn/model.hpp"

namespace brecq::nn {

namespace detail {

/// A conv without bias followed by BatchNorm: torchvision's conv + bn pair ("same" padding).
struct ConvBnSpec {
  std::string conv;  ///< layer name, e.g. "layer1.0.conv1"
  std::string bn;    ///< BatchNorm name, e.g. "layer1.0.bn1"
  int64_t in = 0;
  int64_t out = 0;
  int64_t kernel = 1;
  int64_t stride = 1;
  int64_t groups = 1;
  Activation act = Activation::none;
};

inline Layer conv_bn(const ConvBnSpec& s) {
  Layer l = Layer::make_conv(s.conv, s.in, s.out, s.kernel,
                             {.stride = s.stride, .padding = s.kernel / 2, .groups = s.groups},
                             /*with_bias=*/false, s.act);
  l.bn = BatchNorm::make(s.bn, s.out);
  return l;
}

/// How a residual block whose shape changes reaches the main path's output shape.
enum class Downsample {
  projection,  ///< torchvision: 1x1 conv (stride s) + BN named <block>.downsample.0 / .1
  option_a,    ///< He et al. CIFAR: x[:, :, ::s, ::s], zero-pad out/4 channels on each side
};

inline constexpr int64_t block_expansion(BlockKind k) { return k == BlockKind::bottleneck ? 4 : 1; }

struct ResidualBlockSpec {
  std::string name;                   ///< e.g. "layer2.0"
  BlockKind kind = BlockKind::basic;  ///< basic or bottleneck
  int64_t in = 0;                     ///< input channels
  int64_t planes = 0;  ///< torchvision's "planes": output channels = planes * expansion
  int64_t stride = 1;
  int stage = 0;
  Downsample downsample = Downsample::projection;
};

/// One BasicBlock (3x3 -> 3x3) or Bottleneck (1x1 -> 3x3 with the stride -> 1x1, x4 channels).
inline Block residual_block(const ResidualBlockSpec& s) {
  check(s.kind == BlockKind::basic || s.kind == BlockKind::bottleneck, "residual block ", s.name,
        ": kind must be basic or bottleneck, got ", block_kind_name(s.kind));
  const int64_t out = s.planes * block_expansion(s.kind);
  auto sub = [&](const char* n) { return s.name + "." + n; };
  Block b;
  b.name = s.name;
  b.kind = s.kind;
  b.stage = s.stage;
  b.out_activation = Activation::relu;
  if (s.kind == BlockKind::basic) {
    b.layers.push_back(
        conv_bn({sub("conv1"), sub("bn1"), s.in, s.planes, 3, s.stride, 1, Activation::relu}));
    b.layers.push_back(
        conv_bn({sub("conv2"), sub("bn2"), s.planes, out, 3, 1, 1, Activation::none}));
  } else {
    b.layers.push_back(
        conv_bn({sub("conv1"), sub("bn1"), s.in, s.planes, 1, 1, 1, Activation::relu}));
    b.layers.push_back(
        conv_bn({sub("conv2"), sub("bn2"), s.planes, s.planes, 3, s.stride, 1, Activation::relu}));
    b.layers.push_back(
        conv_bn({sub("conv3"), sub("bn3"), s.planes, out, 1, 1, 1, Activation::none}));
  }
  if (s.stride == 1 && s.in == out) {
    b.shortcut = ShortcutKind::identity;
  } else if (s.downsample == Downsample::projection) {
    b.shortcut = ShortcutKind::projection;
    b.shortcut_layers.push_back(conv_bn(
        {sub("downsample.0"), sub("downsample.1"), s.in, out, 1, s.stride, 1, Activation::none}));
  } else {
    check(s.in + 2 * (out / 4) == out, "residual block ", s.name, ": option-A shortcut pads ",
          out / 4, " channels on each side of ", s.in, ", which gives ", s.in + 2 * (out / 4),
          " channels, expected ", out);
    b.shortcut = ShortcutKind::option_a;
    b.option_a_stride = s.stride;
    b.option_a_pad = out / 4;
  }
  return b;
}

/// A group of residual blocks named <prefix>.0, <prefix>.1, ...; the first one has the stride.
struct StageSpec {
  std::string prefix;  ///< e.g. "layer2"
  BlockKind kind = BlockKind::basic;
  int64_t in = 0;  ///< input channels of the first block
  int64_t planes = 0;
  int blocks = 1;
  int64_t stride = 1;
  int stage = 0;
  Downsample downsample = Downsample::projection;
};

/// Appends the stage's blocks to `blocks`; returns its output channels.
inline int64_t append_stage(std::vector<Block>& blocks, const StageSpec& s) {
  check(s.blocks >= 1, "stage ", s.prefix, ": needs at least one block, got ", s.blocks);
  int64_t in = s.in;
  for (int i = 0; i < s.blocks; ++i) {
    blocks.push_back(residual_block({.name = s.prefix + "." + std::to_string(i),
                                     .kind = s.kind,
                                     .in = in,
                                     .planes = s.planes,
                                     .stride = i == 0 ? s.stride : 1,
                                     .stage = s.stage,
                                     .downsample = s.downsample}));
    in = s.planes * block_expansion(s.kind);
  }
  return in;
}

/// The stem block: one conv + BN + activation layer, optionally followed by a max-pool.
inline Block stem_block(std::string name, Layer layer, std::optional<Pool2dParams> max_pool = {}) {
  Block b;
  b.name = std::move(name);
  b.kind = BlockKind::stem;
  b.stage = 0;
  b.layers.push_back(std::move(layer));
  b.max_pool_after = max_pool;
  return b;
}

/// The classifier: global average pool, then one linear layer named `name`.
inline Block head_block(const std::string& name, int64_t in, int64_t num_classes, int stage) {
  check(num_classes >= 1, "classifier ", name, ": num_classes must be >= 1, got ", num_classes);
  Block b;
  b.name = name;
  b.kind = BlockKind::head;
  b.stage = stage;
  b.global_pool_before = true;
  b.layers.push_back(Layer::make_linear(name, in, num_classes));
  return b;
}

}  // namespace detail

struct ResNetOptions {
  int64_t num_classes = 1000;
  int64_t in_channels = 3;        ///< 1 for grayscale data such as Fashion-MNIST
  bool small_input_stem = false;  ///< 3x3 stride-1 conv1 and no max-pool (32x32 inputs)
  int64_t base_width = 64;        ///< conv1/layer1 channels, doubled per stage (torchvision: 64)
};

/// Which torchvision ResNet: residual block type and number of blocks in layer1..layerN.
struct ResNetArch {
  std::string name;  ///< Model::arch
  BlockKind block = BlockKind::basic;
  std::vector<int> blocks_per_stage;
};

/// A torchvision-layout ResNet with zero weights and identity BatchNorms; load weights or use
/// init_kaiming (nn/models.hpp) before use.
inline Model make_resnet(const ResNetArch& arch, const ResNetOptions& o = {}) {
  check(!arch.blocks_per_stage.empty(), "make_resnet ", arch.name, ": no stages given");
  check(o.in_channels >= 1, "make_resnet ", arch.name, ": in_channels must be >= 1, got ",
        o.in_channels);
  check(o.base_width >= 1, "make_resnet ", arch.name, ": base_width must be >= 1, got ",
        o.base_width);
  Model m;
  m.arch = arch.name;
  m.num_classes = o.num_classes;
  m.in_channels = o.in_channels;
  const int64_t stem_kernel = o.small_input_stem ? 3 : 7, stem_stride = o.small_input_stem ? 1 : 2;
  std::optional<Pool2dParams> pool;
  if (!o.small_input_stem) pool = Pool2dParams{.kernel = 3, .stride = 2, .padding = 1};
  m.blocks.push_back(
      detail::stem_block("stem",
                         detail::conv_bn({"conv1", "bn1", o.in_channels, o.base_width, stem_kernel,
                                          stem_stride, 1, Activation::relu}),
                         pool));
  int64_t channels = o.base_width, planes = o.base_width;
  int stage = 0;
  for (size_t i = 0; i < arch.blocks_per_stage.size(); ++i, planes *= 2) {
    ++stage;
    channels = detail::append_stage(m.blocks, {.prefix = "layer" + std::to_string(i + 1),
                                               .kind = arch.block,
                                               .in = channels,
                                               .planes = planes,
                                               .blocks = arch.blocks_per_stage[i],
                                               .stride = i == 0 ? 1 : 2,
                                               .stage = stage});
  }
  m.blocks.push_back(detail::head_block("fc", channels, o.num_classes, stage + 1));
  m.finalize();
  return m;
}

inline Model resnet18(const ResNetOptions& o = {}) {
  return make_resnet({"resnet18", BlockKind::basic, {2, 2, 2, 2}}, o);
}
inline Model resnet34(const ResNetOptions& o = {}) {
  return make_resnet({"resnet34", BlockKind::basic, {3, 4, 6, 3}}, o);
}
inline Model resnet50(const ResNetOptions& o = {}) {
  return make_resnet({"resnet50", BlockKind::bottleneck, {3, 4, 6, 3}}, o);
}

}  // namespace brecq::nn
