#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "brecq/io/safetensors.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using namespace brecq::test;
using brecq::DType;
using brecq::SafetensorsFile;
using brecq::Shape;
using brecq::Tensor;

namespace {

/// 8-byte length + header + data bytes.
std::vector<uint8_t> st_bytes(const std::string& header, size_t data_bytes, uint8_t fill = 0) {
  std::vector<uint8_t> b(8 + header.size() + data_bytes, fill);
  const uint64_t n = header.size();
  std::memcpy(b.data(), &n, 8);
  std::memcpy(b.data() + 8, header.data(), header.size());
  return b;
}

/// The error message of parsing a file with this header and data size.
std::string st_error(const std::string& header, size_t data_bytes) {
  return error_of(
      [&] { SafetensorsFile::from_bytes(st_bytes(header, data_bytes), "bad.safetensors"); });
}

}  // namespace

TEST_CASE("safetensors: real ResNet-20 checkpoint") {
  const std::string path = brecq::test::shared_dir() + "/models/resnet20_cifar10.safetensors";
  if (!fs::exists(path)) {
    MESSAGE("SKIPPED: ", path, " not found (../shared is absent); real-checkpoint checks not run");
    return;
  }
  SafetensorsFile f(path);
  CHECK(f.path() == path);
  const auto names = f.names();
  CHECK(std::is_sorted(names.begin(), names.end()));
  CHECK(f.contains("conv1.weight"));
  CHECK(f.info("conv1.weight").dtype == "F32");
  CHECK(f.info("conv1.weight").shape == std::vector<int64_t>{16, 3, 3, 3});
  CHECK(f.info("linear.weight").shape == std::vector<int64_t>{10, 64});
  CHECK(f.info("layer2.0.conv1.weight").shape == std::vector<int64_t>{32, 16, 3, 3});
  CHECK(f.info("bn1.running_mean").shape == std::vector<int64_t>{16});
  CHECK(f.metadata().at("arch") == "resnet20");

  Tensor w = f.to_f32("conv1.weight");
  CHECK(w.shape() == Shape{16, 3, 3, 3});
  CHECK(w.dtype() == DType::f32);
  double norm = 0;
  for (float v : w.to_vector()) {
    REQUIRE(std::isfinite(v));
    norm += double(v) * v;
  }
  CHECK(norm > 0.0);
  // get() returns F32 as-is, identical to to_f32.
  CHECK(f.get("conv1.weight").to_vector() == w.to_vector());
  // bytes() are the raw little-endian floats.
  auto raw = f.bytes("linear.weight");
  REQUIRE(raw.size() == 10 * 64 * 4);
  float first;
  std::memcpy(&first, raw.data(), 4);
  CHECK(first == f.to_f32("linear.weight").to_vector()[0]);
  // num_batches_tracked, where present, is an I64 scalar (to_f32 converts it, get refuses it).
  // (The checkpoint in ../shared has none: every tensor is F32.)
  for (const auto& name : names) {
    if (!name.ends_with("num_batches_tracked")) continue;
    CHECK(f.info(name).dtype == "I64");
    CHECK(f.to_f32(name).numel() == 1);
    CHECK(contains(error_of([&] { f.get(name); }), "use to_f32"));
  }
  const std::string missing = error_of([&] { f.info("conv9.weight"); });
  CHECK(contains(missing, path));
  CHECK(contains(missing, "conv9.weight"));
}

