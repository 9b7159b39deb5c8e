// BatchNorm folding: the folded model computes what the unfolded one computes in eval mode, on
// every architecture, with random (deterministic) BN statistics.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include "brecq/nn/fold_bn.hpp"
#include "brecq/nn/models.hpp"

using namespace brecq;
using namespace brecq::nn;

namespace {

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, static_cast<double>(std::abs(x)));
  return m;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i)
    m = std::max(m, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
  return m;
}

}  // namespace

TEST_CASE("fold_batchnorm: folded and unfolded models agree on every architecture") {
  struct Case {
    const char* model;
    int64_t hw;
  };
  // Small inputs keep it fast; 32x32 still leaves ImageNet models a 1x1 map at the last stage.
  for (const Case c : {Case{"resnet18", 32}, Case{"resnet50", 32}, Case{"mobilenet_v2", 32},
                       Case{"resnet18_cifar", 16}, Case{"resnet20_cifar", 32}}) {
    CAPTURE(c.model);
    Model m = make_model(c.model, {.num_classes = 10});
    init_deterministic(m, 99);
    Model folded = m.clone();
    fold_batchnorm(folded);

    for (const Layer* l : folded.layers()) {
      CHECK_FALSE(l->bn.has_value());
      CHECK(l->bias.defined());
    }
    for (const auto& [name, t] : folded.state_dict()) CHECK(name.find("bn") == std::string::npos);
    CHECK(m.layers().front()->bn.has_value());  // the clone is deep: the original keeps its BNs
    CHECK_FALSE(m.layers().front()->bias.defined());

    // Block by block, so every intermediate activation is compared, the logits last.
    Tensor a = deterministic_uniform(Shape{1, 3, c.hw, c.hw}, 5, "input", -1.0f, 1.0f), b = a;
    NoGrad no_grad;
    for (size_t i = 0; i < m.blocks.size(); ++i) {
      a = m.forward_blocks(a, i, i + 1);
      b = folded.forward_blocks(b, i, i + 1);
      const std::vector<float> va = a.to_vector(), vb = b.to_vector();
      CAPTURE(m.blocks[i].name);
      CAPTURE(max_abs_diff(va, vb));
      CAPTURE(max_abs(va));
      CHECK(max_abs(va) > 0.01);
      CHECK(max_abs_diff(va, vb) <= 1e-4 * max_abs(va));
    }
  }
}

TEST_CASE("fold_batchnorm: a conv with bias and a layer without BN") {
  Layer l = Layer::make_conv("c", 3, 4, 3, {.stride = 1, .padding = 1}, /*with_bias=*/true,
                             Activation::relu);
  l.bn = BatchNorm::make("b", 4);
  Rng rng(1);
  l.weight.copy_from(Tensor::uniform(l.weight.shape(), rng, -1, 1));
  l.bias.copy_from(Tensor::uniform(l.bias.shape(), rng, -1, 1));
  l.bn->weight.copy_from(Tensor::uniform(Shape{4}, rng, 0.5f, 1.5f));
  l.bn->bias.copy_from(Tensor::uniform(Shape{4}, rng, -1, 1));
  l.bn->running_mean.copy_from(Tensor::uniform(Shape{4}, rng, -1, 1));
  l.bn->running_var.copy_from(Tensor::uniform(Shape{4}, rng, 0.1f, 2.0f));
  l.bn->eps = 1e-3f;
  const Tensor x = Tensor::uniform(Shape{2, 3, 5, 5}, rng, -1, 1);
  NoGrad no_grad;
  const std::vector<float> ref = forward_layer(l, x, {}).to_vector();
  Layer f = l;
  fold_batchnorm(f);
  CHECK_FALSE(f.bn.has_value());
  CHECK(max_abs_diff(ref, forward_layer(f, x, {}).to_vector()) <= 1e-5 * max_abs(ref));

  Layer plain = Layer::make_linear("fc", 4, 2);
  const Tensor w = plain.weight;
  fold_batchnorm(plain);  // nothing to fold: unchanged
  CHECK(plain.weight.same_storage(w));
}
