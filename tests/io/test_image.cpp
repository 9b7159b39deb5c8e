#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "brecq/io/image.hpp"
#include "brecq/io/transforms.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using namespace brecq::test;
using brecq::Image;

namespace {

void append_bytes(void* ctx, void* data, int size) {
  auto* v = static_cast<std::vector<uint8_t>*>(ctx);
  v->insert(v->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
}

std::vector<uint8_t> encode_png(int w, int h, int comp, const std::vector<uint8_t>& px) {
  std::vector<uint8_t> out;
  REQUIRE(stbi_write_png_to_func(append_bytes, &out, w, h, comp, px.data(), w * comp));
  return out;
}

std::vector<uint8_t> encode_jpg(int w, int h, const std::vector<uint8_t>& rgb, int quality) {
  std::vector<uint8_t> out;
  REQUIRE(stbi_write_jpg_to_func(append_bytes, &out, w, h, 3, rgb.data(), quality));
  return out;
}

/// The synthetic golden image (tools/golden_resize.py uses the same formula).
int golden_pixel(int64_t y, int64_t x, int64_t c) {
  return (x * x * 3 + y * 17 + c * 85 + x * y + ((x ^ y) & 3) * 40) & 255;
}

Image golden_source(int64_t h, int64_t w) {
  Image img{.height = h, .width = w, .pixels = {}};
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int64_t c = 0; c < 3; ++c)
        img.pixels.push_back(static_cast<uint8_t>(golden_pixel(y, x, c)));
  return img;
}

}  // namespace

TEST_CASE("image: PNG decodes exactly, any channel count becomes RGB") {
  const int w = 5, h = 3;
  std::vector<uint8_t> rgb, gray, rgba;
  for (int i = 0; i < w * h; ++i) {
    for (int c = 0; c < 3; ++c) rgb.push_back(static_cast<uint8_t>(i * 17 + c * 80));
    gray.push_back(static_cast<uint8_t>(i * 13));
    for (int c = 0; c < 4; ++c) rgba.push_back(static_cast<uint8_t>(i * 7 + c * 50));
  }
  Image a = brecq::decode_image(encode_png(w, h, 3, rgb), "rgb.png");
  CHECK(a.height == h);
  CHECK(a.width == w);
  CHECK(a.pixels == rgb);
  CHECK(a.at(2, 4, 1) == rgb[(2 * w + 4) * 3 + 1]);
  Image g = brecq::decode_image(encode_png(w, h, 1, gray));
  for (int i = 0; i < w * h; ++i)
    for (int c = 0; c < 3; ++c) CHECK(g.pixels[i * 3 + c] == gray[i]);
  Image r = brecq::decode_image(encode_png(w, h, 4, rgba));
  for (int i = 0; i < w * h; ++i)
    for (int c = 0; c < 3; ++c) CHECK(r.pixels[i * 3 + c] == rgba[i * 4 + c]);  // alpha dropped
  brecq::Tensor t = a.to_tensor();
  CHECK(t.shape() == brecq::Shape{h, w, 3});
  CHECK(t.dtype() == brecq::DType::u8);
  CHECK(t.data<uint8_t>()[7] == rgb[7]);
}

TEST_CASE("image: JPEG from memory and from a file") {
  const int w = 16, h = 8;
  std::vector<uint8_t> rgb;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) rgb.push_back(static_cast<uint8_t>(40 + x * 8 + y * 4 + c * 30));
  auto jpg = encode_jpg(w, h, rgb, 100);
  Image a = brecq::decode_image(jpg, "smooth.jpg");
  REQUIRE(a.pixels.size() == rgb.size());
  int maxdiff = 0;
  for (size_t i = 0; i < rgb.size(); ++i)
    maxdiff = std::max(maxdiff, std::abs(a.pixels[i] - rgb[i]));
  CHECK(maxdiff <= 8);  // lossy, but a smooth ramp at quality 100 stays close
  TempDir dir("image_jpeg");
  write_file(dir.path / "a.jpg", jpg);
  CHECK(brecq::read_image((dir.path / "a.jpg").string()).pixels == a.pixels);
}

