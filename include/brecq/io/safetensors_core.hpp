#pragma once
// safetensors (https://github.com/huggingface/safetensors) reading and writing on bytes, without
// Tensor: what the registry-free runtime uses. io/safetensors.hpp adds Tensor conversions.
//
// File layout: 8-byte little-endian header length N, N bytes of JSON header, then the data area.
// The header maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
// relative to the data area) plus an optional "__metadata__" object of string -> string.
// The reader validates everything before any data is touched; every problem raises brecq::Error
// naming the file and the problem.
#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "brecq/config.hpp"

namespace brecq {

static_assert(std::endian::native == std::endian::little,
              "brecq's safetensors reader assumes a little-endian host");

namespace detail::io {

// ---- IEEE half / bfloat16 conversions ----------------------------------------------------------

/// Exact conversion of IEEE binary16 bits to float (subnormals, infinities and NaN included).
inline float f16_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
  if (exp == 0) {  // zero or subnormal: mant * 2^-24 is exact in float
    float v = static_cast<float>(mant) * 5.9604644775390625e-08f;
    return std::bit_cast<float>(std::bit_cast<uint32_t>(v) | sign);
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7F800000u | (mant << 13));
  return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));
}

/// float -> binary16 bits, round to nearest even; overflow gives infinity, NaN stays NaN.
/// (F. Giesen's float_to_half_fast3_rtne.)
inline uint16_t float_to_f16_bits(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  const uint32_t sign = u & 0x80000000u;
  u ^= sign;
  uint32_t o;
  if (u >= (127u + 16u) << 23) {  // >= 65536 or inf/NaN
    o = u > 0x7F800000u ? 0x7E00u : 0x7C00u;
  } else if (u < 113u << 23) {  // result is subnormal or zero: align mantissa with 0.5f
    float r = std::bit_cast<float>(u) + 0.5f;
    o = std::bit_cast<uint32_t>(r) - 0x3F000000u;
  } else {
    const uint32_t mant_odd = (u >> 13) & 1u;
    u += (static_cast<uint32_t>(15 - 127) << 23) + 0xFFFu + mant_odd;
    o = u >> 13;
  }
  return static_cast<uint16_t>(o | (sign >> 16));
}

inline float bf16_bits_to_float(uint16_t b) {
  return std::bit_cast<float>(static_cast<uint32_t>(b) << 16);
}