TEST_CASE("safetensors: round trip of every stored type, metadata and determinism") {
  brecq::Rng rng(7);
  Tensor a = Tensor::randn(Shape{3, 5}, rng);
  std::vector<int32_t> iv{-7, 0, 1 << 30, -2147483647 - 1};
  Tensor i32 = Tensor::from_data<int32_t>(Shape{2, 2}, iv.data());
  std::vector<int8_t> i8v{-128, -1, 0, 127, 5};
  Tensor i8 = Tensor::from_data<int8_t>(Shape{5}, i8v.data());
  std::vector<uint8_t> u8v{0, 255, 17};
  Tensor u8 = Tensor::from_data<uint8_t>(Shape{1, 3}, u8v.data());
  Tensor scalar = Tensor::scalar(2.5f);
  Tensor empty = Tensor::empty(Shape{0, 4});
  Tensor strided = Tensor::randn(Shape{4, 6}, rng).narrow(1, 1, 3);  // non-contiguous

  brecq::SafetensorsSaveParams params;
  params.metadata = {{"format", "pt"}, {"note", "quote \" backslash \\ newline \n tab \t é ☃"}};
  std::vector<std::pair<std::string, Tensor>> tensors{
      {"z.a", a},         {"i32", i32},     {"i8", i8},           {"u8", u8},
      {"scalar", scalar}, {"empty", empty}, {"strided", strided}, {"name with \"quotes\"", a}};

  TempDir dir("st_roundtrip");
  const std::string path = (dir.path / "t.safetensors").string();
  brecq::save_safetensors(path, tensors, params);
  SafetensorsFile f(path);
  CHECK(f.size() == tensors.size());
  CHECK(f.metadata() == params.metadata);
  CHECK(f.info("z.a").dtype == "F32");
  CHECK(f.get("z.a").to_vector() == a.to_vector());
  CHECK(f.to_f32("name with \"quotes\"").to_vector() == a.to_vector());
  CHECK(f.get("strided").to_vector() == strided.to_vector());
  CHECK(f.get("strided").shape() == Shape{4, 3});
  CHECK(f.info("i32").dtype == "I32");
  Tensor gi = f.get("i32");
  CHECK(gi.dtype() == DType::i32);
  CHECK(std::vector<int32_t>(gi.data<int32_t>(), gi.data<int32_t>() + 4) == iv);
  Tensor g8 = f.get("i8");
  CHECK(g8.dtype() == DType::i8);
  CHECK(std::vector<int8_t>(g8.data<int8_t>(), g8.data<int8_t>() + 5) == i8v);
  Tensor gu = f.get("u8");
  CHECK(gu.dtype() == DType::u8);
  CHECK(std::vector<uint8_t>(gu.data<uint8_t>(), gu.data<uint8_t>() + 3) == u8v);
  CHECK(f.to_f32("i8").to_vector() == std::vector<float>{-128, -1, 0, 127, 5});
  CHECK(f.to_f32("u8").to_vector() == std::vector<float>{0, 255, 17});
  CHECK(f.get("scalar").shape() == Shape{});
  CHECK(f.get("scalar").item() == 2.5f);
  CHECK(f.get("empty").shape() == Shape{0, 4});

  // Layout: header padded with spaces to 8 bytes; same bytes whatever the input order.
  auto bytes = brecq::serialize_safetensors(tensors, params);
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  CHECK(n % 8 == 0);
  CHECK(bytes[8] == '{');
  std::vector<std::pair<std::string, Tensor>> reversed(tensors.rbegin(), tensors.rend());
  CHECK(brecq::serialize_safetensors(reversed, params) == bytes);
  std::ifstream in(path, std::ios::binary);
  std::vector<uint8_t> on_disk((std::istreambuf_iterator<char>(in)),
                               std::istreambuf_iterator<char>());
  CHECK(on_disk == bytes);
}

