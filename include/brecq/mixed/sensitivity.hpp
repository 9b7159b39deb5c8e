#pragma once
// The BRECQ paper's mixed-precision sensitivity: for every block, the reconstruction loss of the
// block's output for every assignment of bit-widths (by default {2, 4, 8}) to the layers inside
// it, B^n entries for n layers, so that interactions inside a block are measured rather than
// assumed additive; the stem and the classifier, outside blocks, are measured alone.
//
// How an entry is measured: the block fed the FP model's input, activations in FP, and the loss
// the weight pass minimises (channel sum of squared error, mean over images and positions)
// against the FP block's output, over the first `images` calibration images, with the block's
// weights either rounded to nearest after the L2.4 range search (the initialisation BRECQ starts
// from; fast) or after a short AdaRound reconstruction of the block alone (closer to what BRECQ
// will reach: round-to-nearest at 2 bits loses far more than AdaRound leaves). The loss is the
// plain squared error or, with the fisher loss, the squared error weighted by the squared
// gradient of the task loss at the block output and summed per image: an estimate of the loss
// change that can be added across blocks of different widths and depths. The table is
// cached to a JSON file after every block, keyed by everything that changes it, so an
// interrupted measurement resumes.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "brecq/io/safetensors_core.hpp"
#include "brecq/quant/brecq.hpp"
#include "brecq/quant/granularity.hpp"
#include "brecq/quant/progress.hpp"
#include "brecq/quant/qmodel.hpp"
#include "brecq/quant/reconstructor.hpp"
#include "brecq/runtime/load.hpp"

