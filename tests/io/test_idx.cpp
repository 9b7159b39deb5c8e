#include <doctest/doctest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "brecq/io/dataset.hpp"
#include "brecq/io/idx.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using namespace brecq::test;
using brecq::Shape;
using brecq::Tensor;

namespace {

void put_be32(std::vector<uint8_t>& v, uint32_t x) {
  for (int s = 24; s >= 0; s -= 8) v.push_back(static_cast<uint8_t>(x >> s));
}
void put_le32(std::vector<uint8_t>& v, uint32_t x) {
  for (int s = 0; s < 32; s += 8) v.push_back(static_cast<uint8_t>(x >> s));
}

std::vector<uint8_t> idx_images(uint32_t n, uint32_t rows, uint32_t cols) {
  std::vector<uint8_t> v;
  put_be32(v, 0x00000803);
  put_be32(v, n);
  put_be32(v, rows);
  put_be32(v, cols);
  for (uint32_t i = 0; i < n * rows * cols; ++i) v.push_back(static_cast<uint8_t>(i * 7 + 3));
  return v;
}

std::vector<uint8_t> idx_labels(uint32_t n) {
  std::vector<uint8_t> v;
  put_be32(v, 0x00000801);
  put_be32(v, n);
  for (uint32_t i = 0; i < n; ++i) v.push_back(static_cast<uint8_t>((i * 3) % 10));
  return v;
}

struct GzipOptions {
  bool compress = false;  ///< Huffman-coded deflate (stb_image_write) instead of stored blocks
  bool extra = false, name = false, comment = false, hcrc = false;
};

/// A gzip member (RFC 1952) holding `data`.
std::vector<uint8_t> gzip(const std::vector<uint8_t>& data, GzipOptions o = {}) {
  std::vector<uint8_t> g{0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 3};
  g[3] = static_cast<uint8_t>((o.hcrc ? 2 : 0) | (o.extra ? 4 : 0) | (o.name ? 8 : 0) |
                              (o.comment ? 16 : 0));
  if (o.extra) g.insert(g.end(), {5, 0, 'A', 'B', 1, 0, 'x'});  // XLEN = 5, one subfield
  if (o.name) g.insert(g.end(), {'t', '.', 'i', 'd', 'x', 0});
  if (o.comment) g.insert(g.end(), {'h', 'i', 0});
  if (o.hcrc) {
    const uint32_t c = brecq::crc32(g);
    g.push_back(static_cast<uint8_t>(c));
    g.push_back(static_cast<uint8_t>(c >> 8));
  }
  if (o.compress) {
    int len = 0;
    unsigned char* z = stbi_zlib_compress(const_cast<unsigned char*>(data.data()),
                                          static_cast<int>(data.size()), &len, 8);
    REQUIRE(z);
    g.insert(g.end(), z + 2, z + len - 4);  // strip the zlib header and Adler-32 trailer
    free(z);
  } else {
    size_t pos = 0;
    do {  // stored blocks of at most 65535 bytes
      const size_t n = std::min<size_t>(65535, data.size() - pos);
      const bool final = pos + n == data.size();
      g.push_back(final ? 1 : 0);
      g.push_back(static_cast<uint8_t>(n));
      g.push_back(static_cast<uint8_t>(n >> 8));
      g.push_back(static_cast<uint8_t>(~n));
      g.push_back(static_cast<uint8_t>(~n >> 8));
      g.insert(g.end(), data.begin() + static_cast<std::ptrdiff_t>(pos),
               data.begin() + static_cast<std::ptrdiff_t>(pos + n));
      pos += n;
    } while (pos < data.size());
  }
  put_le32(g, brecq::crc32(data));
  put_le32(g, static_cast<uint32_t>(data.size()));
  return g;
}

}  // namespace

TEST_CASE("gzip: CRC32, header fields, stored and compressed deflate") {
  const std::string check = "123456789";
  CHECK(brecq::crc32({reinterpret_cast<const uint8_t*>(check.data()), check.size()}) ==
        0xCBF43926u);
  std::vector<uint8_t> data;
  for (uint32_t i = 0; i < 150000; ++i) data.push_back(static_cast<uint8_t>((i * i) >> 7));
  for (bool compress : {false, true}) {
    CAPTURE(compress);
    CHECK(brecq::gunzip(gzip(data, {.compress = compress})) == data);
    CHECK(
        brecq::gunzip(gzip(
            data,
            {.compress = compress, .extra = true, .name = true, .comment = true, .hcrc = true})) ==
        data);
  }
  CHECK(brecq::gunzip(gzip({})).empty());
}

