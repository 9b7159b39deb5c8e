#pragma once
// The BRECQ paper's mixed-precision sensitivity: for every block, the reconstruction loss of the
// block's output for every assignment of bit-widths (by default {2, 4, 8}) to the layers inside
// it, B^n entries for n layers, so that interactions inside a block are measured rather than
// assumed additive; the stem and the classifier, outside blocks, are measured alone.
//
// How an entry is measured: weights rounded to nearest after the L2.4 range search (the
// initialisation BRECQ starts from), activations in FP, the block fed the FP model's input, and
// the loss the weight pass minimises (channel sum of squared error, mean over images and
// positions) against the FP block's output, over the first `images` calibration images. The
// table is cached to a JSON file after every block, keyed by everything that changes it, so an
// interrupted measurement resumes.
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "brecq/io/safetensors_core.hpp"
#include "brecq/quant/brecq.hpp"
#include "brecq/quant/granularity.hpp"
#include "brecq/quant/progress.hpp"
#include "brecq/quant/qmodel.hpp"
#include "brecq/runtime/load.hpp"

namespace brecq::mixed {

struct SensitivityOptions {
  std::vector<int> bits{2, 4, 8};  ///< candidate weight bit-widths
  int64_t images = 256;            ///< calibration images measured on
  int64_t batch = 32;
  quant::ProgressSink progress = quant::terminal_progress();
};

/// One group (a block, or a layer outside blocks) and its measured sensitivity.
struct GroupSensitivity {
  std::string name;
  std::vector<std::string> layers{};  ///< forward order, shortcut layers last
  std::vector<int64_t> params{};      ///< weights of each layer
  std::vector<int64_t> macs{};        ///< multiply-accumulates of each layer per image
  /// bits.size()^layers.size() entries; entry o gives layer k option_bits(bits, o, k) bits.
  std::vector<double> loss{};
};

struct SensitivityTable {
  std::string key;
  std::vector<int> bits{};
  std::vector<GroupSensitivity> groups{};
};

/// The bit-width of layer k in option o.
inline int option_bits(const std::vector<int>& bits, int64_t o, size_t k) {
  for (size_t i = 0; i < k; ++i) o /= static_cast<int64_t>(bits.size());
  return bits[static_cast<size_t>(o % static_cast<int64_t>(bits.size()))];
}

/// The option giving every layer of a group of n layers `b` bits, or -1 if b is no candidate.
inline int64_t uniform_option(const std::vector<int>& bits, size_t n, int b) {
  const auto it = std::find(bits.begin(), bits.end(), b);
  if (it == bits.end()) return -1;
  int64_t o = 0;
  for (size_t k = 0; k < n; ++k) o = o * static_cast<int64_t>(bits.size()) + (it - bits.begin());
  return o;
}

namespace detail {

inline constexpr const char* kSensitivityFormat = "brecq-sensitivity-1";

/// The groups of a model: the stem (block 0) alone, then the reconstruction blocks (the
/// classifier is its own block there).
inline std::vector<quant::Unit> sensitivity_groups(const nn::Model& m) {
  std::vector<quant::Unit> out{quant::Unit::blocks(m, m.blocks.front().name, 0, 1)};
  for (quant::Unit& u : quant::BlockGranularity::units(m)) out.push_back(std::move(u));
  return out;
}

inline std::string sensitivity_key(const nn::Model& folded, const Tensor& images,
                                   const SensitivityOptions& o) {
  uint64_t fp = quant::detail::hash_bytes(folded.arch.data(), folded.arch.size());
  for (const nn::Layer* l : folded.layers()) {
    fp = quant::detail::hash_bytes(l->name.data(), l->name.size(), fp);
    fp = quant::detail::hash_tensor(l->weight, quant::detail::hash_tensor(l->bias, fp));
  }
  std::ostringstream k;
  k << std::hex << "model=" << folded.arch << " fp=" << fp
    << " calib=" << quant::detail::hash_tensor(images, 14695981039346656037ull) << std::dec
    << " n=" << images.dim(0) << " bits=";
  for (size_t i = 0; i < o.bits.size(); ++i) k << (i ? "," : "") << o.bits[i];
  k << " batch=" << o.batch << " threads=" << num_threads();
  return k.str();
}

inline std::string to_json(const SensitivityTable& t) {
  runtime::detail::JsonWriter w;
  w.begin_object().field("format", kSensitivityFormat).field("key", t.key);
  w.key("bits").begin_array();
  for (int b : t.bits) w.value(b);
  w.end_array().key("groups").begin_array();
  for (const GroupSensitivity& g : t.groups) {
    w.begin_object().field("name", g.name).key("layers").begin_array();
    for (const std::string& l : g.layers) w.value(l);
    w.end_array().key("params").begin_array();
    for (int64_t p : g.params) w.value(p);
    w.end_array().key("macs").begin_array();
    for (int64_t m : g.macs) w.value(m);
    w.end_array().key("loss").begin_array();
    for (double v : g.loss) w.raw(runtime::detail::json_double(v));
    w.end_array().end_object();
  }
  w.end_array().end_object();
  return w.str();
}

inline void write_text_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    check(static_cast<bool>(f), "cannot write ", tmp);
    f << text << '\n';
    check(static_cast<bool>(f.flush()), "cannot write ", tmp);
  }
  std::filesystem::rename(tmp, path);  // an interrupt never leaves a half-written file
}

