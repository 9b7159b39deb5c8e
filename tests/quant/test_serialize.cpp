#include <doctest/doctest.h>

#include <filesystem>

#include "brecq/quant/brecq.hpp"

using namespace brecq;
using namespace brecq::quant;

TEST_CASE("a quantized model saved to safetensors evaluates identically after loading") {
  nn::Model m = nn::make_model("resnet20_cifar");
  Rng rng(5);
  for (nn::Layer* l : m.layers()) {
    l->weight = Tensor::randn(l->weight.shape(), rng, 0.2f);
    if (!l->bn) continue;
    l->bn->running_var = Tensor::uniform(l->bn->running_var.shape(), rng, 0.5f, 1.5f);
    l->bn->bias = Tensor::uniform(l->bn->bias.shape(), rng, -0.2f, 0.2f);
  }
  QuantModel qm(m, {.w_bits = 3, .a_bits = 4});
  Tensor x = Tensor::randn(Shape{4, 3, 32, 32}, rng);
  qm.init_activations(x);
  const std::string path =
      (std::filesystem::temp_directory_path() / "brecq_test_q.safetensors").string();
  // The file holds conv biases on their int32 accumulator grid: half a step from the FP ones.
  const double change = snap_biases(qm);
  CHECK(change > 0.0);
  CHECK(snap_biases(qm) == 0.0);  // idempotent
  save_quantized(qm, {}, path);
  QuantModel loaded = load_quantized(path);
  NoGrad ng;
  Tensor a = qm.forward(x), b = loaded.forward(x);
  REQUIRE(a.shape() == b.shape());
  for (int64_t i = 0; i < a.numel(); ++i) CHECK(a.data<float>()[i] == b.data<float>()[i]);
  CHECK(loaded.weight_q.front().config.bits == 8);  // first layer stays 8-bit
  CHECK(loaded.weight_q[1].config.bits == 3);
  std::filesystem::remove(path);
  CHECK_THROWS_WITH_AS(load_quantized(path), doctest::Contains("brecq_test_q.safetensors"), Error);
}
