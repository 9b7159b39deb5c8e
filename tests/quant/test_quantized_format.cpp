// Quantized model files, format version 2 (runtime/load.hpp): round trips, the
// version-1 compatibility path, and every kind of damaged or edited file
// refused with a message naming the file and the problem.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "brecq/nn/load.hpp"
#include "brecq/quant/serialize.hpp"
#include "brecq/runtime/load.hpp"
#include "tiny_model.hpp"

using namespace brecq;

// Named (not anonymous): the test folder may be compiled as one translation unit.
namespace quantized_format_test {

std::string fmt_temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("brecq_test_fmt_" + name)).string();
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

/// The tiny residual CNN at W3A4 with calibrated activation points (nearest
/// rounding).
quant::QuantModel tiny_quantized() {
  quant::QuantModel qm(test::tiny_resnet(), {.w_bits = 3, .a_bits = 4, .input_bits = 8});
  Rng rng(3);
  qm.init_activations(Tensor::randn(Shape{8, 3, 8, 8}, rng));
  return qm;
}

/// Message of the error load_graph raises on `bytes` written to `name`.
std::string load_error(const std::vector<uint8_t>& bytes, const std::string& name,
                       runtime::LoadParams p = {}) {
  const std::string path = fmt_temp_path(name);
  write_bytes(path, bytes);
  std::string msg = "(no error)";
  try {
    runtime::load_graph(path, p);
  } catch (const Error& e) {
    msg = e.what();
  }
  std::filesystem::remove(path);
  return msg;
}

/// A version-2 file of g with a fresh checksum and no validation: an edited
/// file.
std::vector<uint8_t> signed_file(const runtime::Graph& g, std::string json = "") {
  if (json.empty()) json = runtime::graph_json(g);
  return runtime::detail::signed_file_bytes(json, runtime::detail::graph_tensors(g));
}

std::string replace_once(std::string s, const std::string& from, const std::string& to) {
  const size_t i = s.find(from);
  REQUIRE(i != std::string::npos);
  return s.replace(i, from.size(), to);
}

/// A version-1 file as brecq before format 2 wrote it (quantized_tensors +
/// metadata).
void save_v1(const quant::QuantModel& qm, const std::string& path, bool with_input_bits) {
  std::map<std::string, std::string> m{{"format", "brecq-quantized-1"},
                                       {"arch", qm.model.arch},
                                       {"num_classes", std::to_string(qm.model.num_classes)},
                                       {"in_channels", std::to_string(qm.model.in_channels)},
                                       {"width_mult_x1000", "1000"},
                                       {"small_input_stem", "0"},
                                       {"base_width", "64"},
                                       {"w_bits", std::to_string(qm.settings.w_bits)},
                                       {"a_bits", std::to_string(qm.settings.a_bits)},
                                       {"first_last_bits", "8"},
                                       {"settings", "test"}};
  if (with_input_bits) m["input_bits"] = std::to_string(qm.settings.input_bits);
  save_safetensors(path, quant::quantized_tensors(qm), {.metadata = m});
}

}  // namespace quantized_format_test

using namespace quantized_format_test;

TEST_CASE(
    "a version-2 file reads back as the graph written, and rewrites to "
    "the same bytes") {
  const quant::QuantModel qm = tiny_quantized();
  const runtime::Graph g = quant::to_graph(qm);
  const std::vector<uint8_t> bytes = runtime::graph_file_bytes(g, {{"settings", "test"}});
  const std::string path = fmt_temp_path("roundtrip.safetensors");
  write_bytes(path, bytes);

  const runtime::Graph back = runtime::load_graph(path);
  CHECK(runtime::graph_json(back) == runtime::graph_json(g));
  CHECK(runtime::graph_file_bytes(back, {{"settings", "test"}}) == bytes);
  const auto layers = back.layers();
  REQUIRE(layers.size() == 7);
  CHECK(layers[0]->weight_bits == 8);  // first and last layer at first_last_bits
  CHECK(layers[1]->weight_bits == 3);
  CHECK(layers[1]->weight_levels.size() == static_cast<size_t>((4 * 4 * 9 + 1) / 2));  // 2 a byte
  CHECK(back.points[static_cast<size_t>(back.input_point)].enabled);

  // v2 -> QuantModel -> v2: the same file.
  quant::QuantizedFile f = quant::read_quantized(path);
  CHECK(f.version == 2);
  CHECK(f.params.metadata.at("settings") == "test");
  const std::string again = fmt_temp_path("roundtrip2.safetensors");
  quant::save_quantized(f.model, again, f.params);
  CHECK(read_bytes(again) == bytes);
  std::filesystem::remove(again);
  std::filesystem::remove(path);
}