TEST_CASE("image: corrupt, truncated and missing files raise errors naming the file") {
  const int w = 8, h = 8;
  std::vector<uint8_t> rgb(w * h * 3, 99);
  auto png = encode_png(w, h, 3, rgb);
  auto jpg = encode_jpg(w, h, rgb, 90);
  TempDir dir("image_errors");

  struct Case {
    std::string file;
    std::vector<uint8_t> bytes;
    std::string expect;  // part of stb_image's failure reason
  };
  std::vector<uint8_t> png_trunc(png.begin(), png.begin() + 40);
  std::vector<uint8_t> png_no_idat(png.begin(), png.begin() + 33);  // signature + IHDR only
  std::vector<uint8_t> jpg_trunc(jpg.begin(), jpg.begin() + 20);
  std::vector<uint8_t> jpg_garbage{0xFF, 0xD8, 0xFF, 0x00, 0x12, 0x34, 0x56, 0x78, 0x9A};
  std::vector<uint8_t> png_bad_crc_data = png;
  png_bad_crc_data[png.size() / 2] ^= 0xFF;  // corrupt the compressed pixels
  std::vector<uint8_t> text{'h', 'e', 'l', 'l', 'o'};
  const std::vector<Case> cases{
      {"truncated.png", png_trunc, ""},      {"no_idat.png", png_no_idat, ""},
      {"truncated.jpg", jpg_trunc, ""},      {"garbage.jpg", jpg_garbage, ""},
      {"corrupt.png", png_bad_crc_data, ""}, {"text.jpg", text, "unknown image type"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.file);
    const fs::path p = dir.path / c.file;
    write_file(p, c.bytes);
    const std::string msg = error_of([&] { brecq::read_image(p.string()); });
    CHECK_MESSAGE(contains(msg, p.string()), msg);
    CHECK_MESSAGE(contains(msg, "cannot decode image"), msg);
    CHECK_MESSAGE(contains(msg, c.expect), msg);
    // From memory the same failure names the given name.
    const std::string mem = error_of([&] { brecq::decode_image(c.bytes, "buffer:" + c.file); });
    CHECK_MESSAGE(contains(mem, "buffer:" + c.file), mem);
  }
  const std::string empty = error_of([&] { brecq::decode_image({}, "nothing"); });
  CHECK(contains(empty, "nothing"));
  CHECK(contains(empty, "empty"));
  const std::string missing = (dir.path / "missing.png").string();
  const std::string msg = error_of([&] { brecq::read_image(missing); });
  CHECK(contains(msg, missing));
  CHECK(contains(msg, "does not exist"));
  CHECK(contains(error_of([&] { brecq::read_image(dir.path.string()); }), "not a regular file"));
}

TEST_CASE("image: real CIFAR-10 JPEGs") {
  const std::string dir = std::string(BRECQ_SHARED_DIR) + "/data/cifar10/test";
  if (!fs::exists(dir)) {
    MESSAGE("SKIPPED: ", dir, " not found (../shared is absent); real-JPEG checks not run");
    return;
  }
  for (const char* f : {"/airplane/0000.jpg", "/cat/0001.jpg", "/truck/0002.jpg"}) {
    CAPTURE(f);
    Image img = brecq::read_image(dir + f);
    CHECK(img.height == 32);
    CHECK(img.width == 32);
    REQUIRE(img.pixels.size() == 32 * 32 * 3);
    int lo = 255, hi = 0;
    for (uint8_t v : img.pixels) lo = std::min<int>(lo, v), hi = std::max<int>(hi, v);
    CHECK(hi - lo > 32);  // a real photo, not a flat image
    brecq::Tensor t = brecq::preprocess_image(img, brecq::ImagePreprocess::cifar());
    CHECK(t.shape() == brecq::Shape{3, 32, 32});
    // Element (c=1, y=3, x=5) is (pixel / 255 - mean) / std.
    const float want = (static_cast<float>(img.at(3, 5, 1)) / 255.0f - 0.456f) / 0.224f;
    CHECK(t.at({1, 3, 5}) == want);
  }
}

TEST_CASE("transforms: resize and crop match PIL/torchvision (golden file)") {
  const std::string path = std::string(BRECQ_TEST_DATA_DIR) + "/golden_resize.bin";
  const auto blob = brecq::read_file_bytes(path);  // committed with the tests: must exist
  REQUIRE(blob.size() > 12);
  REQUIRE(std::string(blob.begin(), blob.begin() + 8) == "BRQRSZ1\n");
  size_t pos = 8;
  auto u16 = [&] {
    REQUIRE(pos + 2 <= blob.size());
    int64_t v = blob[pos] | (blob[pos + 1] << 8);
    pos += 2;
    return v;
  };
  uint32_t count;
  std::memcpy(&count, blob.data() + pos, 4);
  pos += 4;
  CHECK(count == 5);
  for (uint32_t k = 0; k < count; ++k) {
    const int64_t src_h = u16(), src_w = u16(), size = u16(), crop = u16(), out_h = u16(),
                  out_w = u16();
    CAPTURE(k);
    CAPTURE(src_h);
    CAPTURE(src_w);
    CAPTURE(size);
    CAPTURE(crop);
    Image img = golden_source(src_h, src_w);
    if (size) img = brecq::resize_shorter(img, size);
    if (crop) img = brecq::center_crop(img, crop);
    REQUIRE(img.height == out_h);
    REQUIRE(img.width == out_w);
    REQUIRE(pos + img.pixels.size() <= blob.size());
    int maxdiff = 0;
    for (size_t i = 0; i < img.pixels.size(); ++i)
      maxdiff = std::max(maxdiff, std::abs(int(img.pixels[i]) - int(blob[pos + i])));
    pos += img.pixels.size();
    CHECK(maxdiff <= 1);  // spec: within 1/255 of PIL (this implementation is bit-exact: 0)
    CHECK(maxdiff == 0);
  }
  CHECK(pos == blob.size());
}

