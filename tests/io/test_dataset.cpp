#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "brecq/io/dataset.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using namespace brecq::test;
using brecq::Shape;
using brecq::Tensor;

namespace {

/// A 4x3 PNG whose pixels encode `id`: pixel (y, x, c) = id * 10 + y * 3 + x + c.
void write_png(const fs::path& p, int id, int w = 3, int h = 4) {
  std::vector<uint8_t> px;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) px.push_back(static_cast<uint8_t>(id * 10 + y * 3 + x + c));
  REQUIRE(stbi_write_png(p.string().c_str(), w, h, 3, px.data(), w * 3));
}

void write_text(const fs::path& p, const std::string& s) { std::ofstream(p) << s; }

/// root/{cat,ant,bee}/..., 2 + 1 + 3 images, plus files that are not images.
void make_folder(const fs::path& root) {
  for (const char* c : {"cat", "ant", "bee"}) fs::create_directories(root / c);
  write_png(root / "cat" / "b.png", 5);
  write_png(root / "cat" / "a.PNG", 4);
  write_png(root / "ant" / "x.png", 1);
  write_png(root / "bee" / "3.png", 3);
  write_png(root / "bee" / "1.png", 2);
  write_png(root / "bee" / "2.png", 6);
  write_text(root / "bee" / "notes.txt", "not an image");
  write_text(root / "README", "top-level files are not classes");
}

/// A 10-example in-memory dataset: example i is a [1, 2, 2] tensor filled with i, label i % 3.
brecq::TensorDataset small_dataset() {
  std::vector<float> v;
  std::vector<int> labels;
  for (int i = 0; i < 10; ++i) {
    for (int k = 0; k < 4; ++k) v.push_back(static_cast<float>(i));
    labels.push_back(i % 3);
  }
  return brecq::TensorDataset(Tensor::from_vector(Shape{10, 1, 2, 2}, v), labels);
}

}  // namespace

TEST_CASE("ImageFolder: sorted classes and files, labels, loading") {
  TempDir dir("folder_ok");
  make_folder(dir.path);
  brecq::ImageFolder f(dir.path.string());
  CHECK(f.classes() == std::vector<std::string>{"ant", "bee", "cat"});
  REQUIRE(f.size() == 6);
  const std::vector<int> want_labels{0, 1, 1, 1, 2, 2};
  const std::vector<std::string> want_files{"ant/x.png", "bee/1.png", "bee/2.png",
                                            "bee/3.png", "cat/a.PNG", "cat/b.png"};
  const std::vector<int> ids{1, 2, 6, 3, 4, 5};
  for (int64_t i = 0; i < f.size(); ++i) {
    CAPTURE(i);
    CHECK(f.label(i) == want_labels[i]);
    CHECK(f.path(i) == (dir.path / want_files[i]).string());
    Tensor t = f.load(i, {});
    CHECK(t.shape() == Shape{3, 4, 3});
    // [0, 1] pixels; pixel (y=2, x=1, c=2) = id * 10 + 2 * 3 + 1 + 2.
    CHECK(t.at({2, 2, 1}) == static_cast<float>(ids[i] * 10 + 9) / 255.0f);
    auto [x, label] = f.get(i);
    CHECK(label == want_labels[i]);
    CHECK(x.to_vector() == t.to_vector());
  }
  brecq::ImageFolder norm(dir.path.string(), brecq::ImagePreprocess::cifar());
  CHECK(norm.get(0).first.at({0, 0, 0}) == (10.0f / 255.0f - 0.485f) / 0.229f);
  CHECK(contains(error_of([&] { f.path(6); }), "index 6 out of range"));
}