TEST_CASE(
    "the packed levels are four 2-bit, two 4-bit or one 8-bit value a "
    "byte, LSB first") {
  const std::vector<uint8_t> v2{1, 2, 3, 0, 2}, v4{1, 15, 7}, v8{200, 3};
  CHECK(runtime::pack_levels(v2.data(), 5, 2) == std::vector<uint8_t>{0b00111001, 0b10});
  CHECK(runtime::pack_levels(v4.data(), 3, 3) == std::vector<uint8_t>{0xF1, 0x07});
  CHECK(runtime::pack_levels(v8.data(), 2, 8) == v8);
  for (int64_t k = 0; k < 5; ++k)
    CHECK(runtime::packed_level(runtime::pack_levels(v2.data(), 5, 2).data(), k, 2) ==
          v2[static_cast<size_t>(k)]);
  CHECK(runtime::packed_size(9, 2) == 3);
  CHECK(runtime::packed_size(9, 5) == 9);
}

TEST_CASE(
    "the Fashion-MNIST ResNet-18 (CIFAR stem, base width 16, one "
    "channel) saves and loads") {
  const std::string model_file =
      std::string(BRECQ_TEST_DATA_DIR) + "/../../models/fashion_mnist_resnet18_w16.safetensors";
  nn::Model m =
      nn::make_model("resnet18_cifar", {.num_classes = 10, .in_channels = 1, .base_width = 16});
  nn::load_weights(m, model_file);
  quant::QuantModel qm(m, {.w_bits = 2, .a_bits = 4, .input_bits = 8});
  Rng rng(4);
  const Tensor x = Tensor::randn(Shape{4, 1, 28, 28}, rng);
  qm.init_activations(x);
  quant::snap_biases(qm);
  const std::string path = fmt_temp_path("fashion.safetensors");
  quant::save_quantized(qm, path,
                        {.options = {.num_classes = 10, .in_channels = 1, .base_width = 16},
                         .preprocessing = quant::Preprocessing{.name = "fashion_mnist",
                                                               .mean = {0.2860f},
                                                               .std = {0.3530f},
                                                               .input_height = 28,
                                                               .input_width = 28}});
  const quant::QuantizedFile f = quant::read_quantized(path);
  CHECK(f.params.options.base_width == 16);
  CHECK(f.params.options.in_channels == 1);
  REQUIRE(f.params.preprocessing.has_value());
  CHECK(f.params.preprocessing->mean == std::vector<float>{0.2860f});
  CHECK(f.model.model.blocks[0].layers[0].out_channels() == 16);
  NoGrad ng;
  quant::QuantModel loaded = f.model;
  const Tensor a = qm.forward(x), b = loaded.forward(x);
  REQUIRE(a.shape() == b.shape());
  for (int64_t i = 0; i < a.numel(); ++i) CHECK(a.data<float>()[i] == b.data<float>()[i]);
  const runtime::Graph g = runtime::load_graph(path);
  CHECK(g.options.input_height == 28);
  CHECK(g.options.preprocess == "fashion_mnist");
  std::filesystem::remove(path);
}