TEST_CASE("safetensors: F16 and BF16 storage") {
  std::vector<float> vals{0.0f,
                          -0.0f,
                          1.0f,
                          -2.5f,
                          65504.0f,
                          65519.0f,
                          65520.0f,
                          1e-8f,
                          5.96e-8f,
                          6.1035156e-05f,
                          3.14159265f,
                          std::numeric_limits<float>::infinity(),
                          std::numeric_limits<float>::quiet_NaN()};
  Tensor t = Tensor::from_vector(Shape{static_cast<int64_t>(vals.size())}, vals);
  brecq::SafetensorsSaveParams p;
  p.float_storage = brecq::FloatStorage::f16;
  p.storage["b"] = brecq::FloatStorage::bf16;
  p.storage["c"] = brecq::FloatStorage::f32;
  auto f =
      SafetensorsFile::from_bytes(brecq::serialize_safetensors({{"a", t}, {"b", t}, {"c", t}}, p));
  CHECK(f.info("a").dtype == "F16");
  CHECK(f.info("b").dtype == "BF16");
  CHECK(f.info("c").dtype == "F32");
  CHECK(f.info("a").nbytes() == 2 * vals.size());
  auto h = f.to_f32("a").to_vector();
  CHECK(h[0] == 0.0f);
  CHECK(std::signbit(h[1]));
  CHECK(h[2] == 1.0f);
  CHECK(h[3] == -2.5f);
  CHECK(h[4] == 65504.0f);
  CHECK(h[5] == 65504.0f);                 // below the halfway point 65520
  CHECK(std::isinf(h[6]));                 // halfway rounds to even: infinity
  CHECK(h[7] == 0.0f);                     // below half the smallest subnormal
  CHECK(h[8] == 5.9604644775390625e-08f);  // smallest subnormal 2^-24
  CHECK(h[9] == 6.103515625e-05f);         // smallest normal 2^-14
  CHECK(h[10] == 3.140625f);
  CHECK(std::isinf(h[11]));
  CHECK(std::isnan(h[12]));
  auto b = f.to_f32("b").to_vector();
  CHECK(b[2] == 1.0f);
  CHECK(b[10] == 3.140625f);  // pi in bfloat16 (8 mantissa bits): 0x4049
  CHECK(std::isnan(b[12]));
  CHECK(f.to_f32("c").to_vector()[10] == vals[10]);
  CHECK(contains(error_of([&] { f.get("a"); }), "has dtype F16"));

  // Every half bit pattern converts to float and back unchanged (NaNs stay NaN).
  int mismatches = 0;
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    const float x = brecq::detail::io::f16_bits_to_float(static_cast<uint16_t>(bits));
    const uint16_t back = brecq::detail::io::float_to_f16_bits(x);
    const bool ok =
        std::isnan(x) ? std::isnan(brecq::detail::io::f16_bits_to_float(back)) : back == bits;
    mismatches += !ok;
  }
  CHECK(mismatches == 0);
#ifdef __FLT16_MAX__
  // Against the compiler's correctly rounded float -> _Float16 conversion.
  brecq::Rng rng(3);
  int wrong = 0;
  for (int i = 0; i < 200000; ++i) {
    const float x = std::bit_cast<float>(static_cast<uint32_t>(rng.next_u64()));
    if (std::isnan(x)) continue;
    const auto want = std::bit_cast<uint16_t>(static_cast<_Float16>(x));
    wrong += brecq::detail::io::float_to_f16_bits(x) != want;
    // And a value inside the half range (subnormals to overflow).
    const float y =
        rng.uniform(-1.0f, 1.0f) * std::ldexp(1.0f, static_cast<int>(rng.below(44)) - 26);
    wrong += brecq::detail::io::float_to_f16_bits(y) !=
             std::bit_cast<uint16_t>(static_cast<_Float16>(y));
  }
  CHECK(wrong == 0);
#endif
}

TEST_CASE("safetensors: reading every supported dtype") {
  // F64 1.5, BF16 -2, I64 -3, I16 -4, U16 65535, BOOL [0, 1], U32 7, U64 9.
  std::string h = R"({"f64":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},)"
                  R"("bf16":{"dtype":"BF16","shape":[1],"data_offsets":[8,10]},)"
                  R"("i64":{"dtype":"I64","shape":[],"data_offsets":[16,24]},)"
                  R"("i16":{"dtype":"I16","shape":[1],"data_offsets":[24,26]},)"
                  R"("u16":{"dtype":"U16","shape":[1],"data_offsets":[26,28]},)"
                  R"("bool":{"dtype":"BOOL","shape":[2],"data_offsets":[28,30]},)"
                  R"("u32":{"dtype":"U32","shape":[1],"data_offsets":[32,36]},)"
                  R"("u64":{"dtype":"U64","shape":[1],"data_offsets":[40,48]}})";
  auto b = st_bytes(h, 48);
  uint8_t* d = b.data() + 8 + h.size();
  const double f64 = 1.5;
  std::memcpy(d, &f64, 8);
  const uint16_t bf = 0xC000;  // -2
  std::memcpy(d + 8, &bf, 2);
  const int64_t i64 = -3;
  std::memcpy(d + 16, &i64, 8);
  const int16_t i16 = -4;
  std::memcpy(d + 24, &i16, 2);
  const uint16_t u16 = 65535;
  std::memcpy(d + 26, &u16, 2);
  d[28] = 0;
  d[29] = 1;
  const uint32_t u32 = 7;
  std::memcpy(d + 32, &u32, 4);
  const uint64_t u64 = 9;
  std::memcpy(d + 40, &u64, 8);
  auto f = SafetensorsFile::from_bytes(b);
  CHECK(f.to_f32("f64").to_vector() == std::vector<float>{1.5f});
  CHECK(f.to_f32("bf16").to_vector() == std::vector<float>{-2.0f});
  CHECK(f.to_f32("i64").item() == -3.0f);
  CHECK(f.to_f32("i16").to_vector() == std::vector<float>{-4.0f});
  CHECK(f.to_f32("u16").to_vector() == std::vector<float>{65535.0f});
  CHECK(f.to_f32("bool").to_vector() == std::vector<float>{0.0f, 1.0f});
  CHECK(f.to_f32("u32").to_vector() == std::vector<float>{7.0f});
  CHECK(f.to_f32("u64").to_vector() == std::vector<float>{9.0f});
}