/// float -> bfloat16 bits, round to nearest even; NaN stays a (quiet) NaN.
inline uint16_t float_to_bf16_bits(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

// ---- a small strict JSON parser (RFC 8259) ------------------------------------------------------

struct Json {
  enum class Kind { null, boolean, number, string, array, object };
  Kind kind = Kind::null;
  bool boolean = false;
  std::string text;               ///< string value, or the number's literal text
  std::vector<Json> items;        ///< array elements, or object values (in document order)
  std::vector<std::string> keys;  ///< object keys, keys[i] names items[i]
  size_t pos = 0;                 ///< byte offset of the value in the document
};

inline std::string_view json_kind_name(Json::Kind k) {
  switch (k) {
    case Json::Kind::null:
      return "null";
    case Json::Kind::boolean:
      return "a boolean";
    case Json::Kind::number:
      return "a number";
    case Json::Kind::string:
      return "a string";
    case Json::Kind::array:
      return "an array";
    case Json::Kind::object:
      return "an object";
  }
  return "?";
}

/// Parses one JSON document; trailing whitespace is allowed, anything else after it is not.
/// Errors name `where` and the byte offset.
class JsonParser {
 public:
  JsonParser(std::string_view doc, std::string where) : doc_(doc), where_(std::move(where)) {}

  Json parse_document() {
    skip_ws();
    Json v = parse_value(0);
    skip_ws();
    if (pos_ != doc_.size()) error("unexpected '", printable(doc_[pos_]), "' after the JSON value");
    return v;
  }

 private:
  static constexpr int max_depth = 64;

  template <typename... Args>
  [[noreturn]] void error(const Args&... args) const {
    fail(where_, ": malformed JSON header at byte ", pos_, ": ", args...);
  }
  static std::string printable(char c) {
    auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7F) return std::string(1, c);
    return detail::concat("\\x", "0123456789abcdef"[u >> 4], "0123456789abcdef"[u & 15]);
  }
  bool at_end() const { return pos_ >= doc_.size(); }
  char peek() const { return at_end() ? '\0' : doc_[pos_]; }
  void skip_ws() {
    while (!at_end() &&
           (doc_[pos_] == ' ' || doc_[pos_] == '\t' || doc_[pos_] == '\n' || doc_[pos_] == '\r'))
      ++pos_;
  }
  void expect(char c) {
    if (at_end()) error("expected '", c, "', found the end of the header");
    if (doc_[pos_] != c) error("expected '", c, "', found '", printable(doc_[pos_]), "'");
    ++pos_;
  }
  void expect_word(std::string_view w) {
    if (doc_.substr(pos_, w.size()) != w) error("invalid literal (expected '", w, "')");
    pos_ += w.size();
  }

  Json parse_value(int depth) {
    if (depth > max_depth) error("nesting deeper than ", max_depth, " levels");
    Json v;
    v.pos = pos_;
    if (at_end()) error("expected a value, found the end of the header");
    char c = doc_[pos_];
    if (c == '{') {
      v.kind = Json::Kind::object;
      ++pos_;
      skip_ws();
      if (peek() == '}') {
        ++pos_;
        return v;
      }
      while (true) {
        skip_ws();
        if (peek() != '"') error("expected a string key");
        std::string key = parse_string();
        for (const auto& k : v.keys)
          if (k == key) error("duplicate key \"", key, "\"");
        skip_ws();
        expect(':');
        skip_ws();
        v.items.push_back(parse_value(depth + 1));
        v.keys.push_back(std::move(key));
        skip_ws();
        if (peek() == ',') {
          ++pos_;
          continue;
        }
        expect('}');
        return v;
      }
    }
    if (c == '[') {
      v.kind = Json::Kind::array;
      ++pos_;
      skip_ws();
      if (peek() == ']') {
        ++pos_;
        return v;
      }
      while (true) {
        skip_ws();
        v.items.push_back(parse_value(depth + 1));
        skip_ws();
        if (peek() == ',') {
          ++pos_;
          continue;
        }
        expect(']');
        return v;
      }
    }
    if (c == '"') {
      v.kind = Json::Kind::string;
      v.text = parse_string();
      return v;
    }
    if (c == 't' || c == 'f') {
      v.kind = Json::Kind::boolean;
      v.boolean = c == 't';
      expect_word(v.boolean ? "true" : "false");
      return v;
    }
    if (c == 'n') {
      expect_word("null");
      return v;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
      v.kind = Json::Kind::number;
      v.text = parse_number();
      return v;
    }
    error("unexpected '", printable(c), "'");
  }

  std::string parse_number() {
    const size_t start = pos_;
    auto digits = [&] {
      size_t n = 0;
      while (!at_end() && doc_[pos_] >= '0' && doc_[pos_] <= '9') ++pos_, ++n;
      return n;
    };
    if (peek() == '-') ++pos_;
    if (peek() == '0') {
      ++pos_;
      if (peek() >= '0' && peek() <= '9') error("leading zeros are not allowed in numbers");
    } else if (digits() == 0) {
      error("expected digits in a number");
    }
    if (peek() == '.') {
      ++pos_;
      if (digits() == 0) error("expected digits after the decimal point");
    }
    if (peek() == 'e' || peek() == 'E') {
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (digits() == 0) error("expected digits in the exponent");
    }
    return std::string(doc_.substr(start, pos_ - start));
  }

  unsigned parse_hex4() {
    if (doc_.size() - pos_ < 4) error("truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; ++i) {
      char h = doc_[pos_++];
      v <<= 4;
      if (h >= '0' && h <= '9')
        v |= static_cast<unsigned>(h - '0');
      else if (h >= 'a' && h <= 'f')
        v |= static_cast<unsigned>(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F')
        v |= static_cast<unsigned>(h - 'A' + 10);
      else
        error("invalid hex digit in \\u escape");
    }
    return v;
  }

  static void append_utf8(std::string& s, unsigned cp) {
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else if (cp < 0x800) {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      s += static_cast<char>(0xE0 | (cp >> 12));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      s += static_cast<char>(0xF0 | (cp >> 18));
      s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  /// Length of the valid UTF-8 sequence starting at pos_ (non-ASCII lead byte), or 0.
  size_t utf8_sequence_length() const {
    auto b = [&](size_t i) { return static_cast<unsigned char>(doc_[pos_ + i]); };
    const size_t left = doc_.size() - pos_;
    const unsigned c0 = b(0);
    size_t n;
    unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c0 >= 0xC2 && c0 <= 0xDF)
      n = 2;
    else if (c0 >= 0xE0 && c0 <= 0xEF)
      n = 3, lo = c0 == 0xE0 ? 0xA0 : 0x80, hi = c0 == 0xED ? 0x9F : 0xBF;
    else if (c0 >= 0xF0 && c0 <= 0xF4)
      n = 4, lo = c0 == 0xF0 ? 0x90 : 0x80, hi = c0 == 0xF4 ? 0x8F : 0xBF;
    else
      return 0;
    if (left < n) return 0;
    if (b(1) < lo || b(1) > hi) return 0;
    for (size_t i = 2; i < n; ++i)
      if (b(i) < 0x80 || b(i) > 0xBF) return 0;
    return n;
  }

  std::string parse_string() {
    expect('"');
    std::string s;
    while (true) {
      if (at_end()) error("unterminated string");
      const char c = doc_[pos_];
      const auto u = static_cast<unsigned char>(c);
      if (c == '"') {
        ++pos_;
        return s;
      }
      if (u < 0x20) error("unescaped control character ", printable(c), " in a string");
      if (u >= 0x80) {
        size_t n = utf8_sequence_length();
        if (n == 0) error("invalid UTF-8 in a string");
        s.append(doc_.substr(pos_, n));
        pos_ += n;
        continue;
      }
      ++pos_;
      if (c != '\\') {
        s += c;
        continue;
      }
      if (at_end()) error("unterminated escape sequence");
      const char e = doc_[pos_++];
      switch (e) {
        case '"':
          s += '"';
          break;
        case '\\':
          s += '\\';
          break;
        case '/':
          s += '/';
          break;
        case 'b':
          s += '\b';
          break;
        case 'f':
          s += '\f';
          break;
        case 'n':
          s += '\n';
          break;
        case 'r':
          s += '\r';
          break;
        case 't':
          s += '\t';
          break;
        case 'u': {
          unsigned cp = parse_hex4();
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (doc_.substr(pos_, 2) != "\\u") error("unpaired UTF-16 surrogate in \\u escape");
            pos_ += 2;
            unsigned lo = parse_hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) error("invalid UTF-16 surrogate pair in \\u escape");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            error("unpaired UTF-16 surrogate in \\u escape");
          }
          append_utf8(s, cp);
          break;
        }
        default:
          --pos_;
          error("invalid escape '\\", printable(e), "'");
      }
    }
  }

  std::string_view doc_;
  std::string where_;
  size_t pos_ = 0;
};

