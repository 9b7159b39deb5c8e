#include <doctest/doctest.h>

#include <filesystem>
#include <map>

#include "../../tools/cli/args.hpp"
#include "../support.hpp"
#include "brecq/driver/driver.hpp"

using namespace brecq;

TEST_CASE("a model from a weights file takes its classes, input channels and width from it") {
  nn::Model m =
      nn::make_model("resnet18_cifar", {.num_classes = 7, .in_channels = 1, .base_width = 8});
  Rng rng(2);
  nn::init_kaiming(m, rng);
  const std::string path = test::temp_path("driver_r18.safetensors");
  nn::save_weights(m, path);
  const driver::LoadedModel got = driver::load_model("resnet18_cifar", path);
  CHECK(got.options.num_classes == 7);
  CHECK(got.options.in_channels == 1);
  CHECK(got.options.base_width == 8);
  CHECK(got.model.num_classes == 7);
  const auto a = m.state_dict(), b = got.model.state_dict();
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) CHECK(a[i].second.to_vector() == b[i].second.to_vector());
  // The wrong architecture is named; an explicit class count must agree with the file.
  CHECK_THROWS_WITH_AS(driver::load_model("mobilenet_v2", path),
                       doctest::Contains("for mobilenet_v2 (is it the right model?)"), Error);
  CHECK_THROWS_WITH_AS(driver::load_model("resnet18_cifar", path, 10),
                       doctest::Contains("wrong shape: fc.weight"), Error);
  std::filesystem::remove(path);
}

TEST_CASE("a weights file's metadata gives the width multiplier and strides shapes cannot tell") {
  const nn::ModelOptions o{
      .num_classes = 10, .in_channels = 1, .width_mult = 0.35, .small_input_stem = true};
  nn::Model m = nn::make_model("mobilenet_v2", o);
  Rng rng(3);
  nn::init_kaiming(m, rng);
  const std::string path = test::temp_path("driver_mbv2.safetensors");
  const auto save = [&](std::map<std::string, std::string> meta) {
    nn::save_weights(m, path, {.metadata = std::move(meta)});
  };
  save({{"width_mult", "0.35"}, {"small_input_stem", "1"}});
  const driver::LoadedModel got = driver::load_model("mobilenet_v2", path);
  CHECK(got.options.width_mult == doctest::Approx(0.35));
  CHECK(got.options.small_input_stem);
  CHECK(got.model.blocks[0].layers[0].conv.stride == 1);
  {
    NoGrad ng;
    const Tensor x = Tensor::full(Shape{1, 1, 28, 28}, 0.5f);
    CHECK(got.model.forward(x).to_vector() == m.forward(x).to_vector());
  }
  // Without the metadata the shapes are a width-1 model's: refused as the wrong shape.
  save({});
  CHECK_THROWS_WITH_AS(driver::load_model("mobilenet_v2", path), doctest::Contains("shape"), Error);
  save({{"width_mult", "half"}});
  CHECK_THROWS_WITH_AS(driver::load_model("mobilenet_v2", path),
                       doctest::Contains("metadata width_mult expected a number > 0, got 'half'"),
                       Error);
  save({{"width_mult", "0.35"}, {"small_input_stem", "yes"}});
  CHECK_THROWS_WITH_AS(driver::load_model("mobilenet_v2", path),
                       doctest::Contains("metadata small_input_stem expected 0 or 1, got 'yes'"),
                       Error);
  std::filesystem::remove(path);
}

TEST_CASE("preprocessing by name, auto taking the model's own") {
  CHECK(driver::preprocess_name("auto", "resnet20_cifar") == "cifar");
  CHECK(driver::preprocess_name("auto", "resnet18") == "imagenet");
  CHECK(driver::preprocess_name("cifar", "resnet18") == "cifar");
  CHECK(driver::preprocess_for("imagenet", "resnet20_cifar").resize_shorter ==
        ImagePreprocess::imagenet().resize_shorter);
  CHECK_THROWS_WITH_AS(driver::preprocess_name("tf", "resnet18"),
                       doctest::Contains("expected imagenet, cifar or auto, got 'tf'"), Error);
}

TEST_CASE("streaming evaluation of the FP model and of a quantized model in a mode") {
  nn::Model m = nn::make_model("resnet20_cifar");
  Rng rng(4);
  nn::init_kaiming(m, rng);
  const Tensor images = Tensor::randn(Shape{10, 3, 32, 32}, rng);
  std::vector<int> labels;
  for (int i = 0; i < 10; ++i) labels.push_back(i);
  const TensorDataset ds(images, labels);
  const nn::Accuracy fp = driver::evaluate(driver::fp_forward(m), ds, {.batch = 3});
  const nn::Accuracy ref = nn::evaluate(driver::fp_forward(m), Batch{images, labels}, 10);
  CHECK(fp.images == 10);
  CHECK(fp.top1 == ref.top1);
  CHECK(fp.top5 == ref.top5);
  CHECK(driver::evaluate(driver::fp_forward(m), ds, {.batch = 4, .limit = 6}).images == 6);
  quant::QuantModel qm(m, {.w_bits = 4, .a_bits = 4});
  const auto w = driver::quantized_forward(qm, quant::ForwardMode::weights_only());
  CHECK(driver::evaluate(w, ds).images == 10);
  // The deployed model needs activation ranges first.
  CHECK_THROWS_WITH_AS(driver::evaluate(driver::quantized_forward(qm), ds),
                       doctest::Contains("run init_activations"), Error);
  CHECK(driver::accuracy_line("FP", fp, 4).starts_with("FP   top-1 "));
}

TEST_CASE("flags: numbers parsed and range-checked, usage errors name the flag") {
  cli::Args args("t", "test",
                 {{.name = "--lr", .value_name = "X", .default_value = "0.5"},
                  {.name = "--n", .value_name = "N", .default_value = "3"}});
  REQUIRE(args.parse({"--lr=1e-3"}));
  CHECK(args.get_float("--lr", 0.0f, 1.0f) == 1e-3f);
  CHECK(args.get_int("--n", 1) == 3);
  CHECK_THROWS_WITH_AS(args.get_float("--lr", 0.01f, 1.0f),
                       doctest::Contains("flag --lr expects a number in [0.01, 1], got '1e-3'"),
                       cli::UsageError);
  cli::Args bad("t", "test", {{.name = "--lr", .value_name = "X"}});
  REQUIRE(bad.parse({"--lr", "0.1x"}));
  CHECK_THROWS_WITH_AS(bad.get_float("--lr", 0.0f, 1.0f), doctest::Contains("got '0.1x'"),
                       cli::UsageError);
}