TEST_CASE("gzip: malformed streams raise errors naming the file") {
  std::vector<uint8_t> data(5000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i % 251);
  const auto good = gzip(data, {.compress = true});
  auto err = [](std::vector<uint8_t> b) { return error_of([&] { brecq::gunzip(b, "f.gz"); }); };

  CHECK(contains(err({0x1F, 0x8B, 8, 0}), "truncated: 4 bytes"));
  auto bad_magic = good;
  bad_magic[1] = 0x8C;
  CHECK(contains(err(bad_magic), "bad magic"));
  auto bad_method = good;
  bad_method[2] = 7;
  CHECK(contains(err(bad_method), "compression method 7"));
  auto reserved = good;
  reserved[3] = 0x20;
  CHECK(contains(err(reserved), "reserved flag bits"));
  auto truncated = std::vector<uint8_t>(good.begin(), good.end() - 10);
  const std::string t = err(truncated);
  CHECK(contains(t, "f.gz"));
  CHECK(t != "<no error>");
  auto half = std::vector<uint8_t>(good.begin(),
                                   good.begin() + static_cast<std::ptrdiff_t>(good.size() / 2));
  CHECK(err(half) != "<no error>");
  auto bad_crc = good;
  bad_crc[bad_crc.size() - 6] ^= 1;  // CRC32 field
  CHECK(contains(err(bad_crc), "CRC32 mismatch"));
  auto bad_size = good;
  bad_size[bad_size.size() - 1] ^= 1;  // ISIZE field
  CHECK(contains(err(bad_size), "ISIZE"));
  auto stored = gzip(data);
  stored[10 + 5 + 100] ^= 0x40;  // a payload byte of the stored block: only the CRC can tell
  CHECK(contains(err(stored), "CRC32 mismatch"));
  auto bad_block = gzip(data);
  bad_block[10] = 0x07;  // BFINAL = 1, BTYPE = 3 (reserved)
  CHECK(contains(err(bad_block), "corrupt deflate data"));
  auto bad_hcrc = gzip(data, {.hcrc = true});
  bad_hcrc[10] ^= 1;
  CHECK(contains(err(bad_hcrc), "header CRC16 mismatch"));
  auto no_nul = gzip(data, {.name = true});
  no_nul.resize(10 + 3);  // FNAME cut before its terminator
  no_nul.insert(no_nul.end(), 8, 'x');
  CHECK(contains(err(no_nul), "FNAME is not zero-terminated"));
  auto bad_extra = gzip(data, {.extra = true});
  bad_extra[10] = 0xFF;  // XLEN far past the end
  bad_extra[11] = 0xFF;
  CHECK(contains(err(bad_extra), "FEXTRA"));
}

TEST_CASE("IDX: plain and gzip files, FashionMnist::from_files") {
  TempDir dir("idx_ok");
  const auto img = idx_images(6, 3, 2);
  const auto lab = idx_labels(6);
  write_file(dir.path / "img", img);
  write_file(dir.path / "lab", lab);
  write_file(dir.path / "img.gz", gzip(img, {.compress = true, .name = true}));
  write_file(dir.path / "lab.gz", gzip(lab));

  const auto a = brecq::parse_idx(img, 3, "img");
  CHECK(a.dims == std::vector<int64_t>{6, 3, 2});
  CHECK(a.data.size() == 36);
  for (const char* suffix : {"", ".gz"}) {
    CAPTURE(suffix);
    auto m = brecq::FashionMnist::from_files((dir.path / "img").string() + suffix,
                                             (dir.path / "lab").string() + suffix);
    REQUIRE(m.size() == 6);
    CHECK(m.images().shape() == Shape{6, 1, 3, 2});
    CHECK(m.images().at({1, 0, 2, 1}) ==
          static_cast<float>(static_cast<uint8_t>(11 * 7 + 3)) / 255.0f);
    CHECK(m.labels() == std::vector<int>{0, 3, 6, 9, 2, 5});
    auto [x, label] = m.get(3);
    CHECK(x.shape() == Shape{1, 3, 2});
    CHECK(label == 9);
  }
  brecq::MnistParams norm{.normalize = true, .mean = 0.5f, .std = 0.25f};
  auto n = brecq::FashionMnist::from_files((dir.path / "img").string(), (dir.path / "lab").string(),
                                           norm);
  CHECK(n.images().at({0, 0, 0, 0}) == (3.0f / 255.0f - 0.5f) / 0.25f);
  // Works with the generic batching.
  brecq::BatchLoader loader(n, {.batch_size = 4});
  CHECK(loader.batch(1).images.shape() == Shape{2, 1, 3, 2});
}