/// Appends `s` as a JSON string literal.
inline void json_append_string(std::string& out, std::string_view s) {
  out += '"';
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (c == '"')
      out += "\\\"";
    else if (c == '\\')
      out += "\\\\";
    else if (u < 0x20)
      out += detail::concat("\\u00", "0123456789abcdef"[u >> 4], "0123456789abcdef"[u & 15]);
    else
      out += c;
  }
  out += '"';
}

// ---- safetensors dtypes -------------------------------------------------------------------------

enum class StDType { f64, f32, f16, bf16, i64, i32, i16, i8, u64, u32, u16, u8, boolean };

struct StDTypeEntry {
  std::string_view name;
  StDType type;
  size_t size;
};

inline constexpr StDTypeEntry st_dtypes[] = {
    {"F64", StDType::f64, 8},     {"F32", StDType::f32, 4}, {"F16", StDType::f16, 2},
    {"BF16", StDType::bf16, 2},   {"I64", StDType::i64, 8}, {"I32", StDType::i32, 4},
    {"I16", StDType::i16, 2},     {"I8", StDType::i8, 1},   {"U64", StDType::u64, 8},
    {"U32", StDType::u32, 4},     {"U16", StDType::u16, 2}, {"U8", StDType::u8, 1},
    {"BOOL", StDType::boolean, 1}};

