// Writes the seed corpora of the fuzz harnesses (fuzz/corpus/<harness>/): small valid inputs of
// every format, made with the library's own writers. Not a harness (tools/fuzz.sh skips it).
//
//   g++ -std=c++20 -O1 -fopenmp -Iinclude -Itests -isystem /usr/include/stb -DBRECQ_SHARED_DIR=\"\"
//   \
//       fuzz/make_seeds.cpp -o /tmp/make_seeds && /tmp/make_seeds fuzz/corpus
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "brecq/io/idx.hpp"
#include "brecq/mixed/allocation.hpp"
#include "brecq/quant/serialize.hpp"
#include "io/support.hpp"  // stb_image_write
#include "quant/tiny_model.hpp"

using namespace brecq;
namespace fs = std::filesystem;

namespace seeds {

fs::path out_dir;

void write(const std::string& harness, const std::string& name, const std::vector<uint8_t>& b) {
  const fs::path d = out_dir / harness;
  fs::create_directories(d);
  std::ofstream f(d / name, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  std::printf("%s/%s: %zu bytes\n", harness.c_str(), name.c_str(), b.size());
}
void write(const std::string& harness, const std::string& name, const std::string& s) {
  write(harness, name, std::vector<uint8_t>(s.begin(), s.end()));
}

std::vector<uint8_t> le(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

void append_be32(std::vector<uint8_t>& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(v >> s));
}

/// The raw deflate stream of `data` (stb_image_write's zlib stream without header and Adler-32).
std::vector<uint8_t> deflate(const std::vector<uint8_t>& data) {
  int n = 0;
  unsigned char* z = stbi_zlib_compress(const_cast<unsigned char*>(data.data()),
                                        static_cast<int>(data.size()), &n, 8);
  std::vector<uint8_t> out(z + 2, z + n - 4);
  STBIW_FREE(z);
  return out;
}
std::vector<uint8_t> zlib(const std::vector<uint8_t>& data) {
  int n = 0;
  unsigned char* z = stbi_zlib_compress(const_cast<unsigned char*>(data.data()),
                                        static_cast<int>(data.size()), &n, 8);
  std::vector<uint8_t> out(z, z + n);
  STBIW_FREE(z);
  return out;
}

/// A gzip member of `data`; flags adds FEXTRA / FNAME / FCOMMENT / FHCRC fields.
std::vector<uint8_t> gzip(const std::vector<uint8_t>& data, uint8_t flags = 0) {
  std::vector<uint8_t> g{0x1F, 0x8B, 8, flags, 0, 0, 0, 0, 0, 3};
  if (flags & 0x04) g.insert(g.end(), {3, 0, 'a', 'b', 'c'});
  if (flags & 0x08) g.insert(g.end(), {'x', '.', 'i', 'd', 'x', 0});
  if (flags & 0x10) g.insert(g.end(), {'h', 'i', 0});
  if (flags & 0x02) {
    const uint32_t c = crc32(g) & 0xFFFF;
    g.push_back(static_cast<uint8_t>(c));
    g.push_back(static_cast<uint8_t>(c >> 8));
  }
  const std::vector<uint8_t> d = deflate(data);
  g.insert(g.end(), d.begin(), d.end());
  for (uint32_t v : {crc32(data), static_cast<uint32_t>(data.size())})
    for (int s = 0; s < 32; s += 8) g.push_back(static_cast<uint8_t>(v >> s));
  return g;
}

/// A PNG of raw scanlines (filter byte + samples) of the given IHDR fields.
std::vector<uint8_t> png(uint32_t w, uint32_t h, uint8_t depth, uint8_t color,
                         const std::vector<uint8_t>& raw, const std::vector<uint8_t>& plte = {},
                         const std::vector<uint8_t>& trns = {}) {
  std::vector<uint8_t> b{0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  auto chunk = [&](const char* type, const std::vector<uint8_t>& data) {
    append_be32(b, static_cast<uint32_t>(data.size()));
    std::vector<uint8_t> body(type, type + 4);
    body.insert(body.end(), data.begin(), data.end());
    b.insert(b.end(), body.begin(), body.end());
    append_be32(b, crc32(body));
  };
  std::vector<uint8_t> ihdr;
  append_be32(ihdr, w);
  append_be32(ihdr, h);
  ihdr.insert(ihdr.end(), {depth, color, 0, 0, 0});
  chunk("IHDR", ihdr);
  if (!plte.empty()) chunk("PLTE", plte);
  if (!trns.empty()) chunk("tRNS", trns);
  chunk("IDAT", zlib(raw));
  chunk("IEND", {});
  return b;
}

std::vector<uint8_t> stb_png(int w, int h, int c) {
  std::vector<uint8_t> px(static_cast<size_t>(w * h * c));
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>(i * 37 + 11);
  int n = 0;
  unsigned char* p = stbi_write_png_to_mem(px.data(), w * c, w, h, c, &n);
  std::vector<uint8_t> out(p, p + n);
  STBIW_FREE(p);
  return out;
}

std::vector<uint8_t> stb_jpg(int w, int h, int c, int quality) {
  std::vector<uint8_t> px(static_cast<size_t>(w * h * c));
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>(i * 13 + (i / 7) * 5);
  std::vector<uint8_t> out;
  stbi_write_jpg_to_func(
      [](void* ctx, void* data, int size) {
        auto* o = static_cast<std::vector<uint8_t>*>(ctx);
        o->insert(o->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
      },
      &out, w, h, c, px.data(), quality);
  return out;
}

std::vector<uint8_t> idx(const std::vector<uint32_t>& dims) {
  std::vector<uint8_t> b{0, 0, 8, static_cast<uint8_t>(dims.size())};
  size_t n = 1;
  for (uint32_t d : dims) append_be32(b, d), n *= d;
  for (size_t i = 0; i < n; ++i) b.push_back(static_cast<uint8_t>(dims.size() == 1 ? i % 10 : i));
  return b;
}

/// idx harness input: 4-byte little-endian length of the images file, images, labels.
std::vector<uint8_t> idx_pair(const std::vector<uint8_t>& images,
                              const std::vector<uint8_t>& labels) {
  std::vector<uint8_t> b;
  for (int s = 0; s < 32; s += 8) b.push_back(static_cast<uint8_t>(images.size() >> s));
  b.insert(b.end(), images.begin(), images.end());
  b.insert(b.end(), labels.begin(), labels.end());
  return b;
}

/// The tiny residual CNN of the tests, quantized with calibrated activation points.
quant::QuantModel tiny_quantized(int w_bits, int a_bits) {
  quant::QuantModel qm(test::tiny_resnet(2, 3),
                       {.w_bits = w_bits, .a_bits = a_bits, .input_bits = a_bits ? 8 : 0});
  Rng rng(3);
  qm.init_activations(Tensor::randn(Shape{4, 3, 8, 8}, rng));
  return qm;
}

/// A version-1 file (per-layer tensors, metadata naming a registry architecture).
std::vector<uint8_t> v1_file() {
  const nn::ModelOptions o{.num_classes = 2, .in_channels = 1, .base_width = 2};
  quant::QuantModel qm(nn::make_model("resnet18_cifar", o), {.w_bits = 2, .a_bits = 4});
  Rng rng(5);
  qm.init_activations(Tensor::randn(Shape{2, 1, 8, 8}, rng));
  const std::map<std::string, std::string> m{{"format", "brecq-quantized-1"},
                                             {"arch", "resnet18_cifar"},
                                             {"num_classes", "2"},
                                             {"in_channels", "1"},
                                             {"width_mult_x1000", "1000"},
                                             {"small_input_stem", "1"},
                                             {"base_width", "2"},
                                             {"w_bits", "2"},
                                             {"a_bits", "4"},
                                             {"first_last_bits", "8"},
                                             {"input_bits", "8"}};
  const std::string tmp = (fs::temp_directory_path() / "brecq_seed_v1.safetensors").string();
  save_safetensors(tmp, quant::quantized_tensors(qm), {.metadata = m});
  std::vector<uint8_t> b = read_file_bytes(tmp);
  fs::remove(tmp);
  return b;
}

}  // namespace seeds

int main(int argc, char** argv) {
  using namespace seeds;
  out_dir = argc > 1 ? argv[1] : "fuzz/corpus";
  set_num_threads(1);

  // ---- safetensors ----
  write("safetensors", "f32_meta.safetensors",
        serialize_safetensors_raw({{"w", "F32", {2, 3}, le({1, 2, 3, 4, 5, 6})}},
                                  {{"note", "seed"}}));
  std::vector<SafetensorsRawTensor> every;
  for (const auto& d : detail::io::st_dtypes)
    every.push_back({"t_" + std::string(d.name),
                     std::string(d.name),
                     {2},
                     std::vector<uint8_t>(2 * d.size, 0x3C)});
  write("safetensors", "every_dtype.safetensors", serialize_safetensors_raw(every));
  write("safetensors", "scalar_empty.safetensors",
        serialize_safetensors_raw({{"s", "F32", {}, le({7})}, {"e", "F16", {0, 3}, {}}}));

  // ---- quantized models (version 2 and 1) and the integer runtime ----
  const std::vector<uint8_t> w3a4 =
      runtime::graph_file_bytes(quant::to_graph(tiny_quantized(3, 4)));
  const std::vector<uint8_t> w2a8 =
      runtime::graph_file_bytes(quant::to_graph(tiny_quantized(2, 8)));
  const std::vector<uint8_t> w4fp =
      runtime::graph_file_bytes(quant::to_graph(tiny_quantized(4, 0)));
  write("quantized", "v2_w3a4.safetensors", w3a4);
  write("quantized", "v2_w4_fp_acts.safetensors", w4fp);
  write("quantized", "v1_resnet18_cifar.safetensors", v1_file());
  write("runtime_load", "v2_w3a4.safetensors", w3a4);
  write("runtime_load", "v2_w2a8.safetensors", w2a8);
  write("safetensors", "v2_w3a4.safetensors", w3a4);

  // ---- images ----
  write("image", "rgb.png", stb_png(7, 5, 3));
  write("image", "gray.png", stb_png(5, 3, 1));
  write("image", "rgba.png", stb_png(4, 4, 4));
  write("image", "gray_alpha.png", stb_png(3, 2, 2));
  std::vector<uint8_t> raw16;
  for (int y = 0; y < 3; ++y) {
    raw16.push_back(static_cast<uint8_t>(y % 5));  // filter type
    for (int x = 0; x < 4 * 2; ++x) raw16.push_back(static_cast<uint8_t>(x * 31 + y));
  }
  write("image", "gray16.png", png(4, 3, 16, 0, raw16));
  std::vector<uint8_t> rawp;
  for (int y = 0; y < 4; ++y) rawp.insert(rawp.end(), {0, 0x1B, 0xE4});  // 2-bit indices
  write("image", "palette2.png",
        png(6, 4, 2, 3, rawp, {255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9}, {128, 255}));
  write("image", "rgb_q90.jpg", stb_jpg(16, 16, 3, 90));
  write("image", "rgb_q30_odd.jpg", stb_jpg(17, 9, 3, 30));
  write("image", "gray.jpg", stb_jpg(9, 7, 1, 75));

  // ---- IDX / gzip ----
  const std::vector<uint8_t> img = idx({3, 4, 4}), lab = idx({3});
  write("idx", "plain.bin", idx_pair(img, lab));
  write("idx", "gzip.bin", idx_pair(gzip(img), gzip(lab)));
  write("idx", "gzip_fields.bin", idx_pair(gzip(img, 0x1E), gzip(lab, 0x08)));
  write("idx", "empty_sets.bin", idx_pair(idx({0, 28, 28}), idx({0})));

  // ---- bits file and sensitivity cache (the writers' own output) ----
  const nn::Model m = nn::make_model("resnet20_cifar");
  std::map<std::string, int> bits;
  int k = 0;
  for (const nn::Layer* l : m.layers()) bits[l->name] = 2 << (k++ % 3);
  const std::string bits_path = (fs::temp_directory_path() / "brecq_seed_bits.json").string();
  mixed::write_bits_file(bits_path, bits,
                         {.model = "resnet20_cifar",
                          .cost = "size",
                          .budget = 1e5,
                          .cost_value = 9.5e4,
                          .sensitivity = 0.25,
                          .size_bits = 9.5e4,
                          .bops = 1.5e9});
  write("bits_file", "resnet20_cifar.json", read_file_bytes(bits_path));
  fs::remove(bits_path);
  write("bits_file", "two_layers.json",
        std::string(R"({"format":"brecq-bits-1","layers":{"conv1":8,"fc":4}})"));
  mixed::SensitivityTable t{.key = "model=tiny calib=0 n=4 bits=2,4", .bits = {2, 4}};
  t.groups.push_back({.name = "stem",
                      .layers = {"conv1"},
                      .params = {432},
                      .macs = {442368},
                      .loss = {0.5, 0.01}});
  t.groups.push_back({.name = "layer1.0",
                      .layers = {"layer1.0.conv1", "layer1.0.conv2"},
                      .params = {2304, 2304},
                      .macs = {2359296, 2359296},
                      .loss = {1.25, 0.5, 0.75, 0.0625}});
  write("sensitivity_cache", "two_groups.json", mixed::detail::to_json(t) + "\n");
  write("sensitivity_cache", "empty.json",
        std::string(R"({"format":"brecq-sensitivity-1","key":"k","bits":[2,4,8],"groups":[]})"));

  // ---- command lines (one argument per line) ----
  write("cli_args", "full.txt",
        std::string("--model\nresnet20_cifar\n--weights\nw.safetensors\n--calib=calib/\n--w-bits\n"
                    "2\n--a-bits=4\n--granularity\nstage\n--lr-a\n1e-4\n--iters-w\n100\n--out\n"
                    "q.safetensors\n--qdrop\n--json"));
  write("cli_args", "minimal.txt", std::string("--model=m\n--weights=w\n--calib=c\n--out=o"));
  write("cli_args", "help.txt", std::string("--model\nm\n--help"));
  return 0;
}