TEST_CASE("ImageFolder: invalid folders raise errors naming the folder") {
  TempDir dir("folder_bad");
  const fs::path missing = dir.path / "missing";
  std::string msg = error_of([&] { brecq::ImageFolder f(missing.string()); });
  CHECK(contains(msg, missing.string()));
  CHECK(contains(msg, "does not exist"));

  const fs::path file = dir.path / "file.txt";
  write_text(file, "x");
  msg = error_of([&] { brecq::ImageFolder f(file.string()); });
  CHECK(contains(msg, file.string()));
  CHECK(contains(msg, "not a folder"));

  const fs::path flat = dir.path / "flat";
  fs::create_directories(flat);
  write_png(flat / "a.png", 1);
  msg = error_of([&] { brecq::ImageFolder f(flat.string()); });
  CHECK(contains(msg, flat.string()));
  CHECK(contains(msg, "no class sub-folders"));

  const fs::path with_empty = dir.path / "with_empty";
  fs::create_directories(with_empty / "a");
  fs::create_directories(with_empty / "b");
  fs::create_directories(with_empty / "c");
  write_png(with_empty / "a" / "1.png", 1);
  write_text(with_empty / "b" / "notes.txt", "no images here");
  write_png(with_empty / "c" / "1.png", 2);
  msg = error_of([&] { brecq::ImageFolder f(with_empty.string()); });
  CHECK(contains(msg, with_empty.string()));
  CHECK(contains(msg, "'b'"));
  CHECK(contains(msg, "hold no .jpg/.jpeg/.png images"));

  // A corrupt image: listing works, loading names the file, also from the parallel loader.
  const fs::path corrupt = dir.path / "corrupt";
  fs::create_directories(corrupt / "a");
  for (int i = 0; i < 8; ++i) write_png(corrupt / "a" / (std::to_string(i) + ".png"), i);
  write_text(corrupt / "a" / "5.png", "\x89PNG garbage");
  brecq::ImageFolder f(corrupt.string());
  CHECK(f.size() == 8);
  msg = error_of([&] { f.load(5, {}); });
  CHECK(contains(msg, (corrupt / "a" / "5.png").string()));
  msg = error_of([&] { brecq::load_image_folder(corrupt.string()); });
  CHECK(contains(msg, (corrupt / "a" / "5.png").string()));
  brecq::BatchLoader loader(f, {.batch_size = 8});
  msg = error_of([&] { loader.batch(0); });
  CHECK(contains(msg, (corrupt / "a" / "5.png").string()));

  // Images of different sizes cannot be stacked without a resize/crop.
  const fs::path mixed = dir.path / "mixed";
  fs::create_directories(mixed / "a");
  write_png(mixed / "a" / "1.png", 1, 3, 4);
  write_png(mixed / "a" / "2.png", 2, 5, 4);
  msg = error_of([&] { brecq::load_image_folder(mixed.string()); });
  CHECK(contains(msg, "has shape [3, 4, 5], expected [3, 4, 3]"));
  auto same = brecq::load_image_folder(mixed.string(), {.preprocess = {.center_crop = 2}});
  CHECK(same.images.shape() == Shape{2, 3, 2, 2});
}

TEST_CASE("seeded_permutation and BatchLoader") {
  auto p = brecq::seeded_permutation(100, 42);
  CHECK(p == brecq::seeded_permutation(100, 42));
  CHECK(p != brecq::seeded_permutation(100, 43));
  std::vector<int64_t> sorted = p;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 100; ++i) CHECK(sorted[i] == i);
  CHECK(brecq::seeded_permutation(0, 1).empty());

  auto ds = small_dataset();
  brecq::BatchLoader plain(ds, {.batch_size = 4});
  REQUIRE(plain.num_batches() == 3);
  brecq::Batch b0 = plain.batch(0);
  CHECK(b0.images.shape() == Shape{4, 1, 2, 2});
  CHECK(b0.labels == std::vector<int>{0, 1, 2, 0});
  CHECK(b0.images.at({3, 0, 1, 1}) == 3.0f);
  brecq::Batch last = plain.batch(2);
  CHECK(last.size() == 2);
  CHECK(last.images.shape() == Shape{2, 1, 2, 2});
  CHECK(last.images.at({1, 0, 0, 0}) == 9.0f);
  CHECK(contains(error_of([&] { plain.batch(3); }), "batch 3 out of range for 3 batches"));

  brecq::BatchLoader dropped(ds, {.batch_size = 4, .drop_last = true});
  CHECK(dropped.num_batches() == 2);

  brecq::BatchLoader shuffled(ds, {.batch_size = 3, .shuffle = true, .seed = 9});
  CHECK(shuffled.order() == brecq::seeded_permutation(10, 9));
  std::multiset<float> seen;
  for (int64_t b = 0; b < shuffled.num_batches(); ++b) {
    brecq::Batch batch = shuffled.batch(b);
    for (int64_t k = 0; k < batch.size(); ++k) {
      const int64_t idx = shuffled.order()[b * 3 + k];
      CHECK(batch.images.at({k, 0, 0, 0}) == static_cast<float>(idx));
      CHECK(batch.labels[k] == idx % 3);
      seen.insert(batch.images.at({k, 0, 1, 0}));
    }
  }
  CHECK(seen.size() == 10);
  CHECK(std::set<float>(seen.begin(), seen.end()).size() == 10);
  const auto epoch0 = shuffled.order();
  shuffled.set_epoch(1);
  CHECK(shuffled.order() != epoch0);
  CHECK(shuffled.order() == brecq::seeded_permutation(10, 10));
  shuffled.set_epoch(0);
  CHECK(shuffled.order() == epoch0);

  CHECK(contains(error_of([&] { brecq::BatchLoader l(ds, {.batch_size = 0}); }),
                 "batch_size must be positive"));
  CHECK(contains(error_of([&] {
                   brecq::TensorDataset(Tensor::zeros(Shape{3, 2}), {1, 2});
                 }),
                 "one label each"));
  std::vector<int64_t> bad{0, 10};
  CHECK(contains(error_of([&] { brecq::gather(ds, bad); }), "index 10 out of range"));
}

