// Decompression and decoding bombs: tiny files that declare huge contents are refused early,
// from their headers, with a message naming the file, the limit and the declared size, before
// anything of that size is allocated.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "../support.hpp"
#include "brecq/io/idx.hpp"
#include "brecq/io/image.hpp"
#include "brecq/io/safetensors.hpp"
#include "support.hpp"  // stb_image_write

// Named (not anonymous): the test folders are compiled as one translation unit.
namespace bombs_test {

void bomb_set_be32(std::vector<uint8_t>& b, size_t at, uint32_t v) {
  for (int k = 0; k < 4; ++k)
    b[at + static_cast<size_t>(k)] = static_cast<uint8_t>(v >> (24 - 8 * k));
}

/// A small real image of the given format made by stb_image_write.
std::vector<uint8_t> small_image(bool jpeg) {
  const std::vector<uint8_t> px(8 * 8 * 3, 77);
  std::vector<uint8_t> out;
  auto sink = [](void* ctx, void* data, int size) {
    auto* o = static_cast<std::vector<uint8_t>*>(ctx);
    o->insert(o->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
  };
  if (jpeg)
    stbi_write_jpg_to_func(sink, &out, 8, 8, 3, px.data(), 90);
  else
    stbi_write_png_to_func(sink, &out, 8, 8, 3, px.data(), 8 * 3);
  return out;
}

/// A gzip member around the raw deflate stream of `data`, with the trailer's ISIZE set to isize.
std::vector<uint8_t> gzip_claiming(const std::vector<uint8_t>& data, uint32_t isize) {
  int n = 0;
  unsigned char* z = stbi_zlib_compress(const_cast<unsigned char*>(data.data()),
                                        static_cast<int>(data.size()), &n, 8);
  std::vector<uint8_t> g{0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 3};
  g.insert(g.end(), z + 2, z + n - 4);  // without the zlib header and Adler-32
  STBIW_FREE(z);
  for (uint32_t v : {brecq::crc32(data), isize})
    for (int s = 0; s < 32; s += 8) g.push_back(static_cast<uint8_t>(v >> s));
  return g;
}

}  // namespace bombs_test

using namespace bombs_test;

TEST_CASE("bomb: a PNG that declares 60,000 x 60,000 pixels is refused from its header") {
  std::vector<uint8_t> png = small_image(false);
  REQUIRE(png.size() > 24);
  bomb_set_be32(png, 16, 60000);  // IHDR width
  bomb_set_be32(png, 20, 60000);  // IHDR height
  brecq::test::check_error([&] { brecq::decode_image(png, "bomb.png"); },
                           {"bomb.png", "declares 60000x60000 = 3600000000 pixels",
                            "limit of " + std::to_string(brecq::kMaxImagePixels)});
  // The same through the file reader.
  const std::string path = brecq::test::temp_path("bomb.png");
  brecq::test::write_file(path, png);
  brecq::test::check_error([&] { brecq::read_image(path); }, {path, "60000x60000"});
  std::filesystem::remove(path);
}

TEST_CASE("bomb: a JPEG that declares 60,000 x 60,000 pixels is refused from its header") {
  std::vector<uint8_t> jpg = small_image(true);
  size_t sof = 0;
  for (size_t i = 2; i + 9 < jpg.size() && !sof; ++i)
    if (jpg[i] == 0xFF && jpg[i + 1] == 0xC0) sof = i;
  REQUIRE(sof > 0);
  for (size_t at : {sof + 5, sof + 7}) {  // height, width: 60000 = 0xEA60
    jpg[at] = 0xEA;
    jpg[at + 1] = 0x60;
  }
  CHECK(brecq::detail::io::declared_image_size(jpg) == std::pair<int64_t, int64_t>{60000, 60000});
  brecq::test::check_error([&] { brecq::decode_image(jpg, "bomb.jpg"); },
                           {"bomb.jpg", "declares 60000x60000 = 3600000000 pixels",
                            "limit of " + std::to_string(brecq::kMaxImagePixels)});
  // Images within the limit still decode.
  CHECK(brecq::decode_image(small_image(true), "ok.jpg").width == 8);
  CHECK(brecq::decode_image(small_image(false), "ok.png").height == 8);
}

TEST_CASE("bomb: a gzip that declares or inflates to more than it may is refused (IDX loader)") {
  const std::vector<uint8_t> zeros(4 << 20, 0);  // 4 MiB of zeros: a few KiB compressed
  const std::vector<uint8_t> labels{0, 0, 8, 1, 0, 0, 0, 1, 3};
  auto load = [&](const std::vector<uint8_t>& images_gz) {
    brecq::FashionMnist::from_bytes(images_gz, labels, {}, "bomb-images.gz", "labels");
  };
  // ISIZE beyond the limit: refused before anything is inflated.
  brecq::test::check_error(
      [&] { load(gzip_claiming(zeros, 0xFFFFFFFFu)); },
      {"gzip file 'bomb-images.gz'", "ISIZE declares 4294967295 decompressed bytes",
       "limit of " + std::to_string(brecq::kMaxGunzipBytes)});
  // ISIZE within the limit but more than the compressed bytes can inflate to (1032:1).
  const std::vector<uint8_t> small_gz = gzip_claiming(std::vector<uint8_t>(100, 1), 1u << 29);
  brecq::test::check_error([&] { load(small_gz); },
                           {"bomb-images.gz", "ISIZE declares 536870912 decompressed bytes",
                            "bytes of deflate data can inflate to"});
  // A stream that inflates far past its ISIZE stops at ISIZE + 1 bytes of output.
  const std::vector<uint8_t> gz = gzip_claiming(zeros, 1000);
  CHECK(gz.size() < zeros.size() / 64);
  brecq::test::check_error([&] { load(gz); },
                           {"bomb-images.gz", "inflates to more than the trailer's ISIZE of 1000"});
  // Through the file reader.
  const std::string path = brecq::test::temp_path("bomb-images-idx3-ubyte.gz");
  brecq::test::write_file(path, gz);
  const std::string lab = brecq::test::temp_path("bomb-labels-idx1-ubyte");
  brecq::test::write_file(lab, labels);
  brecq::test::check_error([&] { brecq::FashionMnist::from_files(path, lab); },
                           {path, "more than the trailer's ISIZE"});
  std::filesystem::remove(path);
  std::filesystem::remove(lab);
}

TEST_CASE("bomb: a safetensors header that declares 100 MB is refused before it is parsed") {
  std::vector<uint8_t> st(8 + 2, 0);
  const uint64_t declared = uint64_t{100} << 20;  // 100 MiB
  std::memcpy(st.data(), &declared, 8);
  st[8] = '{';
  st[9] = '}';
  brecq::test::check_error(
      [&] { brecq::SafetensorsFile::from_bytes(st, "bomb.safetensors"); },
      {"safetensors file 'bomb.safetensors'", "header length 104857600",
       "limit of " + std::to_string(brecq::kMaxSafetensorsHeaderBytes) + " bytes"});
  const std::string path = brecq::test::temp_path("bomb.safetensors");
  brecq::test::write_file(path, st);
  brecq::test::check_error([&] { brecq::SafetensorsFile f(path); }, {path, "header length"});
  std::filesystem::remove(path);
  // A header within the limit that declares a 100 MB tensor in a tiny file: refused from the
  // offsets, nothing allocated for it.
  const std::string h = R"({"t":{"dtype":"F32","shape":[25000000],"data_offsets":[0,100000000]}})";
  std::vector<uint8_t> t(8 + h.size());
  const uint64_t n = h.size();
  std::memcpy(t.data(), &n, 8);
  std::memcpy(t.data() + 8, h.data(), h.size());
  brecq::test::check_error([&] { brecq::SafetensorsFile::from_bytes(t, "big_tensor"); },
                           {"big_tensor", "data_offsets [0, 100000000] run past the data area"});
}
