#pragma once
// A small residual CNN built directly from the model description (no architecture class), with
// seeded random weights and BatchNorm statistics: fast enough for reconstruction tests.
#include "brecq/nn/model.hpp"

namespace brecq::test {

inline void randomize(nn::Model& m, uint64_t seed) {
  Rng rng(seed);
  for (nn::Layer* l : m.layers()) {
    const float fan_in = static_cast<float>(l->weight.numel() / l->weight.dim(0));
    l->weight = Tensor::randn(l->weight.shape(), rng, std::sqrt(2.0f / fan_in));
    if (l->bias.defined()) l->bias = Tensor::uniform(l->bias.shape(), rng, -0.1f, 0.1f);
    if (l->bn) {
      l->bn->weight = Tensor::uniform(l->bn->weight.shape(), rng, 0.5f, 1.5f);
      l->bn->bias = Tensor::uniform(l->bn->bias.shape(), rng, -0.2f, 0.2f);
      l->bn->running_mean = Tensor::uniform(l->bn->bias.shape(), rng, -0.2f, 0.2f);
      l->bn->running_var = Tensor::uniform(l->bn->bias.shape(), rng, 0.5f, 1.5f);
    }
  }
}

/// stem conv(3->c) + two BasicBlocks (the second with stride 2 and a projection) + linear head.
inline nn::Model tiny_resnet(int64_t c = 4, int64_t classes = 5, uint64_t seed = 7) {
  using nn::Activation;
  using nn::Layer;
  auto conv_bn = [](std::string name, int64_t in, int64_t out, int64_t k, int64_t stride,
                    Activation a) {
    Layer l = Layer::make_conv(name, in, out, k, {.stride = stride, .padding = k / 2}, false, a);
    l.bn = nn::BatchNorm::make(name + "_bn", out);
    return l;
  };
  nn::Model m;
  m.arch = "tiny_resnet";
  m.num_classes = classes;
  nn::Block stem{.name = "stem", .kind = nn::BlockKind::stem, .stage = 0};
  stem.layers.push_back(conv_bn("conv1", 3, c, 3, 1, Activation::relu));
  nn::Block b1{.name = "layer1.0", .kind = nn::BlockKind::basic, .stage = 1};
  b1.layers = {conv_bn("layer1.0.conv1", c, c, 3, 1, Activation::relu),
               conv_bn("layer1.0.conv2", c, c, 3, 1, Activation::none)};
  b1.shortcut = nn::ShortcutKind::identity;
  b1.out_activation = Activation::relu;
  nn::Block b2{.name = "layer2.0", .kind = nn::BlockKind::basic, .stage = 2};
  b2.layers = {conv_bn("layer2.0.conv1", c, 2 * c, 3, 2, Activation::relu),
               conv_bn("layer2.0.conv2", 2 * c, 2 * c, 3, 1, Activation::none)};
  b2.shortcut = nn::ShortcutKind::projection;
  b2.shortcut_layers = {conv_bn("layer2.0.downsample", c, 2 * c, 1, 2, Activation::none)};
  b2.out_activation = Activation::relu;
  nn::Block head{
      .name = "head", .kind = nn::BlockKind::head, .stage = 3, .global_pool_before = true};
  head.layers = {Layer::make_linear("fc", 2 * c, classes)};
  m.blocks = {stem, b1, b2, head};
  m.finalize();
  randomize(m, seed);
  return m;
}

}  // namespace brecq::test