inline std::string read_text(const std::string& path, const char* what) {
  std::ifstream f(path, std::ios::binary);
  check(static_cast<bool>(f), what, " ", path, ": cannot open");
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

/// A cached table (groups measured so far), validated field by field.
inline SensitivityTable read_sensitivity(const std::string& path) {
  using runtime::detail::JsonObject;
  const std::string text = read_text(path, "sensitivity cache");
  const auto doc =
      brecq::detail::io::JsonParser(text, "sensitivity cache " + path).parse_document();
  JsonObject o(doc, "the document", path);
  const std::string format = o.string("format");
  check(format == kSensitivityFormat, "sensitivity cache ", path, ": format '", format,
        "', expected '", kSensitivityFormat, "'");
  SensitivityTable t;
  t.key = o.string("key");
  for (const auto& b : o.array("bits").items) {
    check(b.kind == brecq::detail::io::Json::Kind::number, "sensitivity cache ", path,
          ": bits must be numbers");
    t.bits.push_back(std::stoi(b.text));
  }
  for (const auto& gj : o.array("groups").items) {
    JsonObject g(gj, "a group", path);
    GroupSensitivity s;
    s.name = g.string("name");
    for (const auto& l : g.array("layers").items) s.layers.push_back(l.text);
    for (const auto& p : g.array("params").items) s.params.push_back(std::stoll(p.text));
    for (const auto& m : g.array("macs").items) s.macs.push_back(std::stoll(m.text));
    for (const auto& v : g.array("loss").items) s.loss.push_back(std::stod(v.text));
    int64_t expect = 1;
    for (size_t k = 0; k < s.layers.size(); ++k) expect *= static_cast<int64_t>(t.bits.size());
    check(s.params.size() == s.layers.size() && s.macs.size() == s.layers.size() &&
              static_cast<int64_t>(s.loss.size()) == expect,
          "sensitivity cache ", path, ": group ", s.name, " has ", s.layers.size(), " layers, ",
          s.params.size(), " sizes, ", s.macs.size(), " MAC counts and ", s.loss.size(),
          " entries (expected ", expect, ")");
    g.done();
    t.groups.push_back(std::move(s));
  }
  o.done();
  return t;
}

}  // namespace detail