TEST_CASE("transforms: sizes, crop offsets, normalization and presets") {
  Image img = golden_source(23, 37);
  // torchvision: the shorter side becomes S, the other int(S * long / short).
  Image r = brecq::resize_shorter(img, 16);
  CHECK(r.height == 16);
  CHECK(r.width == 25);  // int(16 * 37 / 23) = int(25.7)
  Image portrait = brecq::resize_shorter(golden_source(37, 23), 16);
  CHECK(portrait.height == 25);
  CHECK(portrait.width == 16);
  // Same size: identity.
  CHECK(brecq::resize_bilinear(img, 23, 37).pixels == img.pixels);
  // Python's round-half-to-even offsets.
  CHECK(brecq::detail::io::half_round_even(0) == 0);
  CHECK(brecq::detail::io::half_round_even(1) == 0);  // round(0.5) = 0
  CHECK(brecq::detail::io::half_round_even(3) == 2);  // round(1.5) = 2
  CHECK(brecq::detail::io::half_round_even(5) == 2);  // round(2.5) = 2
  CHECK(brecq::detail::io::half_round_even(7) == 4);  // round(3.5) = 4
  CHECK(brecq::detail::io::half_round_even(32) == 16);
  Image c = brecq::center_crop(img, 20, 30);  // top round(1.5) = 2, left round(3.5) = 4
  CHECK(c.at(0, 0, 0) == img.at(2, 4, 0));
  CHECK(c.at(19, 29, 2) == img.at(21, 33, 2));
  Image padded = brecq::center_crop(img, 25);  // rows padded 1 top / 1 bottom, left round(6) = 6
  CHECK(padded.height == 25);
  CHECK(padded.at(0, 0, 0) == 0);
  CHECK(padded.at(1, 0, 0) == img.at(0, 6, 0));
  CHECK(padded.at(24, 24, 1) == 0);

  brecq::Tensor t = brecq::to_chw_float(img);  // [3, 23, 37] in [0, 1]
  CHECK(t.shape() == brecq::Shape{3, 23, 37});
  CHECK(t.at({2, 4, 9}) == static_cast<float>(img.at(4, 9, 2)) / 255.0f);
  auto cifar = brecq::ImagePreprocess::cifar();
  CHECK(cifar.resize_shorter == 0);
  CHECK(cifar.center_crop == 0);
  CHECK(cifar.mean[1] == 0.456f);
  CHECK(cifar.std[2] == 0.225f);
  auto in = brecq::ImagePreprocess::imagenet();
  CHECK(in.resize_shorter == 256);
  CHECK(in.center_crop == 224);
  brecq::Tensor n = brecq::preprocess_image(img, {.resize_shorter = 16,
                                                  .center_crop = 12,
                                                  .mean = {0.5f, 0.5f, 0.5f},
                                                  .std = {0.25f, 0.5f, 1.0f}});
  CHECK(n.shape() == brecq::Shape{3, 12, 12});
  Image rc = brecq::center_crop(brecq::resize_shorter(img, 16), 12);
  CHECK(n.at({0, 3, 4}) == (static_cast<float>(rc.at(3, 4, 0)) / 255.0f - 0.5f) / 0.25f);

  CHECK(contains(error_of([&] { brecq::resize_shorter(img, 0); }), "size must be positive"));
  CHECK(contains(error_of([&] { brecq::resize_bilinear(Image{}, 4, 4); }), "empty"));
  CHECK(contains(error_of([&] { brecq::center_crop(img, 0); }), "crop size must be positive"));
  CHECK(contains(error_of([&] { brecq::to_chw_float(img, {0, 0, 0}, {1, 0, 1}); }), "non-zero"));
}

TEST_CASE("transforms: ImageNet preprocessing of real images") {
  const std::string dir = std::string(BRECQ_SHARED_DIR) + "/data/imagenet-sample";
  if (!fs::exists(dir)) {
    MESSAGE("SKIPPED: ", dir, " not found (../shared is absent); ImageNet preprocessing not run");
    return;
  }
  int checked = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".JPEG" || checked >= 2) continue;
    CAPTURE(e.path().string());
    Image img = brecq::read_image(e.path().string());
    Image r = brecq::resize_shorter(img, 256);
    CHECK(std::min(r.height, r.width) == 256);
    brecq::Tensor t = brecq::preprocess_image(img, brecq::ImagePreprocess::imagenet());
    CHECK(t.shape() == brecq::Shape{3, 224, 224});
    ++checked;
  }
  CHECK(checked == 2);
}