inline const StDTypeEntry* find_st_dtype(std::string_view name) {
  for (const auto& e : st_dtypes)
    if (e.name == name) return &e;
  return nullptr;
}

inline std::string st_dtype_list() {
  std::string s;
  for (const auto& e : st_dtypes) s += (s.empty() ? "" : ", ") + std::string(e.name);
  return s;
}

template <typename T>
inline T load_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

/// "[2, 3]" (as Shape::str) for error messages.
inline std::string shape_str(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

}  // namespace detail::io

/// The largest JSON header a safetensors file may declare (100 MB, the limit of the reference
/// implementation): a larger declared length is refused before anything is parsed.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

/// Where one tensor lives in a safetensors file.
struct SafetensorsTensorInfo {
  std::string dtype;           ///< as written in the file: "F32", "F16", "BF16", "I64", ...
  std::vector<int64_t> shape;  ///< [] for a scalar
  uint64_t begin = 0;          ///< byte offsets relative to the start of the data area
  uint64_t end = 0;
  uint64_t nbytes() const { return end - begin; }
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

/// A validated safetensors file held in memory, its tensors as bytes. Copies share the bytes.
class SafetensorsReader {
 public:
  /// Reads and validates `path`.
  explicit SafetensorsReader(const std::string& path) : name_(path) {
    std::error_code ec;
    check(std::filesystem::exists(path, ec), "safetensors file '", path, "' does not exist");
    check(std::filesystem::is_regular_file(path, ec), "safetensors file '", path,
          "' is not a regular file");
    std::ifstream f(path, std::ios::binary);
    check(f.is_open(), "safetensors file '", path, "': cannot open for reading");
    f.seekg(0, std::ios::end);
    const std::streamoff size = f.tellg();
    check(size >= 0, "safetensors file '", path, "': cannot determine its size");
    f.seekg(0, std::ios::beg);
    auto bytes = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(size));
    if (size > 0) f.read(reinterpret_cast<char*>(bytes->data()), size);
    check(f.good() && f.gcount() == size, "safetensors file '", path, "': read ", f.gcount(),
          " of ", size, " bytes");
    bytes_ = std::move(bytes);
    parse();
  }

  /// Validates a safetensors image held in memory; `name` appears in error messages.
  static SafetensorsReader from_bytes(std::vector<uint8_t> bytes, std::string name = "<memory>") {
    SafetensorsReader f;
    f.name_ = std::move(name);
    f.bytes_ = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
    f.parse();
    return f;
  }