TEST_CASE(
    "version-1 files: the simulation reads them, the runtime refuses "
    "them with the way out") {
  nn::Model m = nn::make_model("resnet20_cifar");
  test::randomize(m, 2);
  quant::QuantModel qm(m, {.w_bits = 4, .a_bits = 4, .input_bits = 8});
  Rng rng(6);
  const Tensor x = Tensor::randn(Shape{4, 3, 16, 16}, rng);
  qm.init_activations(x);
  const std::string v1 = fmt_temp_path("v1.safetensors");
  save_v1(qm, v1, /*with_input_bits=*/true);

  quant::QuantizedFile f = quant::read_quantized(v1);
  CHECK(f.version == 1);
  CHECK(quant::quantized_difference(f.model, qm).empty());
  CHECK_THROWS_WITH_AS(runtime::load_graph(v1),
                       doctest::Contains("brecq_test_fmt_v1.safetensors' is a version-1 file"),
                       Error);
  CHECK_THROWS_WITH_AS(runtime::load_graph(v1), doctest::Contains("brecq upgrade --quantized"),
                       Error);

  // The upgrade path: same weights and quantizers, biases on the int32 grid,
  // readable by the runtime.
  const std::string v2 = fmt_temp_path("v1_upgraded.safetensors");
  quant::snap_biases(f.model);
  quant::save_quantized(f.model, v2, f.params);
  const runtime::Graph g = runtime::load_graph(v2);
  CHECK(g.options.arch == "resnet20_cifar");
  CHECK(g.options.preprocess == "cifar");
  CHECK(quant::read_quantized(v2).params.metadata.at("upgraded_from") == "brecq-quantized-1");

  // Files from before the input quantizer have a float input: the runtime says
  // what to do.
  quant::QuantModel fp_in(m, {.w_bits = 4, .a_bits = 4, .input_bits = 0});
  fp_in.init_activations(x);
  save_v1(fp_in, v1, /*with_input_bits=*/false);
  quant::QuantizedFile old = quant::read_quantized(v1);
  CHECK(old.model.settings.input_bits == 0);
  quant::save_quantized(old.model, v2, old.params);
  CHECK_THROWS_WITH_AS(runtime::load_graph(v2), doctest::Contains("requantize with --input-bits 8"),
                       Error);
  CHECK_NOTHROW(runtime::load_graph(v2, {.integer_only = false}));  // the simulation's view
  std::filesystem::remove(v1);
  std::filesystem::remove(v2);
}

TEST_CASE("truncated, damaged and newer-version files are refused, naming the file") {
  const runtime::Graph g = quant::to_graph(tiny_quantized());
  const std::vector<uint8_t> bytes = runtime::graph_file_bytes(g);

  for (size_t cut :
       {size_t{0}, size_t{5}, size_t{8}, size_t{200}, bytes.size() / 2, bytes.size() - 1}) {
    CAPTURE(cut);
    const std::vector<uint8_t> part(bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(cut));
    CHECK(load_error(part, "cut.safetensors").find("brecq_test_fmt_cut.safetensors") !=
          std::string::npos);
  }
  // A flipped bit in the graph JSON, in the header's tensor table and in the
  // data area.
  const std::string header(
      bytes.begin() + 8,
      bytes.begin() + static_cast<ptrdiff_t>(std::min<size_t>(bytes.size(), 2008)));
  const size_t in_graph = header.find("weight_bits") + 8 + 3;
  const size_t in_table = header.find("data_offsets") + 8 + 2;
  for (size_t at : {in_graph, in_table, bytes.size() - 3, bytes.size() - 700}) {
    CAPTURE(at);
    std::vector<uint8_t> b = bytes;
    b[at] ^= 0x04;
    const std::string msg = load_error(b, "flip.safetensors");
    CHECK(msg.find("brecq_test_fmt_flip.safetensors") != std::string::npos);
  }
  std::vector<uint8_t> b = bytes;
  b[bytes.size() - 3] ^= 0x01;
  CHECK(load_error(b, "data.safetensors").find("checksum mismatch") != std::string::npos);

  const auto newer = runtime::detail::signed_file_bytes(runtime::graph_json(g),
                                                        runtime::detail::graph_tensors(g), {});
  std::string s(newer.begin(), newer.end());
  s = replace_once(s, "brecq-quantized-2", "brecq-quantized-3");
  CHECK(load_error({s.begin(), s.end()}, "newer.safetensors")
            .find("is format version 3 (brecq-quantized-3), newer than this "
                  "brecq reads") != std::string::npos);
  s = replace_once(s, "brecq-quantized-3", "brecq-quantizer-3");
  CHECK(load_error({s.begin(), s.end()}, "other.safetensors").find("not a brecq quantized model") !=
        std::string::npos);
}

