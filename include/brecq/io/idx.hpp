#pragma once
// MNIST / Fashion-MNIST IDX files, plain or gzip-compressed (RFC 1952; the deflate stream is
// inflated by stb_image's zlib decoder, then ISIZE and CRC32 are checked).
#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "brecq/config.hpp"
#include "brecq/io/image.hpp"  // stb_image (its zlib decoder) and read_file_bytes
#include "brecq/tensor/tensor.hpp"

namespace brecq {

namespace detail::io {

constexpr std::array<uint32_t, 256> make_crc32_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t n = 0; n < 256; ++n) {
    uint32_t c = n;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[n] = c;
  }
  return t;
}
inline constexpr std::array<uint32_t, 256> crc32_table = make_crc32_table();

inline uint32_t read_be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}
inline uint32_t read_le32(const uint8_t* p) {
  return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}

}  // namespace detail::io

/// CRC-32 (IEEE 802.3, as in gzip and PNG) of `data`.
inline uint32_t crc32(std::span<const uint8_t> data, uint32_t crc = 0) {
  crc = ~crc;
  for (uint8_t b : data) crc = detail::io::crc32_table[(crc ^ b) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

/// True when `bytes` start with the gzip magic 1f 8b.
inline bool is_gzip(std::span<const uint8_t> bytes) {
  return bytes.size() >= 2 && bytes[0] == 0x1F && bytes[1] == 0x8B;
}

/// The most bytes gunzip inflates a file to (1 GiB): a gzip file whose trailer declares more is
/// refused before anything is decompressed, and no stream inflates past what its trailer declares.
inline constexpr uint32_t kMaxGunzipBytes = uint32_t{1} << 30;

/// Decompresses a single-member gzip file held in memory; `name` appears in error messages.
inline std::vector<uint8_t> gunzip(std::span<const uint8_t> gz,
                                   const std::string& name = "<memory>") {
  auto bad = [&](const auto&... args) { fail("gzip file '", name, "': ", args...); };
  const size_t n = gz.size();
  if (n < 18) bad("truncated: ", n, " bytes, a gzip file has at least 18");
  if (!is_gzip(gz)) bad("bad magic ", int{gz[0]}, " ", int{gz[1]}, ", expected 31 139 (1f 8b)");
  if (gz[2] != 8) bad("compression method ", int{gz[2]}, ", expected 8 (deflate)");
  const uint8_t flg = gz[3];
  if (flg & 0xE0) bad("reserved flag bits set in FLG = ", int{flg});
  constexpr uint8_t fhcrc = 0x02, fextra = 0x04, fname = 0x08, fcomment = 0x10;
  size_t pos = 10;             // ID1 ID2 CM FLG MTIME(4) XFL OS
  const size_t limit = n - 8;  // the CRC32 + ISIZE trailer
  if (flg & fextra) {
    if (limit - pos < 2) bad("truncated FEXTRA length");
    const size_t xlen = gz[pos] | (size_t{gz[pos + 1]} << 8);
    pos += 2;
    if (limit - pos < xlen) bad("FEXTRA field of ", xlen, " bytes runs past the end");
    pos += xlen;
  }
  for (uint8_t field : {fname, fcomment}) {
    if (!(flg & field)) continue;
    while (pos < limit && gz[pos] != 0) ++pos;
    if (pos >= limit) bad(field == fname ? "FNAME" : "FCOMMENT", " is not zero-terminated");
    ++pos;
  }
  if (flg & fhcrc) {
    if (limit - pos < 2) bad("truncated FHCRC");
    const uint32_t want = gz[pos] | (uint32_t{gz[pos + 1]} << 8);
    const uint32_t got = crc32(gz.first(pos)) & 0xFFFFu;
    if (want != got) bad("header CRC16 mismatch: stored ", want, ", computed ", got);
    pos += 2;
  }
  const size_t deflate_size = limit - pos;
  if (deflate_size == 0) bad("no compressed data");
  if (deflate_size > static_cast<size_t>(INT_MAX) - 8)
    bad("compressed data too large (", deflate_size, " bytes)");

  const uint32_t want_crc = detail::io::read_le32(gz.data() + limit);
  const uint32_t want_size = detail::io::read_le32(gz.data() + limit + 4);
  if (want_size > kMaxGunzipBytes)
    bad("the trailer's ISIZE declares ", want_size, " decompressed bytes, more than the limit of ",
        kMaxGunzipBytes, " (kMaxGunzipBytes)");
  // Deflate inflates at most 1032:1 (a 258-byte match in two 1-bit codes).
  if (want_size > (uint64_t{deflate_size} + 1) * 1032)
    bad("the trailer's ISIZE declares ", want_size, " decompressed bytes, more than ", deflate_size,
        " bytes of deflate data can inflate to");

  // The output buffer holds ISIZE + 1 bytes and does not grow: a stream that inflates to more
  // than its trailer says (a decompression bomb) stops there instead of exhausting memory.
  // The 8-byte trailer is passed along: stb_image's decoder reports "bad huffman code" when
  // fewer than 16 bits remain at the end of its input even if the last codes need fewer. It stops
  // at the final block, so trailing bytes are never decoded as data.
  const size_t capacity = size_t{want_size} + 1;
  std::unique_ptr<char[]> raw(new char[capacity]);  // uninitialised: only what is decoded is read
  stbi__g_failure_reason = nullptr;  // some stb_image failures leave an earlier reason in place
  const int out_len = stbi_zlib_decode_noheader_buffer(
      raw.get(), static_cast<int>(capacity), reinterpret_cast<const char*>(gz.data() + pos),
      static_cast<int>(deflate_size + 8));
  if (out_len < 0) {
    const char* reason = stbi_failure_reason();
    if (reason && std::string_view(reason) == "output buffer limit")
      bad("the deflate data inflates to more than the trailer's ISIZE of ", want_size,
          " bytes (corrupt file or decompression bomb)");
    bad("corrupt deflate data (", reason ? reason : "unknown error", ")");
  }
  std::vector<uint8_t> out(reinterpret_cast<uint8_t*>(raw.get()),
                           reinterpret_cast<uint8_t*>(raw.get()) + out_len);
  if (static_cast<uint32_t>(out.size()) != want_size)
    bad("decompressed ", out.size(), " bytes, but the trailer's ISIZE says ", want_size,
        " (truncated or corrupt file)");
  const uint32_t got_crc = crc32(out);
  if (got_crc != want_crc) bad("CRC32 mismatch: trailer says ", want_crc, ", data gives ", got_crc);
  return out;
}

/// The bytes of `path`, gunzipped when they start with the gzip magic.
inline std::vector<uint8_t> read_maybe_gzip(const std::string& path) {
  std::vector<uint8_t> bytes = read_file_bytes(path);
  return is_gzip(bytes) ? gunzip(bytes, path) : bytes;
}

/// An IDX uint8 array: dims (big-endian in the file) and row-major data.
struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;
};

/// Parses an uint8 IDX file (magic 00 00 08 <ndim>) held in memory, checking the magic, the
/// number of dimensions and that the data size equals the product of the dims.
inline IdxArray parse_idx(std::span<const uint8_t> b, int expected_ndim, const std::string& name) {
  auto bad = [&](const auto&... args) { fail("IDX file '", name, "': ", args...); };
  if (b.size() < 4) bad("truncated: ", b.size(), " bytes, expected at least a 4-byte magic");
  const uint32_t magic = detail::io::read_be32(b.data());
  const uint32_t want = 0x00000800u | static_cast<uint32_t>(expected_ndim);
  if (magic != want)
    bad("magic 0x", std::hex, magic, ", expected 0x", want, std::dec, " (uint8 data, ",
        expected_ndim, " dimension", expected_ndim == 1 ? ")" : "s)");
  const size_t header = 4 + 4 * static_cast<size_t>(expected_ndim);
  if (b.size() < header) bad("truncated header: ", b.size(), " bytes, expected ", header);
  IdxArray a;
  uint64_t count = 1, nonzero = 1;  // nonzero: the product of the non-zero dims, saturated
  std::string dims = "[";
  for (int d = 0; d < expected_ndim; ++d) {
    const uint32_t x = detail::io::read_be32(b.data() + 4 + 4 * d);
    a.dims.push_back(x);
    dims += (d ? ", " : "") + std::to_string(x);
    const uint64_t cap = b.size() + 1;  // saturate: anything above the file size is wrong
    count = (x != 0 && count > cap / x) ? cap : count * x;
    nonzero = x == 0 ? nonzero : std::min(nonzero, cap) * x;  // <= (size + 1) * 2^32
  }
  dims += "]";
  if (count != b.size() - header)
    bad("dims ", dims, " need ", count > b.size() ? std::string("more") : std::to_string(count),
        " data bytes, the file has ", b.size() - header);
  // An empty array (a zero dim) may not declare huge other dims: shapes are products in int64.
  if (nonzero > b.size())
    bad("dims ", dims, " describe no data, but their non-zero dims multiply to more than the ",
        b.size(), " bytes of the file");
  a.data.assign(b.begin() + static_cast<std::ptrdiff_t>(header), b.end());
  return a;
}

enum class MnistSplit { train, test };

struct MnistParams {
  bool normalize = false;  ///< (x - mean) / std after scaling to [0, 1]
  float mean = 0.2860f;    ///< Fashion-MNIST training-set statistics
  float std = 0.3530f;
};

/// MNIST-format images and labels: images float [N, 1, rows, cols] in [0, 1] (or normalized),
/// labels 0..9. A dataset (size/get) usable with BatchLoader.
class FashionMnist {
 public:
  static constexpr std::string_view default_dir = "/usr/share/datasets/fashion-mnist";

  /// Loads a split from `dir` (default: Debian's dataset-fashion-mnist package): files
  /// {train,t10k}-{images-idx3,labels-idx1}-ubyte, each plain or with .gz.
  static FashionMnist load(MnistSplit split, const MnistParams& p = {},
                           const std::string& dir = std::string(default_dir)) {
    const std::string prefix = split == MnistSplit::train ? "train" : "t10k";
    const std::string images = find(dir, prefix + "-images-idx3-ubyte");
    const std::string labels = find(dir, prefix + "-labels-idx1-ubyte");
    return from_files(images, labels, p);
  }

  /// Loads any MNIST-format pair of IDX files (plain or gzip).
  static FashionMnist from_files(const std::string& images_path, const std::string& labels_path,
                                 const MnistParams& p = {}) {
    return from_bytes(read_file_bytes(images_path), read_file_bytes(labels_path), p, images_path,
                      labels_path);
  }

  /// Loads an MNIST-format pair of IDX files (plain or gzip) held in memory; the names appear in
  /// error messages.
  static FashionMnist from_bytes(std::span<const uint8_t> images, std::span<const uint8_t> labels,
                                 const MnistParams& p = {},
                                 const std::string& images_path = "<images>",
                                 const std::string& labels_path = "<labels>") {
    check(p.std != 0.0f, "FashionMnist: std must be non-zero");
    auto plain = [](std::span<const uint8_t> b, const std::string& name) {
      return is_gzip(b) ? gunzip(b, name) : std::vector<uint8_t>(b.begin(), b.end());
    };
    const IdxArray img = parse_idx(plain(images, images_path), 3, images_path);
    const IdxArray lab = parse_idx(plain(labels, labels_path), 1, labels_path);
    check(img.dims[0] == lab.dims[0], "FashionMnist: '", images_path, "' holds ", img.dims[0],
          " images but '", labels_path, "' holds ", lab.dims[0], " labels");
    FashionMnist m;
    m.images_ = Tensor::empty(Shape{img.dims[0], 1, img.dims[1], img.dims[2]});  // [N, 1, H, W]
    float* out = m.images_.data<float>();
    for (size_t i = 0; i < img.data.size(); ++i) {
      const float x = static_cast<float>(img.data[i]) / 255.0f;
      out[i] = p.normalize ? (x - p.mean) / p.std : x;
    }
    m.labels_.reserve(lab.data.size());
    for (size_t i = 0; i < lab.data.size(); ++i) {
      check(lab.data[i] < 10, "FashionMnist: '", labels_path, "' label ", i, " is ",
            int{lab.data[i]}, ", expected 0..9");
      m.labels_.push_back(lab.data[i]);
    }
    return m;
  }

  static constexpr std::array<std::string_view, 10> class_names = {
      "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
      "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

  int64_t size() const { return static_cast<int64_t>(labels_.size()); }
  std::pair<Tensor, int> get(int64_t i) const {
    check(i >= 0 && i < size(), "FashionMnist: index ", i, " out of range for ", size(), " images");
    return {images_.narrow(0, i, 1).view(Shape{1, images_.dim(2), images_.dim(3)}),
            labels_[static_cast<size_t>(i)]};
  }
  /// [N, 1, H, W] float
  const Tensor& images() const { return images_; }
  const std::vector<int>& labels() const { return labels_; }

 private:
  static std::string find(const std::string& dir, const std::string& stem) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::path plain = fs::path(dir) / stem, gz = fs::path(dir) / (stem + ".gz");
    if (fs::is_regular_file(plain, ec)) return plain.string();
    if (fs::is_regular_file(gz, ec)) return gz.string();
    fail("FashionMnist: found neither '", plain.string(), "' nor '", gz.string(), "'",
         dir == default_dir ? " (install Debian's dataset-fashion-mnist package)" : "");
  }

  Tensor images_;
  std::vector<int> labels_;
};

}  // namespace brecq
