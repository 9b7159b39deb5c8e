// Quantization-aware training: it lowers its objective, what it trains is what it writes, a
// resumed run ends where an uninterrupted one does, and bad settings are refused.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>

#include "../support.hpp"
#include "brecq/quant/qat.hpp"
#include "brecq/quant/serialize.hpp"
#include "tiny_model.hpp"

using namespace brecq;
using namespace brecq::quant;

// Helpers and cases in a named namespace: the suite is a unity build.
namespace brecq::test::qat {

inline QatData images(int64_t n = 48, uint64_t seed = 11) {
  Rng rng(seed);
  return {Tensor::randn(Shape{n, 3, 8, 8}, rng)};
}

/// Small and fast: Adam at learning rates suited to a random tiny model, no progress output.
inline QatSettings tiny_settings() {
  QatSettings s;
  s.epochs = 3;
  s.batch = 16;
  s.lr = 2e-3f;
  s.lr_steps = 2e-3f;
  s.act_init_images = 32;
  s.progress = {};
  return s;
}

inline const QuantSettings kW2A4{.w_bits = 2, .a_bits = 4};

inline float max_abs_difference(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  const Tensor x = a.contiguous(), y = b.contiguous();
  float d = 0;
  for (int64_t i = 0; i < x.numel(); ++i)
    d = std::max(d, std::fabs(x.data<float>()[i] - y.data<float>()[i]));
  return d;
}

TEST_CASE("QAT lowers the loss of a small fake-quantized model") {
  const nn::Model fp = tiny_resnet(4, 5);
  SUBCASE("distillation from the FP model (unlabelled images)") {
    QatSettings s = tiny_settings();
    s.epochs = 4;
    const QatResult r = run_qat(fp, kW2A4, images(), s);
    MESSAGE("KD loss " << r.report.loss_before << " -> " << r.report.loss_after);
    REQUIRE(r.report.epochs.size() == 4);
    CHECK(r.report.loss_before > 0.0);
    CHECK(r.report.loss_after < 0.6 * r.report.loss_before);
    // Each epoch's mean training loss falls from the first epoch's.
    CHECK(r.report.epochs.back().train_loss < r.report.epochs.front().train_loss);
  }
  SUBCASE("cross-entropy with labels, SGD") {
    QatData d = images();
    for (int64_t i = 0; i < d.images.dim(0); ++i) d.labels.push_back(static_cast<int>(i % 5));
    QatSettings s = tiny_settings();
    s.loss = QatLoss::cross_entropy;
    s.optimizer = QatOptimizer::sgd;
    s.lr = s.lr_steps = 0.05f;
    s.epochs = 6;
    s.augment_pad = 0;
    s.augment_flip = false;
    const QatResult r = run_qat(fp, kW2A4, d, s);
    MESSAGE("CE loss " << r.report.loss_before << " -> " << r.report.loss_after);
    CHECK(r.report.loss_after < 0.9 * r.report.loss_before);
  }
}

TEST_CASE("QAT: the training graph equals the exported model, and the file its predictions") {
  const nn::Model fp = tiny_resnet(4, 5);
  const QatData d = images();
  QatTrainer t(fp, kW2A4, d, tiny_settings());
  t.train_epoch();
  t.train_epoch();
  QuantModel qm = t.quantized();
  {
    NoGrad ng;
    // BatchNorm folded in the graph, weights and activations fake-quantized: the same floats.
    CHECK(max_abs_difference(t.forward(d.images), qm.forward(d.images)) == 0.0f);
  }
  // Weights moved off their initial rounding and the steps were learned.
  QatTrainer start(fp, kW2A4, d, tiny_settings());
  CHECK_FALSE(quantized_difference(start.quantized(), qm).empty());

  snap_biases(qm);
  const std::string path = temp_path("qat_w2a4.safetensors");
  save_quantized(qm, {}, path);
  const QuantModel back = load_quantized(path);
  std::filesystem::remove(path);
  CHECK(quantized_difference(qm, back).empty());
  NoGrad ng;
  const Tensor a = qm.forward(d.images), b = back.forward(d.images);
  CHECK(max_abs_difference(a, b) <= 1e-5f * (1.0f + max_abs_difference(a, a * 0.0f)));
  for (int64_t n = 0; n < a.dim(0); ++n) {
    int64_t ia = 0, ib = 0;
    for (int64_t k = 1; k < a.dim(1); ++k) {
      if (a.data<float>()[n * a.dim(1) + k] > a.data<float>()[n * a.dim(1) + ia]) ia = k;
      if (b.data<float>()[n * b.dim(1) + k] > b.data<float>()[n * b.dim(1) + ib]) ib = k;
    }
    CHECK(ia == ib);
  }
}

TEST_CASE("QAT: resuming after epoch k ends where an uninterrupted run does") {
  const nn::Model fp = tiny_resnet(4, 5);
  const QatData d = images();
  for (QatOptimizer opt : {QatOptimizer::adam, QatOptimizer::sgd}) {
    CAPTURE(static_cast<int>(opt));
    QatSettings s = tiny_settings();
    s.optimizer = opt;
    if (opt == QatOptimizer::sgd) s.lr = s.lr_steps = 0.02f;
    const std::string ckpt = temp_path("qat_resume.ckpt");
    std::filesystem::remove(ckpt);
    const QatResult whole = run_qat(fp, kW2A4, d, s, {.checkpoint = ckpt});
    CHECK_FALSE(std::filesystem::exists(ckpt));  // removed at the end

    struct Interrupt {};
    CHECK_THROWS_AS(run_qat(fp, kW2A4, d, s,
                            {.checkpoint = ckpt,
                             .on_epoch_done =
                                 [](const QatEpochReport& e) {
                                   if (e.epoch == 1) throw Interrupt{};
                                 }}),
                    Interrupt);
    REQUIRE(std::filesystem::exists(ckpt));
    // Another setting: the checkpoint is refused, naming what differs.
    QatSettings other = s;
    other.lr *= 2;
    check_error([&] { run_qat(fp, kW2A4, d, other, {.checkpoint = ckpt}); },
                {"QAT checkpoint", "other settings", "differs: lr="});
    const QatResult resumed = run_qat(fp, kW2A4, d, s, {.checkpoint = ckpt});
    CHECK(resumed.report.resumed_epochs == 1);
    CHECK(resumed.report.epochs.size() == 2);
    CHECK(quantized_difference(whole.model, resumed.model).empty());
    CHECK(resumed.report.loss_after == whole.report.loss_after);
    NoGrad ng;
    CHECK(max_abs_difference(whole.model.forward(d.images), resumed.model.forward(d.images)) ==
          0.0f);
    std::filesystem::remove(ckpt);
  }
}

TEST_CASE("QAT refuses bad settings with messages naming them") {
  const nn::Model fp = tiny_resnet(4, 5);
  const QatData d = images(8);
  auto refuses = [&](auto change, std::vector<std::string> parts,
                     QuantSettings qs = QuantSettings{.w_bits = 4, .a_bits = 4}) {
    QatSettings s = tiny_settings();
    change(s);
    check_error([&] { QatTrainer t(fp, qs, d, s); }, parts);
  };
  refuses([](QatSettings& s) { s.epochs = 0; }, {"epochs", ">= 1", "got 0"});
  refuses([](QatSettings& s) { s.batch = -2; }, {"batch", ">= 1", "got -2"});
  refuses([](QatSettings& s) { s.lr = -1; }, {"learning rate", ">= 0", "got -1"});
  refuses([](QatSettings& s) { s.lr_steps = NAN; }, {"step-size learning rate", "got nan"});
  refuses([](QatSettings& s) { s.momentum = 1; }, {"momentum", "[0, 1)", "got 1"});
  refuses([](QatSettings& s) { s.weight_decay = -0.5f; }, {"weight decay", "got -0.5"});
  refuses([](QatSettings& s) { s.augment_pad = 8; }, {"padding", "8x8", "got 8"});
  refuses([](QatSettings& s) { s.act_init_images = 0; }, {"activation init images", "got 0"});
  refuses([](QatSettings& s) { s.loss = QatLoss::cross_entropy; },
          {"cross-entropy", "one label per training image (8)", "got 0"});
  refuses([](QatSettings&) {}, {"weight bits", "2..8", "got 9"}, {.w_bits = 9});
  refuses([](QatSettings&) {}, {"fold_batchnorm", "got false"},
          {.w_bits = 4, .fold_batchnorm = false});
  check_error([&] { QatTrainer t(fp, kW2A4, QatData{}, tiny_settings()); },
              {"training images", "[N, C, H, W]", "got none"});
  check_error([] { parse_qat_loss("mse"); }, {"kd or ce", "got 'mse'"});
  check_error([] { parse_qat_optimizer("rmsprop"); }, {"sgd or adam", "got 'rmsprop'"});
}

}  // namespace brecq::test::qat
