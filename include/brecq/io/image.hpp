#pragma once
// JPEG / PNG decoding with stb_image, always to 3-channel RGB uint8 in HWC order.
//
// stb_image is compiled here, and only here, as static functions (STB_IMAGE_STATIC), so this
// header can be included by any number of translation units. Include this header instead of
// <stb_image.h>; other brecq headers that need stb_image (idx.hpp: its inflate) include this one.
#include <climits>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
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
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_NO_STDIO
#define STBI_NO_LINEAR
#define STBI_NO_HDR
#include <stb_image.h>
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

/// Decodes a JPEG or PNG image held in memory to RGB; `name` appears in error messages.
inline Image decode_image(std::span<const uint8_t> bytes, const std::string& name = "<memory>") {
  check(!bytes.empty(), "cannot decode image '", name, "': it is empty (0 bytes)");
  check(bytes.size() <= static_cast<size_t>(INT_MAX), "cannot decode image '", name,
        "': ", bytes.size(), " bytes is more than stb_image accepts");
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