  /// The path (or in-memory name) used in error messages.
  const std::string& path() const { return name_; }
  /// Tensor names, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(tensors_.size());
    for (const auto& [name, info] : tensors_) out.push_back(name);
    return out;
  }
  size_t size() const { return tensors_.size(); }
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  const SafetensorsTensorInfo& info(const std::string& name) const {
    auto it = tensors_.find(name);
    check(it != tensors_.end(), "safetensors file '", name_, "': no tensor named '", name,
          "' (the file holds ", tensors_.size(), " tensors)");
    return it->second;
  }
  /// The string -> string "__metadata__" entries (empty when the file has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  /// The tensor's bytes as stored (little-endian, row-major).
  std::span<const uint8_t> bytes(const std::string& name) const {
    const auto& i = info(name);
    return {bytes_->data() + data_start_ + i.begin, static_cast<size_t>(i.nbytes())};
  }

  /// The data area (every tensor's bytes, between the header and the end of the file).
  std::span<const uint8_t> data_area() const {
    return {bytes_->data() + data_start_, bytes_->size() - data_start_};
  }
  /// Size of the whole file image in bytes.
  size_t file_size() const { return bytes_->size(); }

 protected:
  SafetensorsReader() = default;
  /// Takes `bytes` as the file image named `name` and validates it.
  void init_from_bytes(std::vector<uint8_t> bytes, std::string name) {
    name_ = std::move(name);
    bytes_ = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
    parse();
  }

 private:
  template <typename... Args>
  [[noreturn]] void bad(const Args&... args) const {
    fail("safetensors file '", name_, "': ", args...);
  }

  /// Non-negative JSON integer (no fraction, no exponent) that fits in int64.
  uint64_t to_index(const detail::io::Json& v, const std::string& what) const {
    if (v.kind != detail::io::Json::Kind::number)
      bad(what, ": expected a non-negative integer, found ", detail::io::json_kind_name(v.kind));
    const std::string& s = v.text;
    if (s.empty() || s[0] == '-' || s.find_first_of(".eE") != std::string::npos)
      bad(what, ": expected a non-negative integer, found ", s);
    uint64_t x = 0;
    for (char c : s) {
      const uint64_t d = static_cast<uint64_t>(c - '0');
      if (x > (static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) - d) / 10)
        bad(what, ": integer ", s, " is too large");
      x = x * 10 + d;
    }
    return x;
  }

  void parse() {
    using detail::io::Json;
    const std::vector<uint8_t>& b = *bytes_;
    if (b.size() < 8)
      bad("file has ", b.size(), " bytes, expected at least the 8-byte header length");
    const uint64_t n = detail::io::load_le<uint64_t>(b.data());
    const std::string over_limit = n > kMaxSafetensorsHeaderBytes
                                       ? detail::concat("the limit of ", kMaxSafetensorsHeaderBytes,
                                                        " bytes (kMaxSafetensorsHeaderBytes)")
                                       : "";
    if (n > b.size() - 8)
      bad("header length ", n, " runs past the end of the file (", b.size() - 8,
          " bytes follow the length field)", over_limit.empty() ? "" : " and is more than ",
          over_limit);
    if (!over_limit.empty()) bad("header length ", n, " is more than ", over_limit);
    if (n == 0) bad("header length is 0, expected a JSON object");
    if (b[8] != '{') bad("header does not start with '{'");
    data_start_ = 8 + static_cast<size_t>(n);
    const size_t data_size = b.size() - data_start_;

    std::string_view doc(reinterpret_cast<const char*>(b.data() + 8), static_cast<size_t>(n));
    Json root = detail::io::JsonParser(doc, "safetensors file '" + name_ + "'").parse_document();
    if (root.kind != Json::Kind::object)
      bad("header is ", detail::io::json_kind_name(root.kind), ", expected an object");

    struct Range {
      uint64_t begin, end;
      const std::string* name;
    };
    std::vector<Range> ranges;
    for (size_t m = 0; m < root.keys.size(); ++m) {
      const std::string& key = root.keys[m];
      const Json& v = root.items[m];
      if (key == "__metadata__") {
        if (v.kind != Json::Kind::object)
          bad("__metadata__ is ", detail::io::json_kind_name(v.kind), ", expected an object");
        for (size_t e = 0; e < v.keys.size(); ++e) {
          const std::string& mk = v.keys[e];
          const Json& mv = v.items[e];
          if (mv.kind != Json::Kind::string)
            bad("__metadata__ entry '", mk, "' is ", detail::io::json_kind_name(mv.kind),
                ", expected a string");
          metadata_[mk] = mv.text;
        }
        continue;
      }
      const std::string what = "tensor '" + key + "'";
      if (v.kind != Json::Kind::object)
        bad(what, " is ", detail::io::json_kind_name(v.kind), ", expected an object");
      const Json *dtype = nullptr, *shape = nullptr, *offsets = nullptr;
      for (size_t e = 0; e < v.keys.size(); ++e) {
        const std::string& fk = v.keys[e];
        const Json& fv = v.items[e];
        if (fk == "dtype")
          dtype = &fv;
        else if (fk == "shape")
          shape = &fv;
        else if (fk == "data_offsets")
          offsets = &fv;
        else
          bad(what, " has unknown key '", fk, "' (expected dtype, shape, data_offsets)");
      }
      if (!dtype) bad(what, " has no 'dtype'");
      if (!shape) bad(what, " has no 'shape'");
      if (!offsets) bad(what, " has no 'data_offsets'");
      if (dtype->kind != Json::Kind::string)
        bad(what, " dtype is ", detail::io::json_kind_name(dtype->kind), ", expected a string");
      const auto* dt = detail::io::find_st_dtype(dtype->text);
      if (!dt)
        bad(what, " has unsupported dtype '", dtype->text,
            "' (supported: ", detail::io::st_dtype_list(), ")");
      if (shape->kind != Json::Kind::array)
        bad(what, " shape is ", detail::io::json_kind_name(shape->kind), ", expected an array");
      if (offsets->kind != Json::Kind::array || offsets->items.size() != 2)
        bad(what, " data_offsets must be an array [begin, end]");

      SafetensorsTensorInfo info;
      info.dtype = dtype->text;
      // numel is computed from the non-zero dimensions first so that a huge shape with a zero
      // in it cannot overflow anywhere later (numel is multiplied in int64).
      uint64_t nonzero = 1;
      bool has_zero = false, overflow = false;
      for (const auto& d : shape->items) {
        const uint64_t x = to_index(d, what + " shape");
        info.shape.push_back(static_cast<int64_t>(x));
        if (x == 0)
          has_zero = true;
        else if (nonzero > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / x)
          overflow = true;
        else
          nonzero *= x;
      }
      if (overflow)
        bad(what, " shape ", detail::io::shape_str(info.shape), " has too many elements");
      const uint64_t numel = has_zero ? 0 : nonzero;
      info.begin = to_index(offsets->items[0], what + " data_offsets[0]");
      info.end = to_index(offsets->items[1], what + " data_offsets[1]");
      if (info.begin > info.end)
        bad(what, " data_offsets [", info.begin, ", ", info.end, "] has begin > end");
      if (info.end > data_size)
        bad(what, " data_offsets [", info.begin, ", ", info.end, "] run past the data area of ",
            data_size, " bytes");
      if (numel > info.nbytes() / dt->size || numel * dt->size != info.nbytes())
        bad(what, " has ", info.nbytes(), " bytes, expected ", numel, " elements (shape ",
            detail::io::shape_str(info.shape), ") x ", dt->size, " bytes (", dt->name, ")");
      auto [it, inserted] = tensors_.emplace(key, std::move(info));
      if (!inserted) bad("duplicate tensor name '", key, "'");  // also caught by the parser
      ranges.push_back({it->second.begin, it->second.end, &it->first});
    }

    // No two non-empty byte ranges may overlap.
    std::sort(ranges.begin(), ranges.end(),
              [](const Range& a, const Range& c) { return a.begin < c.begin; });
    const Range* prev = nullptr;
    for (const auto& r : ranges) {
      if (r.begin == r.end) continue;
      if (prev && r.begin < prev->end)
        bad("tensors '", *prev->name, "' [", prev->begin, ", ", prev->end, ") and '", *r.name,
            "' [", r.begin, ", ", r.end, ") overlap");
      prev = &r;
    }
  }

  std::string name_;
  std::shared_ptr<const std::vector<uint8_t>> bytes_;
  size_t data_start_ = 0;
  std::map<std::string, SafetensorsTensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// ---- writer on bytes ----------------------------------------------------------------------------