namespace brecq::mixed {

/// How the weights of an entry are rounded: to nearest, or by a short AdaRound reconstruction.
enum class SensitivityMeasure { nearest, reconstruction };

inline SensitivityMeasure parse_sensitivity_measure(const std::string& s) {
  if (s == "nearest") return SensitivityMeasure::nearest;
  if (s == "reconstruction") return SensitivityMeasure::reconstruction;
  fail("--sensitivity: expected nearest or reconstruction, got '", s, "'");
}

inline const char* measure_name(SensitivityMeasure m) {
  return m == SensitivityMeasure::nearest ? "nearest" : "reconstruction";
}

struct SensitivityOptions {
  std::vector<int> bits{2, 4, 8};  ///< candidate weight bit-widths
  int64_t images = 256;            ///< calibration images measured on
  int64_t batch = 32;
  SensitivityMeasure measure = SensitivityMeasure::nearest;
  /// mse: the block output's squared error; fisher: weighted by the squared gradient of the
  /// task loss at the output, summed per image, an estimate of the loss change comparable
  /// across blocks (the paper's diagonal-Fisher form)
  quant::ReconLoss loss = quant::ReconLoss::mse;
  /// reconstruction: AdaRound iterations per entry (BRECQ's schedule and rates, shortened)
  int64_t recon_iters = 300;
  uint64_t seed = 1029;  ///< reconstruction: batch sampling
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
  k << " batch=" << o.batch << " measure=" << measure_name(o.measure)
    << " loss=" << (o.loss == quant::ReconLoss::fisher ? "fisher" : "mse");
  if (o.measure == SensitivityMeasure::reconstruction)
    k << " iters=" << o.recon_iters << " seed=" << o.seed;
  k << " threads=" << num_threads();
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

/// Writes text and a newline through write_file_bytes (a temporary file renamed over `path`).
inline void write_text_atomic(const std::string& path, const std::string& text) {
  std::vector<uint8_t> bytes(text.begin(), text.end());
  bytes.push_back('\n');
  write_file_bytes(path, bytes);
}

inline std::string read_text(const std::string& path, const char* what) {
  std::ifstream f(path, std::ios::binary);
  check(static_cast<bool>(f), what, " ", path, ": cannot open");
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

/// A cached table (groups measured so far) from the text of the cache file `path`, validated
/// field by field.
inline SensitivityTable parse_sensitivity(const std::string& text, const std::string& path) {
  using runtime::detail::JsonObject;
  const auto doc =
      brecq::detail::io::JsonParser(text, "sensitivity cache " + path).parse_document();
  JsonObject o(doc, "the document", path);
  const std::string format = o.string("format");
  check(format == kSensitivityFormat, "sensitivity cache ", path, ": format '", format,
        "', expected '", kSensitivityFormat, "'");
  using brecq::detail::io::Json;
  // Array entries: validated here (std::stoi and friends would throw without naming the file).
  auto entry = [&](const Json& v, const std::string& what, const auto&... expected) {
    const std::string got = v.kind == Json::Kind::number || v.kind == Json::Kind::string
                                ? "'" + v.text + "'"
                                : std::string(brecq::detail::io::json_kind_name(v.kind));
    fail("sensitivity cache ", path, ": ", what, " should be ", expected..., ", got ", got);
  };
  auto integer = [&](const Json& v, const std::string& what, int64_t lo, int64_t hi) {
    int64_t x = 0;
    const auto r = std::from_chars(v.text.data(), v.text.data() + v.text.size(), x);
    if (v.kind != Json::Kind::number || v.text.find_first_of(".eE") != std::string::npos ||
        r.ec != std::errc() || r.ptr != v.text.data() + v.text.size() || x < lo || x > hi)
      entry(v, what, "an integer in [", lo, ", ", hi, "]");
    return x;
  };
  SensitivityTable t;
  t.key = o.string("key");
  for (const auto& b : o.array("bits").items)
    t.bits.push_back(static_cast<int>(integer(b, "a bits entry", 2, 8)));
  for (const auto& gj : o.array("groups").items) {
    JsonObject g(gj, "a group", path);
    GroupSensitivity s;
    s.name = g.string("name");
    const std::string group = "group " + s.name;
    for (const auto& l : g.array("layers").items) {
      if (l.kind != Json::Kind::string) entry(l, group + " layer name", "a string");
      s.layers.push_back(l.text);
    }
    for (const auto& p : g.array("params").items)
      s.params.push_back(integer(p, group + " size", 0, std::numeric_limits<int64_t>::max()));
    for (const auto& m : g.array("macs").items)
      s.macs.push_back(integer(m, group + " MAC count", 0, std::numeric_limits<int64_t>::max()));
    for (const auto& v : g.array("loss").items) {
      double x = 0;
      const auto r = std::from_chars(v.text.data(), v.text.data() + v.text.size(), x);
      if (v.kind != Json::Kind::number || r.ec != std::errc() ||
          r.ptr != v.text.data() + v.text.size() || !std::isfinite(x))
        entry(v, group + " loss", "a finite number");
      s.loss.push_back(x);
    }
    // bits^layers entries, saturated above the entries there are (so it cannot overflow)
    int64_t expect = 1;
    const auto cap = static_cast<int64_t>(s.loss.size()) + 1;
    for (size_t k = 0; k < s.layers.size(); ++k)
      expect = std::min(expect * static_cast<int64_t>(t.bits.size()), cap);
    check(s.params.size() == s.layers.size() && s.macs.size() == s.layers.size() &&
              static_cast<int64_t>(s.loss.size()) == expect,
          "sensitivity cache ", path, ": group ", s.name, " has ", s.layers.size(), " layers, ",
          s.params.size(), " sizes, ", s.macs.size(), " MAC counts and ", s.loss.size(),
          " entries (expected ", t.bits.size(), "^", s.layers.size(), ")");
    g.done();
    t.groups.push_back(std::move(s));
  }
  o.done();
  return t;
}

inline SensitivityTable read_sensitivity(const std::string& path) {
  return parse_sensitivity(read_text(path, "sensitivity cache"), path);
}

/// Multiply-accumulates per image of each layer of unit u (one image run through the model).
inline std::vector<int64_t> layer_macs(const nn::Model& m, const quant::Unit& u,
                                       const Tensor& image) {
  NoGrad ng;
  std::vector<int64_t> macs(u.layers.size(), 0);
  nn::ForwardHooks record;
  record.layer_output = [&](const nn::Layer& l, const Tensor&, const Tensor& y) {
    for (size_t k = 0; k < u.layers.size(); ++k)
      if (u.layers[k]->id == l.id)
        macs[k] = y.numel() / y.dim(0) * (l.weight.numel() / l.weight.dim(0));
    return y;
  };
  u.io(m, image, record);
  return macs;
}

/// The position of layer l in unit u.
inline size_t layer_index(const quant::Unit& u, const nn::Layer& l) {
  for (size_t k = 0; k < u.layers.size(); ++k)
    if (u.layers[k]->id == l.id) return k;
  fail("sensitivity: layer ", l.name, " is not in unit ", u.name);
}

/// The position of b among the candidate bit-widths.
inline size_t bit_index(const std::vector<int>& bits, int b) {
  return static_cast<size_t>(std::find(bits.begin(), bits.end(), b) - bits.begin());
}

/// |dl/dz| at unit u's output z for every image, l the cross-entropy of the FP model against
/// its own prediction (the data is unlabelled), per image: sum g^2 dz^2 over an image's
/// elements then estimates the task-loss change an output error dz causes (Gauss-Newton with the
/// diagonal Fisher, as the BRECQ paper measures sensitivity).
inline Tensor output_gradients(const nn::Model& m, const quant::Unit& u, const Tensor& images,
                               int64_t batch) {
  std::vector<Tensor> grads;
  for (int64_t at = 0; at < images.dim(0); at += batch) {
    const int64_t n = std::min(batch, images.dim(0) - at);
    Tensor leaf;
    const Tensor logits = u.forward_through(m, images.narrow(0, at, n), {}, [&](const Tensor& z) {
      leaf = z.detach();
      leaf.set_requires_grad(true);
      return leaf;
    });
    const Tensor lc = logits.contiguous();  // [n, classes]
    std::vector<int> labels(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const float* row = lc.data<float>() + i * lc.dim(1);
      labels[static_cast<size_t>(i)] =
          static_cast<int>(std::max_element(row, row + lc.dim(1)) - row);
    }
    backward(cross_entropy(logits, labels) * static_cast<float>(n));  // per-image losses summed
    grads.push_back(abs(leaf.grad()));
  }
  return quant::detail::stack_batches(grads);
}

/// The loss of output `out` against `target`: the squared error's channel sum averaged over
/// images and positions (mse, the weight pass's loss), or with Fisher weights |dl/dz| the
/// weighted squared error summed per image, averaged over images.
inline double output_loss(const Tensor& out, const Tensor& target, const Tensor& grad) {
  const double v = quant::reconstruction_loss(out, target, grad, 2.0f).item();
  if (!grad.defined()) return v;
  return v * static_cast<double>(out.numel() / (out.dim(0) * (out.ndim() > 1 ? out.dim(1) : 1)));
}

/// Unit inputs and FP outputs of every batch of the images (and the output gradients, with
/// the fisher loss), computed once per group for all its options.
struct UnitData {
  std::vector<Tensor> inputs{}, targets{}, grads{};
  int64_t images = 0;
};

inline UnitData unit_data(const nn::Model& m, const quant::Unit& u, const Tensor& images,
                          int64_t batch, bool fisher) {
  UnitData d;
  d.images = images.dim(0);
  const Tensor g = fisher ? output_gradients(m, u, images, batch) : Tensor();
  NoGrad ng;
  for (int64_t at = 0; at < images.dim(0); at += batch) {
    const int64_t n = std::min(batch, images.dim(0) - at);
    auto [in, target] = u.io(m, images.narrow(0, at, n), {});
    d.inputs.push_back(in);
    d.targets.push_back(target);
    d.grads.push_back(fisher ? g.narrow(0, at, n) : Tensor());
  }
  return d;
}

/// The loss of unit u, averaged over the images, with its layers' weights from `weight`.
template <class WeightOf>
inline double unit_loss(const nn::Model& m, const quant::Unit& u, const UnitData& d,
                        WeightOf&& weight) {
  NoGrad ng;
  nn::ForwardHooks h;
  h.weight = [&](const nn::Layer& l) {
    for (const nn::Layer* k : u.layers)
      if (k->id == l.id) return weight(l);
    return l.weight;
  };
  double sum = 0;
  for (size_t b = 0; b < d.inputs.size(); ++b)
    sum += output_loss(u.forward(m, d.inputs[b], h), d.targets[b], d.grads[b]) *
           static_cast<double>(d.inputs[b].dim(0));
  return sum / static_cast<double>(d.images);
}

/// The loss of group `group` of the folded model after a short AdaRound reconstruction of its
/// layers alone (the MSE weight pass) at the bits of `option`, the rest of the model in FP.
inline double reconstructed_loss(const nn::Model& folded, size_t group, const Tensor& images,
                                 const SensitivityOptions& o, int64_t option, const UnitData& d) {
  quant::QuantModel qm(folded, {.w_bits = o.bits.front(), .fold_batchnorm = false},
                       /*init_weight_ranges=*/false);
  const quant::Unit u = sensitivity_groups(qm.model)[group];
  for (size_t k = 0; k < u.layers.size(); ++k) {
    qm.weight_q[static_cast<size_t>(u.layers[k]->id)].config.bits = option_bits(o.bits, option, k);
    qm.init_weight_range(*u.layers[k]);
  }
  quant::Reconstructor<quant::BlockGranularity> r(qm, images,
                                                  {.batch = o.batch,
                                                   .iters_w = o.recon_iters,
                                                   .iters_a = 0,
                                                   .seed = o.seed,
                                                   .progress = nullptr});
  r.learn_rounding(u, group, quant::UnitInput::fp);
  return unit_loss(qm.model, u, d, [&](const nn::Layer& l) { return qm.quantized_weight(l); });
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
  for (size_t g = t.groups.size(); g < groups.size(); ++g) {
    const quant::Unit& u = groups[g];
    GroupSensitivity s{u.name};
    int64_t options = 1;
    for (const nn::Layer* l : u.layers) {
      s.layers.push_back(l->name);
      s.params.push_back(l->weight.numel());
      options *= static_cast<int64_t>(o.bits.size());
    }
    s.macs = detail::layer_macs(m, u, images.narrow(0, 0, 1));
    s.loss.assign(static_cast<size_t>(options), 0.0);
    const detail::UnitData d =
        detail::unit_data(m, u, images, o.batch, o.loss == quant::ReconLoss::fisher);
    for (int64_t opt = 0; opt < options; ++opt) {
      s.loss[static_cast<size_t>(opt)] =
          o.measure == SensitivityMeasure::nearest
              ? detail::unit_loss(
                    m, u, d,
                    [&](const nn::Layer& l) {
                      const int b = option_bits(o.bits, opt, detail::layer_index(u, l));
                      return at_bits[detail::bit_index(o.bits, b)].quantized_weight(l);
                    })
              : detail::reconstructed_loss(m, g, images, o, opt, d);
      bar.update(++done, u.name);
    }
    t.groups.push_back(std::move(s));
    if (!cache_path.empty()) detail::write_text_atomic(cache_path, detail::to_json(t));
  }
  bar.finish();
  return t;
}

}  // namespace brecq::mixed
