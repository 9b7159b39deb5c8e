// The flow of examples/resnet18_w2a4.cpp (quant/compare.hpp) on its ImageNet path: real images
// from ../shared/data/imagenet-sample, a ResNet-18 with deterministic weights, very few iterations.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "brecq/nn/models.hpp"
#include "brecq/quant/compare.hpp"

using namespace brecq;

namespace {

const std::string shared_dir = BRECQ_SHARED_DIR;

bool all_finite(const Tensor& t) {
  for (float v : t.to_vector())
    if (!std::isfinite(v)) return false;
  return true;
}

void check_bookkeeping(const nn::Accuracy& a, int64_t images) {
  CHECK(a.images == images);
  CHECK(a.top1 >= 0);
  CHECK(a.top1 <= a.top5);
  CHECK(a.top5 <= a.images);
  CHECK(a.top1_percent() == doctest::Approx(100.0 * static_cast<double>(a.top1) / images));
  CHECK(a.seconds >= 0);
}

}  // namespace

TEST_CASE("LabeledImages: labels.txt and ImageFolder layouts, errors name file and line") {
  const std::string sample = shared_dir + "/data/imagenet-sample";
  const std::string cifar = shared_dir + "/data/cifar10/calib";
  if (!std::filesystem::exists(sample + "/labels.txt") || !std::filesystem::is_directory(cifar)) {
    MESSAGE("skipped: ", sample, " or ", cifar, " not found (../shared is absent)");
    return;
  }
  const LabeledImages flat(sample, ImagePreprocess::imagenet());
  CHECK(flat.size() == 100);
  CHECK(flat.layout() == "labels.txt");
  CHECK(flat.max_label() == 990);  // every tenth ImageNet class
  CHECK(flat.path(0).ends_with("n01440764_tench.JPEG"));
  const LabeledImages folders(cifar, ImagePreprocess::cifar());
  CHECK(folders.size() == 1024);
  CHECK(folders.layout() == "10 class folders");
  CHECK(folders.max_label() == 9);
  CHECK(folders.get(0).first.shape() == Shape{3, 32, 32});
  CHECK_THROWS_WITH_AS(flat.get(100), doctest::Contains("index 100 out of range for 100"), Error);

  const auto dir = std::filesystem::temp_directory_path() / "brecq_test_labeled_images";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "labels.txt") << "# class file\n3 a.jpg\nseven b.jpg\n";
  CHECK_THROWS_WITH_AS(LabeledImages(dir.string(), {}), doctest::Contains("line 3"), Error);
  std::filesystem::remove_all(dir);
}

TEST_CASE("resnet18_w2a4 flow: ImageNet preprocessing, FP / nearest / BRECQ W2A4 on real images") {
  const std::string dir = shared_dir + "/data/imagenet-sample";
  if (!std::filesystem::exists(dir + "/labels.txt")) {
    MESSAGE("skipped: ", dir, " not found (../shared is absent)");
    return;
  }
#ifdef NDEBUG
  const int64_t width = 64, n = 4;  // torchvision's ResNet-18
#else
  // Unoptimised (sanitizer) builds: a ResNet-18 with 8 instead of 64 base channels and two
  // instead of four images runs the same code in a fraction of the time.
  const int64_t width = 8, n = 2;
  MESSAGE("debug build: ResNet-18 with base width 8 instead of 64, 2 images instead of 4");
#endif
  const LabeledImages images(dir, ImagePreprocess::imagenet());
  const Batch calib = calibration_subset(images, n, 1029);
  CHECK(calib.images.shape() == Shape{n, 3, 224, 224});
  CHECK(calibration_subset(images, n, 1029).labels == calib.labels);  // seeded
  CHECK(calibration_subset(images, n, 7).labels != calib.labels);
  CHECK_THROWS_WITH_AS(calibration_subset(images, 101, 0), doctest::Contains("1..100"), Error);

  nn::Model model = nn::resnet18({.base_width = width});
  nn::init_deterministic(model, 3);
  quant::CompareParams p;  // W2A4 block reconstruction, as the example
  p.recon.iters_w = 2;
  p.recon.iters_a = 2;
  p.recon.batch = 2;
  p.recon.progress = nullptr;
  p.eval = {.batch = 2, .limit = n};
  std::vector<std::string> reported;
  p.on_result = [&](const std::string& what, const nn::Accuracy& a) {
    reported.push_back(what);
    CHECK(a.images == n);
  };
  quant::CompareResult r = quant::compare_brecq(model, calib.images, images, p);

  CHECK(reported == std::vector<std::string>{"FP", "nearest", "BRECQ"});
  for (const nn::Accuracy* a : {&r.fp, &r.nearest, &r.brecq}) check_bookkeeping(*a, n);
  // The FP figure is the model's own accuracy on the first n images.
  const nn::Accuracy fp =
      nn::evaluate([&](const Tensor& x) { return model.forward(x); }, images, {.limit = n});
  CHECK(fp.top1 == r.fp.top1);
  CHECK(fp.top5 == r.fp.top5);
  CHECK(r.seconds > 0);

  // 9 weight units (8 blocks and fc; the stem stays at 8 bits) and 8 activation units (fc has no
  // activation point).
  CHECK(r.report.units.size() == 17);
  for (const quant::UnitReport& u : r.report.units) {
    CHECK(std::isfinite(u.loss_before));
    CHECK(std::isfinite(u.loss_after));
    CHECK(u.iterations == 2);
  }
  quant::QuantModel& q = r.quantized;
  CHECK(q.quantizes_activations());
  CHECK(q.settings.w_bits == 2);
  CHECK(q.settings.a_bits == 4);
  const auto layers = q.model.layers();
  CHECK(q.weight_q[static_cast<size_t>(layers.front()->id)].config.bits == 8);
  CHECK(q.weight_q[static_cast<size_t>(layers[1]->id)].config.bits == 2);
  const Tensor levels = q.weight_levels(*layers[1]);  // u8
  int max_level = 0;
  for (int64_t k = 0; k < levels.numel(); ++k)
    max_level = std::max<int>(max_level, levels.data<uint8_t>()[k]);
  CHECK(max_level == 3);
  CHECK(q.act_q[0].config.bits == 8);  // the input image
  CHECK(q.act_q[1].config.bits == 8);  // the stem's output
  CHECK(q.act_q[2].config.bits == 4);
  NoGrad ng;
  const Tensor logits = q.forward(calib.images);
  CHECK(logits.shape() == Shape{n, 1000});
  CHECK(all_finite(logits));
}
