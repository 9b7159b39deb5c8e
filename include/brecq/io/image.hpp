#pragma once
// JPEG / PNG decoding with stb_image, always to 3-channel RGB uint8 in HWC order.
//
// stb_image is compiled here, and only here, as static functions (STB_IMAGE_STATIC), so this
// header can be included by any number of translation units. Include this header instead of
// <stb_image.h>; other brecq headers that need stb_image (idx.hpp: its inflate) include this one.
#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "brecq/config.hpp"
#include "brecq/tensor/tensor.hpp"

#ifdef STBI_INCLUDE_STB_IMAGE_H
#error "include brecq/io/image.hpp before or instead of <stb_image.h> (it compiles stb_image)"
#endif

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wtype-limits"
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wdouble-promotion"
#pragma GCC diagnostic ignored "-Wcast-qual"
// stb_image allocates its decoder state (Huffman tables among it) uninitialised and a scan may
// name a table the file never defines; zeroed memory makes such a table decode as zeros instead
// of garbage that trips stb_image's internal assertions
// (fuzz/regressions/image/jpeg_undefined_huffman_table.jpg).
#define STBI_MALLOC(size) std::calloc(1, size)
#define STBI_REALLOC(p, size) std::realloc(p, size)
#define STBI_FREE(p) std::free(p)
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_NO_STDIO
#define STBI_NO_LINEAR
#define STBI_NO_HDR
#include <stb_image.h>
#undef STBI_MALLOC
#undef STBI_REALLOC
#undef STBI_FREE
#undef STB_IMAGE_STATIC
#undef STB_IMAGE_IMPLEMENTATION
#undef STBI_ONLY_JPEG
#undef STBI_ONLY_PNG
#undef STBI_NO_STDIO
#undef STBI_NO_LINEAR
#undef STBI_NO_HDR
#pragma GCC diagnostic pop

namespace brecq {

/// A decoded 8-bit RGB image, rows top to bottom, pixels interleaved (HWC).
struct Image {
  static constexpr int64_t channels = 3;
  int64_t height = 0;
  int64_t width = 0;
  std::vector<uint8_t> pixels;  ///< height * width * 3 bytes

  uint8_t at(int64_t y, int64_t x, int64_t c) const {
    return pixels[static_cast<size_t>((y * width + x) * channels + c)];
  }
  /// A u8 tensor [H, W, 3] holding a copy of the pixels.
  Tensor to_tensor() const {
    return Tensor::from_data<uint8_t>(Shape{height, width, channels}, pixels.data());
  }
};

/// The whole content of a file; errors name the file.
inline std::vector<uint8_t> read_file_bytes(const std::string& path) {
  std::error_code ec;
  check(std::filesystem::exists(path, ec), "file '", path, "' does not exist");
  check(std::filesystem::is_regular_file(path, ec), "'", path, "' is not a regular file");
  std::ifstream f(path, std::ios::binary);
  check(f.is_open(), "cannot open file '", path, "' for reading");
  f.seekg(0, std::ios::end);
  const std::streamoff size = f.tellg();
  check(size >= 0, "cannot determine the size of '", path, "' (is it a regular file?)");
  f.seekg(0, std::ios::beg);
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  if (size > 0) f.read(reinterpret_cast<char*>(bytes.data()), size);
  check(f.good() && f.gcount() == size, "reading '", path, "': got ", f.gcount(), " of ", size,
        " bytes");
  return bytes;
}

/// The most pixels (width x height) an image may declare: 8192 x 8192. decode_image refuses a
/// larger one from its header alone, before the decoder allocates anything for it, so a tiny
/// file that declares a huge image (a decoding bomb) cannot exhaust memory.
inline constexpr int64_t kMaxImagePixels = int64_t{1} << 26;

namespace detail::io {

/// The offset after a JPEG's start-of-image marker (FF D8, after any FF fill bytes, as stb_image
/// accepts it), or 0 when stb_image would not read the bytes as a JPEG (a PNG signature wins).
inline size_t jpeg_body(std::span<const uint8_t> b) {
  static constexpr uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (b.size() >= 8 && std::equal(png, png + 8, b.begin())) return 0;
  size_t i = 0;
  while (i < b.size() && b[i] == 0xFF) ++i;
  return i >= 1 && i < b.size() && b[i] == 0xD8 ? i + 1 : 0;
}

/// {width, height} from a PNG's IHDR or a JPEG's frame header, {0, 0} when not found. JPEG
/// markers are walked as stb_image walks them up to the frame: bytes between segments skipped,
/// FF fill bytes allowed.
inline std::pair<int64_t, int64_t> declared_image_size(std::span<const uint8_t> b) {
  auto be = [&](size_t i, int n) {
    int64_t v = 0;
    for (int k = 0; k < n; ++k) v = v << 8 | (i + static_cast<size_t>(k) < b.size() ? b[i + k] : 0);
    return v;
  };
  static constexpr uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (b.size() >= 24 && std::equal(png, png + 8, b.begin()) && be(12, 4) == 0x49484452)
    return {be(16, 4), be(20, 4)};  // signature, IHDR length, "IHDR", width, height
  size_t i = jpeg_body(b);
  if (i == 0) return {0, 0};
  while (i < b.size()) {
    if (b[i] != 0xFF) {  // junk between segments
      ++i;
      continue;
    }
    while (i < b.size() && b[i] == 0xFF) ++i;  // fill bytes
    if (i >= b.size()) break;
    const uint8_t m = b[i++];
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD8)) continue;  // markers without a segment
    if (m == 0xDA || m == 0xD9) break;  // start of scan / end of image before a frame
    if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC)
      return {be(i + 5, 2), be(i + 3, 2)};  // length, precision, height, width
    i += static_cast<size_t>(be(i, 2));
  }
  return {0, 0};
}