TEST_CASE("IDX: malformed files raise errors naming the file") {
  auto err = [](const std::vector<uint8_t>& b, int ndim) {
    return error_of([&] { brecq::parse_idx(b, ndim, "x.idx"); });
  };
  const auto img = idx_images(4, 2, 2);
  CHECK(contains(err({0, 0}, 3), "truncated"));
  auto bad_magic = img;
  bad_magic[2] = 0x09;  // not uint8 data
  CHECK(contains(err(bad_magic, 3), "magic 0x903, expected 0x803"));
  CHECK(contains(err(img, 1), "magic 0x803, expected 0x801"));  // images given as labels
  CHECK(contains(err(std::vector<uint8_t>(img.begin(), img.begin() + 10), 3), "truncated header"));
  CHECK(contains(err(std::vector<uint8_t>(img.begin(), img.end() - 1), 3),
                 "need 16 data bytes, the file has 15"));
  auto longer = img;
  longer.push_back(0);
  CHECK(contains(err(longer, 3), "need 16 data bytes, the file has 17"));
  auto huge = img;
  huge[4] = huge[8] = huge[12] = 0xFF;  // dims near 2^32 each
  CHECK(contains(err(huge, 3), "need more data bytes"));
  CHECK(contains(err(img, 3), "<no error>"));

  TempDir dir("idx_bad");
  write_file(dir.path / "img", img);
  write_file(dir.path / "lab5", idx_labels(5));
  auto bad_label = idx_labels(4);
  bad_label.back() = 10;
  write_file(dir.path / "lab_bad", bad_label);
  write_file(dir.path / "img_trunc.gz", [&] {
    auto g = gzip(img, {.compress = true});
    g.erase(g.end() - 3, g.end());  // (resize(size - 3) trips a GCC -O3 false positive)
    return g;
  }());
  const std::string p = dir.path.string();
  std::string msg = error_of([&] { brecq::FashionMnist::from_files(p + "/img", p + "/lab5"); });
  CHECK(contains(msg, "holds 4 images"));
  CHECK(contains(msg, "holds 5 labels"));
  msg = error_of([&] { brecq::FashionMnist::from_files(p + "/img", p + "/lab_bad"); });
  CHECK(contains(msg, "lab_bad"));
  CHECK(contains(msg, "expected 0..9"));
  msg = error_of([&] { brecq::FashionMnist::from_files(p + "/img_trunc.gz", p + "/lab5"); });
  CHECK(contains(msg, "img_trunc.gz"));
  msg = error_of([&] { brecq::FashionMnist::from_files(p + "/missing", p + "/lab5"); });
  CHECK(contains(msg, p + "/missing"));
  msg = error_of([&] { brecq::FashionMnist::load(brecq::MnistSplit::test, {}, p); });
  CHECK(contains(msg, "t10k-images-idx3-ubyte"));
  CHECK(contains(msg, "found neither"));
}

TEST_CASE("FashionMnist: Debian's dataset-fashion-mnist package") {
  const std::string dir(brecq::FashionMnist::default_dir);
  if (!fs::exists(dir + "/t10k-images-idx3-ubyte.gz") &&
      !fs::exists(dir + "/t10k-images-idx3-ubyte")) {
    MESSAGE("SKIPPED: Fashion-MNIST not found in ", dir,
            " (apt-get install dataset-fashion-mnist); real-file checks not run");
    return;
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto m = brecq::FashionMnist::load(brecq::MnistSplit::test);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE("loaded the Fashion-MNIST test split in ", ms, " ms");
  REQUIRE(m.size() == 10000);
  CHECK(m.images().shape() == Shape{10000, 1, 28, 28});
  CHECK(m.labels()[0] == 9);  // the first test image is an ankle boot
  CHECK(brecq::FashionMnist::class_names[9] == "Ankle boot");
  std::vector<int> per_class(10, 0);
  for (int l : m.labels()) per_class[l]++;
  for (int c : per_class) CHECK(c == 1000);
  double sum = 0;
  float lo = 1, hi = 0;
  for (float v : m.images().to_vector()) sum += v, lo = std::min(lo, v), hi = std::max(hi, v);
  CHECK(lo == 0.0f);
  CHECK(hi == 1.0f);
  CHECK(std::abs(sum / static_cast<double>(m.images().numel()) - 0.2868) < 0.01);  // test-set mean
  auto labels = brecq::parse_idx(brecq::read_maybe_gzip(dir + "/train-labels-idx1-ubyte.gz"), 1,
                                 "train labels");
  CHECK(labels.dims == std::vector<int64_t>{60000});
}
