// Inputs the fuzz harnesses (fuzz/, tools/fuzz.sh) found crashing a loader, kept in
// fuzz/regressions/<harness>/: each is now refused with a brecq::Error naming the input, what was
// expected and what came. (tools/fuzz.sh also runs them through their harnesses.)
#include <doctest/doctest.h>

#include <cstdlib>  // defines __GLIBC__ on glibc
#include <span>
#include <string>
#include <vector>

#include "../quant/tiny_model.hpp"
#include "../support.hpp"
#include "brecq/io/idx.hpp"
#include "brecq/io/image.hpp"
#include "brecq/mixed/sensitivity.hpp"
#include "brecq/quant/serialize.hpp"
#include "brecq/runtime/load.hpp"
#include "support.hpp"  // stb_image_write

#ifdef __GLIBC__
#include <malloc.h>  // mallopt
#endif

// Named (not anonymous): the test folders are compiled as one translation unit.
namespace fuzz_regressions_test {

std::string regression(const std::string& harness, const std::string& name) {
  return std::string(BRECQ_TEST_DATA_DIR) + "/../../fuzz/regressions/" + harness + "/" + name;
}

std::string text_of(const std::string& path) {
  const std::vector<uint8_t> b = brecq::read_file_bytes(path);
  return {b.begin(), b.end()};
}

void sensitivity_refused(const std::string& name, const std::vector<std::string>& parts) {
  const std::string path = regression("sensitivity_cache", name);
  const std::string text = text_of(path);
  CAPTURE(name);
  std::vector<std::string> all{"sensitivity cache " + path};
  all.insert(all.end(), parts.begin(), parts.end());
  brecq::test::check_error([&] { brecq::mixed::detail::parse_sensitivity(text, path); }, all);
}

}  // namespace fuzz_regressions_test

using namespace fuzz_regressions_test;