TEST_CASE("safetensors: malformed files raise errors naming the file and the problem") {
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  REQUIRE(st_error(ok, 8) == "<no error>");

  struct Case {
    std::string what, header;
    size_t data;
    std::string expect;
  };
  const std::vector<Case> cases{
      {"header length 0", "", 8, "header length is 0"},
      {"not an object", "[1,2]", 0, "header does not start with '{'"},
      {"unterminated object", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})", 8,
       "malformed JSON"},
      {"trailing comma", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],}})", 8,
       "malformed JSON"},
      {"single quotes", R"({'a':1})", 0, "malformed JSON"},
      {"garbage after", ok + "x", 8, "after the JSON value"},
      {"leading zero", R"({"a":{"dtype":"F32","shape":[02],"data_offsets":[0,8]}})", 8,
       "leading zeros"},
      {"bad escape", R"({"a\q":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8,
       "invalid escape"},
      {"control char", "{\"a\tb\":{}}", 0, "control character"},
      {"bad literal", R"({"a":tru})", 0, "invalid literal"},
      {"lone surrogate", R"({"\ud800":{}})", 0, "surrogate"},
      {"invalid utf-8", "{\"\xff\":{}}", 0, "UTF-8"},
      {"deep nesting", "{\"a\":" + std::string(100, '[') + std::string(100, ']') + "}", 0,
       "nesting"},
      {"duplicate name",
       R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
       8, "duplicate key \"a\""},
      {"entry not an object", R"({"a":[1]})", 0, "tensor 'a' is an array, expected an object"},
      {"missing dtype", R"({"a":{"shape":[2],"data_offsets":[0,8]}})", 8, "no 'dtype'"},
      {"missing shape", R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", 8, "no 'shape'"},
      {"missing offsets", R"({"a":{"dtype":"F32","shape":[2]}})", 8, "no 'data_offsets'"},
      {"unknown key", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", 8,
       "unknown key 'x'"},
      {"unknown dtype", R"({"a":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}})", 8,
       "unsupported dtype 'F8_E4M3'"},
      {"dtype not a string", R"({"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", 8,
       "dtype is a number"},
      {"shape not an array", R"({"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", 8,
       "shape is a number"},
      {"negative dim", R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8,
       "non-negative integer, found -2"},
      {"fractional dim", R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8,
       "non-negative integer, found 2.0"},
      {"string dim", R"({"a":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", 8,
       "found a string"},
      {"huge dim", R"({"a":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,8]}})",
       8, "too large"},
      {"element overflow",
       R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8,
       "too many elements"},
      {"zero dim beside a huge one",
       R"({"a":{"dtype":"F32","shape":[4611686018427387904,0],"data_offsets":[0,8]}})", 8,
       "expected 0 elements"},
      {"offsets wrong arity", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8,
       "data_offsets must be an array [begin, end]"},
      {"begin > end", R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 8,
       "begin > end"},
      {"offset past the data", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 8,
       "run past the data area of 8 bytes"},
      {"wrong byte size", R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8,
       "has 8 bytes, expected 3 elements"},
      {"overlap",
       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
       8, "overlap"},
      {"metadata not an object",
       R"({"__metadata__":[],"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8,
       "__metadata__ is an array"},
      {"metadata value not a string", R"({"__metadata__":{"k":1}})", 0,
       "__metadata__ entry 'k' is a number"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.what);
    const std::string msg = st_error(c.header, c.data);
    CHECK_MESSAGE(contains(msg, "bad.safetensors"), msg);
    CHECK_MESSAGE(contains(msg, c.expect), msg);
  }

  // Empty tensors may share an offset with others; zero-size files with only metadata are valid.
  CHECK(
      st_error(
          R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
          8) == "<no error>");
  CHECK(st_error(R"({"__metadata__":{"k":"v"}})", 0) == "<no error>");

  // Too short for the length field; header length past the end of the file.
  for (size_t n : {0, 5, 7}) {
    const std::string msg =
        error_of([&] { SafetensorsFile::from_bytes(std::vector<uint8_t>(n), "short.st"); });
    CHECK(contains(msg, "short.st"));
    CHECK(contains(msg, "at least the 8-byte header length"));
  }
  auto b = st_bytes(ok, 8);
  const uint64_t huge = 1ull << 62;
  std::memcpy(b.data(), &huge, 8);
  CHECK(contains(error_of([&] { SafetensorsFile::from_bytes(b, "x"); }),
                 "runs past the end of the file"));
  const uint64_t one_more = ok.size() + 9;
  std::memcpy(b.data(), &one_more, 8);
  CHECK(contains(error_of([&] { SafetensorsFile::from_bytes(b, "x"); }),
                 "runs past the end of the file"));
  // The header cut short: the JSON is truncated.
  const uint64_t shorter = ok.size() - 3;
  std::memcpy(b.data(), &shorter, 8);
  CHECK(contains(error_of([&] { SafetensorsFile::from_bytes(b, "x"); }), "malformed JSON"));

  // Files on disk: missing, a directory, truncated.
  TempDir dir("st_errors");
  const std::string missing = (dir.path / "missing.safetensors").string();
  CHECK(contains(error_of([&] { SafetensorsFile f(missing); }), missing));
  const std::string folder = dir.path.string();
  CHECK(contains(error_of([&] { SafetensorsFile f(folder); }), folder));
  const std::string trunc = (dir.path / "trunc.safetensors").string();
  {
    auto full = st_bytes(ok, 8);
    std::ofstream o(trunc, std::ios::binary);
    o.write(reinterpret_cast<const char*>(full.data()),
            static_cast<std::streamsize>(full.size() - 4));
  }
  const std::string msg = error_of([&] { SafetensorsFile f(trunc); });
  CHECK(contains(msg, trunc));
  CHECK(contains(msg, "run past the data area of 4 bytes"));
}

