#pragma once
// The CIFAR ResNets of He et al. (2016), ResNet-(6n+2): a 3x3 conv(16) + BN + ReLU stem, three
// stages of n BasicBlocks at 16/32/64 channels (the first block of stages 2 and 3 has stride 2),
// global average pooling and `linear`. Shortcuts are "option A" (no parameters: subsample with
// stride 2, zero-pad out/4 channels on each side). Names follow akamaster/pytorch_resnet_cifar10:
// conv1, bn1, layer1.0.conv1, layer1.0.bn1, layer1.0.conv2, layer1.0.bn2, ..., linear.
#include "brecq/nn/resnet.hpp"

namespace brecq::nn {

struct CifarResNetOptions {
  int64_t num_classes = 10;
  int64_t in_channels = 3;
};

/// ResNet-`depth` for 32x32 inputs; depth = 6n + 2 (20, 32, 44, 56, 110, ...).
inline Model make_cifar_resnet(int depth, const CifarResNetOptions& o = {}) {
  check(depth >= 8 && (depth - 2) % 6 == 0,
        "make_cifar_resnet: depth must be 6n+2 with n >= 1, got ", depth);
  check(o.in_channels >= 1, "make_cifar_resnet: in_channels must be >= 1, got ", o.in_channels);
  const int n = (depth - 2) / 6;
  Model m;
  m.arch = "resnet" + std::to_string(depth) + "_cifar";
  m.num_classes = o.num_classes;
  m.in_channels = o.in_channels;
  m.blocks.push_back(detail::stem_block(
      "stem", detail::conv_bn({"conv1", "bn1", o.in_channels, 16, 3, 1, 1, Activation::relu})));
  int64_t channels = 16;
  for (int i = 0; i < 3; ++i)
    channels = detail::append_stage(m.blocks, {.prefix = "layer" + std::to_string(i + 1),
                                               .kind = BlockKind::basic,
                                               .in = channels,
                                               .planes = int64_t{16} << i,
                                               .blocks = n,
                                               .stride = i == 0 ? 1 : 2,
                                               .stage = i + 1,
                                               .downsample = detail::Downsample::option_a});
  m.blocks.push_back(detail::head_block("linear", channels, o.num_classes, 4));
  m.finalize();
  return m;
}

inline Model resnet20_cifar(const CifarResNetOptions& o = {}) { return make_cifar_resnet(20, o); }
inline Model resnet32_cifar(const CifarResNetOptions& o = {}) { return make_cifar_resnet(32, o); }
inline Model resnet44_cifar(const CifarResNetOptions& o = {}) { return make_cifar_resnet(44, o); }
inline Model resnet56_cifar(const CifarResNetOptions& o = {}) { return make_cifar_resnet(56, o); }

}  // namespace brecq::nn