TEST_CASE("edited files with a valid checksum are refused field by field") {
  const runtime::Graph g = quant::to_graph(tiny_quantized());
  const std::string json = runtime::graph_json(g);
  auto refused = [&](const std::vector<uint8_t>& file, const std::string& expected,
                     runtime::LoadParams p = {}) {
    const std::string msg = load_error(file, "edit.safetensors", p);
    CAPTURE(msg);
    CHECK(msg.find("brecq_test_fmt_edit.safetensors") != std::string::npos);
    CHECK(msg.find(expected) != std::string::npos);
  };
  CHECK(load_error(signed_file(g), "edit.safetensors") == "(no error)");

  // Structure (the JSON).
  refused(signed_file(g, replace_once(json, "\"weight_bits\":3", "\"weight_bits\":9")),
          "'weight_bits' is 9, expected 2..8");
  refused(signed_file(g, replace_once(json, "\"act_point\":2", "\"act_point\":99")),
          "refers to point 99");
  refused(signed_file(g, replace_once(json, "\"stride\":1", "\"stride\":1,\"extra\":0")),
          "unknown key 'extra'");
  refused(signed_file(g, replace_once(json, "\"kind\":\"conv\"", "\"kind\":\"deconv\"")),
          "'kind' is 'deconv', expected one of conv, linear");
  refused(signed_file(
              g, replace_once(json, "\"shortcut\":\"projection\"", "\"shortcut\":\"identity\"")),
          "identity shortcut with 1 shortcut layers");
  refused(signed_file(g, replace_once(json, "\"in_channels\":4", "\"in_channels\":5")),
          "layer1.0.conv1.weight_levels' is U8 [72], expected U8 [90]");
  refused(signed_file(g, json.substr(0, json.size() - 1)), "malformed JSON");

  // Numbers (the tensors), checked against the geometry and the grids.
  std::vector<SafetensorsRawTensor> t = runtime::detail::graph_tensors(g);
  for (SafetensorsRawTensor& r : t)
    if (r.name == "layer1.0.conv1.weight_scale") r.shape = {2, 2};
  refused(runtime::detail::signed_file_bytes(json, t),
          "layer1.0.conv1.weight_scale' is F32 [2, 2], expected F32 [4]");
  for (SafetensorsRawTensor& r : t)
    if (r.name == "layer1.0.conv1.weight_scale") r.shape = {3}, r.bytes.resize(12);
  refused(runtime::detail::signed_file_bytes(json, t),
          "layer1.0.conv1.weight_scale' is F32 [3], expected F32 [4]");
  runtime::Graph e = g;
  e.blocks[1].layers[0].weight_levels[0] |= 0x0F;  // level 15 in a 3-bit layer
  refused(signed_file(e), "weight level 0 is 15 (expected 0..7 for 3 bits)");
  e = g;
  e.blocks[1].layers[0].weight_scale[1] = -1.0f;
  refused(signed_file(e), "weight scale 1 is -1");
  e = g;
  e.blocks[1].layers[0].weight_scale[1] = NAN;
  refused(signed_file(e), "weight scale 1 is nan");
  e = g;
  e.points[2].scale = 0.0f;
  refused(signed_file(e), "point 2 has scale 0");
  e = g;
  e.points[2].zero_point = 16;  // 4-bit point
  refused(signed_file(e), "point 2 has zero point 16 off its 4-bit grid 0..15");
  CHECK(load_error(signed_file(e), "edit.safetensors", {.integer_only = false}) == "(no error)");
  e = g;
  e.points[2].zero_point = 1 << 21;
  refused(signed_file(e), "point 2 has zero point 2097152", {.integer_only = false});
  e = g;
  e.blocks[1].layers[0].weight_zero_point[0] = -5;  // off the grid: the kernels handle it
  CHECK(load_error(signed_file(e), "edit.safetensors") == "(no error)");
  e = g;
  e.blocks[1].layers[0].bias.clear();  // the JSON says no bias; the tensor is then unexpected
  refused(runtime::detail::signed_file_bytes(json, runtime::detail::graph_tensors(e)),
          "tensor 'layer1.0.conv1.bias' is missing");
  refused(
      runtime::detail::signed_file_bytes(runtime::graph_json(e), runtime::detail::graph_tensors(g)),
      "unexpected tensor 'layer1.0.conv1.bias'");
  e = g;
  e.blocks[2].shortcut_layers[0].stride = 1;  // the projection no longer matches the main path
  // (no input size recorded for this test architecture: shapes are checked at
  // 224 x 224)
  refused(signed_file(e),
          "adds a projection shortcut of shape [8, 224, 224] to a main path of "
          "shape [8, 112, 112]");
  e = g;
  e.points[static_cast<size_t>(e.input_point)].enabled = false;
  refused(signed_file(e), "float input");
}