TEST_CASE("load_image_folder: whole folder, limit, seeded subset") {
  TempDir dir("folder_load");
  make_folder(dir.path);
  brecq::Batch all = brecq::load_image_folder(dir.path.string());
  CHECK(all.images.shape() == Shape{6, 3, 4, 3});
  CHECK(all.labels == std::vector<int>{0, 1, 1, 1, 2, 2});
  brecq::Batch two = brecq::load_image_folder(dir.path.string(), {.limit = 2});
  CHECK(two.labels == std::vector<int>{0, 1});
  brecq::Batch sub =
      brecq::load_image_folder(dir.path.string(), {.limit = 3, .shuffle = true, .seed = 5});
  const auto perm = brecq::seeded_permutation(6, 5);
  brecq::ImageFolder f(dir.path.string());
  for (int64_t k = 0; k < 3; ++k) {
    CHECK(sub.labels[k] == f.label(perm[k]));
    CHECK(sub.images.at({k, 1, 2, 0}) == f.load(perm[k], {}).at({1, 2, 0}));
  }
  CHECK(contains(error_of([&] { brecq::load_image_folder(dir.path.string(), {.limit = 7}); }),
                 "holds only 6 images"));
}

TEST_CASE("load_image_folder: real CIFAR-10 calibration and test sets") {
  const std::string calib = brecq::test::shared_dir() + "/data/cifar10/calib";
  const std::string test = brecq::test::shared_dir() + "/data/cifar10/test";
  if (!fs::exists(calib) || !fs::exists(test)) {
    MESSAGE("SKIPPED: ", calib, " or ", test,
            " not found (../shared is absent); CIFAR loading not run");
    return;
  }
  const auto t0 = std::chrono::steady_clock::now();
  brecq::Batch c = brecq::load_image_folder(calib, {.preprocess = brecq::ImagePreprocess::cifar()});
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE("loaded ", c.size(), " CIFAR-10 calibration images in ", ms, " ms (",
          brecq::num_threads(), " threads)");
  CHECK(c.images.shape() == Shape{1024, 3, 32, 32});
  std::vector<int> per_class(10, 0);
  for (int l : c.labels) per_class[l]++;
  for (int n : per_class) CHECK((n >= 92 && n <= 119));
  double sum = 0;
  for (float v : c.images.to_vector()) sum += v;
  const double mean = sum / static_cast<double>(c.images.numel());
  CHECK(std::abs(mean) < 0.5);  // roughly centred by the ImageNet mean/std

  brecq::ImageFolder t(test, brecq::ImagePreprocess::cifar());
  CHECK(t.size() == 10000);
  CHECK(t.classes() == std::vector<std::string>{"airplane", "automobile", "bird", "cat", "deer",
                                                "dog", "frog", "horse", "ship", "truck"});
  CHECK(t.label(0) == 0);
  CHECK(t.label(9999) == 9);
  brecq::Batch sub = brecq::load_image_folder(
      test,
      {.preprocess = brecq::ImagePreprocess::cifar(), .limit = 64, .shuffle = true, .seed = 1});
  CHECK(sub.images.shape() == Shape{64, 3, 32, 32});
  CHECK(sub.labels[0] == t.label(brecq::seeded_permutation(10000, 1)[0]));
}