/// Measures (or, from `cache_path` when its key matches, resumes) the sensitivity table of the
/// FP model `fp` on calibration images `calib`. `cache_path` "" keeps nothing on disk.
inline SensitivityTable measure_sensitivity(const nn::Model& fp, const Tensor& calib,
                                            const SensitivityOptions& o,
                                            const std::string& cache_path = "") {
  check(!o.bits.empty(), "sensitivity: no candidate bit-widths");
  for (int b : o.bits) check(b >= 2 && b <= 8, "sensitivity: bit-widths 2..8 expected, got ", b);
  check(o.images >= 1 && o.batch >= 1, "sensitivity: images and batch >= 1 expected, got ",
        o.images, " and ", o.batch);
  check(calib.ndim() == 4 && calib.dim(0) >= 1,
        "sensitivity: calibration images expected [N, C, H, W], got ", calib.shape());
  // One quantized copy per bit-width: every layer rounded to nearest after the range search.
  std::vector<quant::QuantModel> at_bits;
  for (int b : o.bits)
    at_bits.emplace_back(fp, quant::QuantSettings{.w_bits = b, .first_last_bits = b});
  const nn::Model& m = at_bits.front().model;  // BN folded
  const Tensor images = calib.narrow(0, 0, std::min<int64_t>(o.images, calib.dim(0))).contiguous();
  SensitivityTable t{detail::sensitivity_key(m, images, o), o.bits, {}};
  if (!cache_path.empty() && std::filesystem::exists(cache_path)) {
    SensitivityTable cached = detail::read_sensitivity(cache_path);
    check(cached.key == t.key, "sensitivity cache ", cache_path,
          " was measured with other inputs (it has ",
          quant::detail::key_difference(cached.key, t.key), "; this run has ",
          quant::detail::key_difference(t.key, cached.key),
          "); delete it or give another cache path");
    t.groups = std::move(cached.groups);
  }
  const std::vector<quant::Unit> groups = detail::sensitivity_groups(m);
  for (const quant::Unit& u : groups)
    check(u.layers.size() <= 6, "sensitivity: block ", u.name, " has ", u.layers.size(),
          " layers; at most 6 (", o.bits.size(), "^6 entries) are measured");
  int64_t total = 0;
  for (size_t g = t.groups.size(); g < groups.size(); ++g) {
    int64_t n = 1;
    for (size_t k = 0; k < groups[g].layers.size(); ++k) n *= static_cast<int64_t>(o.bits.size());
    total += n;
  }
  quant::ProgressBar bar("[sensitivity]", total, o.progress);
  int64_t done = 0;
  NoGrad ng;
  for (size_t g = t.groups.size(); g < groups.size(); ++g) {
    const quant::Unit& u = groups[g];
    GroupSensitivity s{u.name};
    int64_t options = 1;
    for (const nn::Layer* l : u.layers) {
      s.layers.push_back(l->name);
      s.params.push_back(l->weight.numel());
      s.macs.push_back(0);
      options *= static_cast<int64_t>(o.bits.size());
    }
    s.loss.assign(static_cast<size_t>(options), 0.0);
    for (int64_t at = 0; at < images.dim(0); at += o.batch) {
      const Tensor x = images.narrow(0, at, std::min(o.batch, images.dim(0) - at));
      nn::ForwardHooks record;
      if (at == 0)
        record.layer_output = [&](const nn::Layer& l, const Tensor&, const Tensor& y) {
          for (size_t k = 0; k < u.layers.size(); ++k)
            if (u.layers[k]->id == l.id)
              s.macs[k] = y.numel() / y.dim(0) * (l.weight.numel() / l.weight.dim(0));
          return y;
        };
      const auto [in, target] = u.io(m, x, record);
      for (int64_t opt = 0; opt < options; ++opt) {
        nn::ForwardHooks h;
        h.weight = [&](const nn::Layer& l) {
          for (size_t k = 0; k < u.layers.size(); ++k)
            if (u.layers[k]->id == l.id) {
              const int b = option_bits(o.bits, opt, k);
              const size_t bi =
                  static_cast<size_t>(std::find(o.bits.begin(), o.bits.end(), b) - o.bits.begin());
              return at_bits[bi].quantized_weight(l);
            }
          return l.weight;
        };
        const Tensor out = u.forward(m, in, h);
        s.loss[static_cast<size_t>(opt)] +=
            quant::reconstruction_loss(out, target, Tensor(), 2.0f).item() *
            static_cast<double>(x.dim(0));
      }
    }
    for (double& v : s.loss) v /= static_cast<double>(images.dim(0));
    done += options;
    bar.update(done, u.name);
    t.groups.push_back(std::move(s));
    if (!cache_path.empty()) detail::write_text_atomic(cache_path, detail::to_json(t));
  }
  bar.finish();
  return t;
}

}  // namespace brecq::mixed
