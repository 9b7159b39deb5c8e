// End-to-end learning: a small CNN described as data, trained with the library's autodiff and
// SGD on real Fashion-MNIST images (Debian's dataset-fashion-mnist), must reach a stated accuracy.
#include <doctest/doctest.h>

#include <filesystem>

#include "brecq/io/idx.hpp"
#include "brecq/nn/evaluate.hpp"
#include "brecq/nn/model.hpp"
#include "brecq/nn/optim.hpp"
#include "brecq/ops/loss.hpp"

using namespace brecq;

namespace {

nn::Model small_cnn() {
  using nn::Activation;
  auto conv_bn = [](std::string name, int64_t in, int64_t out, int64_t stride) {
    nn::Layer l = nn::Layer::make_conv(name, in, out, 3, {.stride = stride, .padding = 1}, false,
                                       Activation::relu);
    l.bn = nn::BatchNorm::make(name + "_bn", out);
    return l;
  };
  nn::Model m;
  m.arch = "small_cnn";
  m.num_classes = 10;
  m.in_channels = 1;
  nn::Block stem{.name = "stem", .kind = nn::BlockKind::stem, .stage = 0};
  stem.layers = {conv_bn("conv1", 1, 16, 2)};
  nn::Block body{.name = "body", .kind = nn::BlockKind::conv, .stage = 1};
  body.layers = {conv_bn("conv2", 16, 32, 2), conv_bn("conv3", 32, 64, 2)};
  nn::Block head{
      .name = "head", .kind = nn::BlockKind::head, .stage = 2, .global_pool_before = true};
  head.layers = {nn::Layer::make_linear("fc", 64, 10)};
  m.blocks = {stem, body, head};
  m.finalize();
  Rng rng(3);
  for (nn::Layer* l : m.layers()) {
    const float fan_in = static_cast<float>(l->weight.numel() / l->weight.dim(0));
    l->weight = Tensor::randn(l->weight.shape(), rng, std::sqrt(2.0f / fan_in));
  }
  return m;
}

}  // namespace

TEST_CASE("a small CNN trained with the library learns Fashion-MNIST") {
  const std::string dir(FashionMnist::default_dir);
  if (!std::filesystem::exists(dir)) {
    MESSAGE("SKIPPED: " << dir << " not found (install Debian's dataset-fashion-mnist)");
    return;
  }
  const FashionMnist train = FashionMnist::load(MnistSplit::train, {.normalize = true});
  const FashionMnist test = FashionMnist::load(MnistSplit::test, {.normalize = true});
  nn::Model m = small_cnn();
  std::vector<Tensor> params = m.parameters();
  for (Tensor& p : params) p.set_requires_grad(true);
  Sgd opt(params, {.lr = 0.05f, .momentum = 0.9f});
#ifdef NDEBUG
  const int64_t batch = 64, steps = 300, held_images = 2000;  // 19,200 images, a third of an epoch
  const double min_top1 = 75.0;
#else
  // Unoptimised (sanitizer) builds: the same training at a reduced size.
  const int64_t batch = 64, steps = 100, held_images = 1000;
  const double min_top1 = 65.0;
  MESSAGE("debug build: 100 steps instead of 300, 1,000 test images instead of 2,000");
#endif
  const nn::ForwardHooks training{.training = true};
  float first_loss = 0, last_loss = 0;
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t at = s * batch % (train.size() - batch);
    std::vector<int> labels(train.labels().begin() + at, train.labels().begin() + at + batch);
    Tensor loss = cross_entropy(m.forward(train.images().narrow(0, at, batch), training), labels);
    (s == 0 ? first_loss : last_loss) = loss.item();
    backward(loss);
    opt.step();
    opt.zero_grad();
  }
  const Batch held{test.images().narrow(0, 0, held_images),
                   std::vector<int>(test.labels().begin(), test.labels().begin() + held_images)};
  const nn::Accuracy acc = nn::evaluate([&](const Tensor& x) { return m.forward(x); }, held);
  MESSAGE("loss " << first_loss << " -> " << last_loss << ", test top-1 on " << held_images
                  << " images " << acc.top1_percent() << " %");
  CHECK(last_loss < 0.6f * first_loss);
  CHECK(acc.top1_percent() >= min_top1);
}