/// The offset of a JPEG Huffman table (DHT) whose code counts add up to more than the 256 symbols
/// a table holds, or -1. stb_image as Debian ships it (2022-09 snapshot) writes past its tables on
/// one (upstream added the same check later), so decode_image refuses the file first. Every DHT
/// stb_image could read starts with the bytes FF C4, so every such pair is checked, tables parsed
/// as stb_image parses them.
inline int64_t oversized_jpeg_huffman_table(std::span<const uint8_t> b) {
  const size_t body = jpeg_body(b);
  if (body == 0) return -1;
  auto at = [&](size_t i) -> int { return i < b.size() ? b[i] : 0; };  // stb reads 0 past the end
  for (size_t m = body; m + 1 < b.size(); ++m) {
    if (b[m] != 0xFF || b[m + 1] != 0xC4) continue;
    int64_t left = (at(m + 2) << 8 | at(m + 3)) - 2;
    size_t p = m + 4;
    while (left > 0 && p < b.size()) {
      const int q = at(p);
      if ((q >> 4) > 1 || (q & 15) > 3) break;  // stb_image: "bad DHT header"
      int n = 0;
      for (size_t i = 1; i <= 16; ++i) n += at(p + i);
      if (n > 256) return static_cast<int64_t>(p);
      p += 17 + static_cast<size_t>(n);
      left -= 17 + n;
    }
  }
  return -1;
}

/// What is wrong with a PNG's IDAT chunks that stb_image mishandles, or "": an empty first IDAT
/// (stb_image copies it from a null buffer, undefined behaviour) or one that declares more bytes
/// than the file has (stb_image allocates the declared length, up to 2 GiB, before reading it).
inline std::string png_idat_problem(std::span<const uint8_t> b) {
  static constexpr uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (b.size() < 8 || !std::equal(png, png + 8, b.begin())) return "";
  auto be32 = [&](uint64_t i) {
    return uint64_t{b[i]} << 24 | uint64_t{b[i + 1]} << 16 | uint64_t{b[i + 2]} << 8 | b[i + 3];
  };
  bool data = false;
  for (uint64_t pos = 8; pos + 8 <= b.size();) {  // chunks: length, type, data, CRC
    const uint64_t len = be32(pos), type = be32(pos + 4), left = b.size() - pos - 8;
    if (type == 0x49454E44) break;  // "IEND"
    if (type == 0x49444154) {       // "IDAT"
      if (len == 0 && !data)
        return detail::concat("the first IDAT chunk (at byte ", pos,
                              ") is empty, expected image data");
      if (len > left)
        return detail::concat("the IDAT chunk at byte ", pos, " declares ", len,
                              " bytes, the file has ", left, " after its header");
      data = true;
    }
    pos += 12 + len;
  }
  return "";
}

}  // namespace detail::io

/// Decodes a JPEG or PNG image held in memory to RGB; `name` appears in error messages.
inline Image decode_image(std::span<const uint8_t> bytes, const std::string& name = "<memory>") {
  check(!bytes.empty(), "cannot decode image '", name, "': it is empty (0 bytes)");
  check(bytes.size() <= static_cast<size_t>(INT_MAX), "cannot decode image '", name,
        "': ", bytes.size(), " bytes is more than stb_image accepts");
  const auto [dw, dh] = detail::io::declared_image_size(bytes);
  const uint64_t pixels = static_cast<uint64_t>(dw) * static_cast<uint64_t>(dh);  // < 2^64
  check(pixels <= static_cast<uint64_t>(kMaxImagePixels), "cannot decode image '", name,
        "': its header declares ", dw, "x", dh, " = ", pixels, " pixels, more than the limit of ",
        kMaxImagePixels, " (kMaxImagePixels)");
  const int64_t dht = detail::io::oversized_jpeg_huffman_table(bytes);
  check(dht < 0, "cannot decode image '", name, "' as JPEG: the Huffman table at byte ", dht,
        " has more than 256 codes");
  const std::string idat = detail::io::png_idat_problem(bytes);
  check(idat.empty(), "cannot decode image '", name, "' as PNG: ", idat);
  int w = 0, h = 0, channels_in_file = 0;
  stbi_uc* data = stbi_load_from_memory(bytes.data(), static_cast<int>(bytes.size()), &w, &h,
                                        &channels_in_file, 3);
  if (!data) {
    const char* reason = stbi_failure_reason();
    fail("cannot decode image '", name, "' (", bytes.size(),
         " bytes) as JPEG or PNG: ", reason ? reason : "unknown error");
  }
  Image img;
  img.height = h;
  img.width = w;
  const size_t n = static_cast<size_t>(w) * static_cast<size_t>(h) * 3;
  img.pixels.assign(data, data + n);
  stbi_image_free(data);
  check(w > 0 && h > 0, "image '", name, "' decoded to an empty ", w, "x", h, " image");
  return img;
}

/// Reads and decodes a JPEG or PNG file to RGB.
inline Image read_image(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file_bytes(path);
  return decode_image(bytes, path);
}

}  // namespace brecq