/// One tensor to write, as stored: a safetensors dtype name, its shape and its little-endian
/// bytes (numel * dtype size of them).
struct SafetensorsRawTensor {
  std::string name;
  std::string dtype;  ///< "F32", "I32", "U8", ...
  std::vector<int64_t> shape{};
  std::vector<uint8_t> bytes{};
};

/// The bytes of a safetensors file: tensors in name order, data packed in the same order,
/// header padded with spaces to a multiple of 8 bytes, metadata as "__metadata__" when not empty.
inline std::vector<uint8_t> serialize_safetensors_raw(
    const std::vector<SafetensorsRawTensor>& tensors,
    const std::map<std::string, std::string>& metadata = {}) {
  std::map<std::string, const SafetensorsRawTensor*> sorted;
  for (const SafetensorsRawTensor& t : tensors) {
    check(t.name != "__metadata__",
          "save_safetensors: '__metadata__' is reserved, not a tensor name");
    const auto* dt = detail::io::find_st_dtype(t.dtype);
    check(dt != nullptr, "save_safetensors: tensor '", t.name, "' has unknown dtype '", t.dtype,
          "' (supported: ", detail::io::st_dtype_list(), ")");
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      check(d >= 0, "save_safetensors: tensor '", t.name, "' has shape ",
            detail::io::shape_str(t.shape));
      numel *= static_cast<uint64_t>(d);
    }
    check(numel * dt->size == t.bytes.size(), "save_safetensors: tensor '", t.name, "' of shape ",
          detail::io::shape_str(t.shape), " (", t.dtype, ") needs ", numel * dt->size,
          " bytes, got ", t.bytes.size());
    check(sorted.emplace(t.name, &t).second, "save_safetensors: duplicate tensor name '", t.name,
          "'");
  }
  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      if (!first) header += ',';
      first = false;
      detail::io::json_append_string(header, k);
      header += ':';
      detail::io::json_append_string(header, v);
    }
    header += '}';
  }
  uint64_t offset = 0;
  for (const auto& [name, t] : sorted) {
    if (header.size() > 1) header += ',';
    detail::io::json_append_string(header, name);
    header += detail::concat(":{\"dtype\":\"", t->dtype, "\",\"shape\":[");
    for (size_t d = 0; d < t->shape.size(); ++d)
      header += detail::concat(d ? "," : "", t->shape[d]);
    header += detail::concat("],\"data_offsets\":[", offset, ",", offset + t->bytes.size(), "]}");
    offset += t->bytes.size();
  }
  header += '}';
  header.append((8 - header.size() % 8) % 8, ' ');

  std::vector<uint8_t> out(8 + header.size() + offset);
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  uint8_t* p = out.data() + 8 + header.size();
  for (const auto& [name, t] : sorted) {
    if (!t->bytes.empty()) std::memcpy(p, t->bytes.data(), t->bytes.size());
    p += t->bytes.size();
  }
  return out;
}

/// Writes a file image to `path`; errors name the path.
/// Writes bytes to `path` through a temporary file renamed over it (atomic on POSIX), so that an
/// interrupted or killed write never leaves a partial file that looks complete.
inline void write_file_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    check(f.is_open(), "writing '", path, "': cannot open '", tmp, "' for writing");
    f.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
    f.close();
    check(!f.fail(), "writing '", path, "': writing ", bytes.size(), " bytes to '", tmp,
          "' failed");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  check(!ec, "writing '", path, "': cannot rename '", tmp, "' to it: ", ec.message());
}

}  // namespace brecq