TEST_CASE("fuzz regression: a JPEG Huffman table of more than 256 codes is refused") {
  // stb_image (Debian's 2022-09 snapshot) wrote past its Huffman tables on this file (UBSan:
  // index 257 out of bounds for type 'stbi_uc[257]' in stbi__build_huffman).
  const std::string path = regression("image", "stb_dht_more_than_256_codes.jpg");
  brecq::test::check_error([&] { brecq::read_image(path); },
                           {path, "Huffman table at byte", "more than 256 codes"});
  CHECK(brecq::detail::io::oversized_jpeg_huffman_table(brecq::read_file_bytes(path)) == 385);
  // The same table after FF fill bytes before the start-of-image marker, which stb_image skips.
  const std::string fill = regression("image", "stb_dht_after_fill_bytes.jpg");
  brecq::test::check_error([&] { brecq::read_image(fill); },
                           {fill, "Huffman table at byte", "more than 256 codes"});
  // JPEGs with valid tables still decode.
  std::vector<uint8_t> jpg;
  const std::vector<uint8_t> px(16 * 8 * 3, 100);
  stbi_write_jpg_to_func(
      [](void* ctx, void* data, int size) {
        auto* o = static_cast<std::vector<uint8_t>*>(ctx);
        o->insert(o->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
      },
      &jpg, 16, 8, 3, px.data(), 90);
  CHECK(brecq::detail::io::oversized_jpeg_huffman_table(jpg) == -1);
  CHECK(brecq::decode_image(jpg, "ok.jpg").width == 16);
}

TEST_CASE("fuzz regression: a JPEG scan naming an undefined Huffman table decodes the same way") {
  // The scan's first component names AC table 0, which the file never defines. stb_image read
  // that table from uninitialised memory: the pixels depended on what the heap held, and one
  // heap state failed stb_image's assertion in stbi__jpeg_huff_decode (libFuzzer, after 10^5
  // inputs). Its state is zeroed now, so the table decodes as zeros whatever the heap holds.
  const std::string path = regression("image", "jpeg_undefined_huffman_table.jpg");
  const std::vector<uint8_t> bytes = brecq::read_file_bytes(path);
  auto decode_on_heap_filled_with = [&](int fill) {
#ifdef __GLIBC__
    // glibc fills every block malloc returns with fill (M_PERTURB takes fill ^ 0xFF).
    mallopt(M_PERTURB, fill ^ 0xFF);
#endif
    const brecq::Image img = brecq::decode_image(bytes, path);
#ifdef __GLIBC__
    mallopt(M_PERTURB, 0);
#endif
    return img;
  };
  const brecq::Image zeros = decode_on_heap_filled_with(0x00);
  CHECK(zeros.width == 16);
  CHECK(zeros.height == 16);
  for (const int fill : {0xA5, 0x5A, 0x01}) {  // not 0xFF: M_PERTURB 0 turns it off
    CAPTURE(fill);
    CHECK(decode_on_heap_filled_with(fill).pixels == zeros.pixels);
  }
}

TEST_CASE("fuzz regression: sensitivity cache entries are validated, not passed to std::stoi") {
  // Each threw std::out_of_range / std::invalid_argument ("stoi", "stod", "stoll") without
  // naming the file, or overflowed int64 (UBSan) counting the expected entries.
  sensitivity_refused("bits_out_of_int_range.json",
                      {"a bits entry should be an integer in [2, 8], got '99999999999'"});
  sensitivity_refused("loss_out_of_double_range.json",
                      {"group g loss should be a finite number, got '1e999'"});
  sensitivity_refused("size_not_a_number.json",
                      {"group g size should be an integer in [0, ", "got 'ten'"});
  sensitivity_refused("entries_overflow_int64.json",
                      {"group g has 64 layers", "0 entries (expected 2^64)"});
}

TEST_CASE("quantized graph numbers out of the range of their type are refused, not read as 0") {
  // Found reviewing the loaders while fuzzing them: std::from_chars leaves the value untouched
  // (0) on an out-of-range number, which JsonObject took as the number.
  const brecq::runtime::Graph g = brecq::quant::to_graph(
      brecq::quant::QuantModel(brecq::test::tiny_resnet(), {.w_bits = 4, .a_bits = 8}));
  const std::string json = brecq::runtime::graph_json(g);
  auto edited = [&](const std::string& from, const std::string& to) {
    std::string j = json;
    const size_t i = j.find(from);
    REQUIRE(i != std::string::npos);
    j.replace(i, from.size(), to);
    const auto f = brecq::SafetensorsReader::from_bytes(
        brecq::runtime::detail::signed_file_bytes(j, brecq::runtime::detail::graph_tensors(g)),
        "edited.safetensors");
    brecq::runtime::read_graph(f, {.integer_only = false});
  };
  brecq::test::check_error([&] { edited("\"padding\":1", "\"padding\":99999999999999999999"); },
                           {"quantized model 'edited.safetensors'",
                            "'padding' should be an integer, got '99999999999999999999'"});
  brecq::test::check_error([&] { edited("\"width_mult\":1", "\"width_mult\":1e999"); },
                           {"edited.safetensors", "'width_mult' is not a finite number: 1e999"});
}

TEST_CASE("fuzz regression: a PNG whose first IDAT chunk is empty is refused") {
  // stb_image copied the empty chunk from a null buffer (UBSan: null pointer passed to memcpy).
  const std::string path = regression("image", "png_empty_first_idat.png");
  brecq::test::check_error([&] { brecq::read_image(path); },
                           {path, "as PNG: the first IDAT chunk (at byte 33) is empty"});
}

TEST_CASE("fuzz regression: an empty IDX array with huge other dims is refused") {
  // 0 images of 4082323760 x 4294934271 pixels: accepted, then the image tensor's shape
  // overflowed int64 (UBSan: signed integer overflow in Shape::contiguous_strides).
  const std::vector<uint8_t> in =
      brecq::read_file_bytes(regression("idx", "empty_set_huge_dims.bin"));
  REQUIRE(in.size() == 28);  // the idx harness's input: length 16, images, labels
  const std::span<const uint8_t> images(in.data() + 4, 16), labels(in.data() + 20, 8);
  brecq::test::check_error(
      [&] { brecq::FashionMnist::from_bytes(images, labels, {}, "images.idx", "labels.idx"); },
      {"IDX file 'images.idx'", "dims [0, 4294934271, 4082323760] describe no data",
       "multiply to more than the 16 bytes of the file"});
}

TEST_CASE(
    "fuzz regression: a PNG IDAT chunk that declares more bytes than the file has is refused") {
  // stb_image grew its IDAT buffer to the declared length first (libFuzzer: out-of-memory,
  // malloc(2147483648)).
  const std::string path = regression("image", "png_idat_declares_2gib.png");
  brecq::test::check_error(
      [&] { brecq::read_image(path); },
      {path, "as PNG: the IDAT chunk at byte 67 declares 1229258518 bytes, the file has 4"});
}