TEST_CASE("safetensors: writer argument errors") {
  Tensor t = Tensor::ones(Shape{2});
  std::vector<int8_t> v{1, 2};
  Tensor i8 = Tensor::from_data<int8_t>(Shape{2}, v.data());
  CHECK(contains(error_of([&] {
                   brecq::serialize_safetensors({{"a", t}, {"a", t}});
                 }),
                 "duplicate tensor name 'a'"));
  CHECK(contains(error_of([&] {
                   brecq::serialize_safetensors({{"__metadata__", t}});
                 }),
                 "reserved"));
  CHECK(contains(error_of([&] { brecq::serialize_safetensors({{"a", Tensor()}}); }), "undefined"));
  brecq::SafetensorsSaveParams p;
  p.storage["nope"] = brecq::FloatStorage::f16;
  CHECK(contains(error_of([&] { brecq::serialize_safetensors({{"a", t}}, p); }), "'nope'"));
  p.storage = {{"q", brecq::FloatStorage::f16}};
  CHECK(contains(error_of([&] {
                   brecq::serialize_safetensors({{"q", i8}}, p);
                 }),
                 "only f32 tensors"));
  TempDir dir("st_write");
  const std::string bad_path = (dir.path / "no_such_dir" / "x.safetensors").string();
  CHECK(contains(error_of([&] { brecq::save_safetensors(bad_path, {{"a", t}}); }), bad_path));
}
