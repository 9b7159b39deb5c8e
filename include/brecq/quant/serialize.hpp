#pragma once
// Saving and loading quantized models. save_quantized writes format version 2 (runtime/load.hpp:
// the graph, bit-packed integer weight levels, per-channel scales and zero points, biases,
// activation quantizers and the model options), which both `brecq eval --quantized` (the float
// simulation, rebuilt here from the file alone) and the registry-free integer runtime read.
// load_quantized also reads version 1 ("brecq-quantized-1": per-layer tensors, the architecture
// by name, rebuilt through the model registry). Checkpoints for resuming a reconstruction add
// the learned rounding logits (quant/brecq.hpp).
#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "brecq/io/safetensors.hpp"
#include "brecq/io/transforms.hpp"
#include "brecq/nn/models.hpp"
#include "brecq/quant/qmodel.hpp"
#include "brecq/runtime/load.hpp"

namespace brecq::quant {

inline constexpr const char* kQuantizedFormatV1 = "brecq-quantized-1";
inline constexpr const char* kQuantizedFormat = "brecq-quantized-2";

/// How the images a quantized model expects are prepared (stored in the file for the runtime).
struct Preprocessing {
  std::string name;  ///< preset: "cifar", "imagenet", or a dataset name such as "fashion_mnist"
  int64_t resize_shorter = 0;  ///< 0: no resize
  int64_t center_crop = 0;     ///< 0: no crop
  std::vector<float> mean{};   ///< per input channel, of pixel / 255
  std::vector<float> std{};
  int64_t input_height = 0;  ///< image size the network sees, 0 if it depends on the data
  int64_t input_width = 0;
};

/// The io presets "cifar" and "imagenet" (three channels).
inline Preprocessing preprocessing_preset(std::string_view name) {
  check(name == "cifar" || name == "imagenet",
        "preprocessing preset: expected cifar or imagenet, got '", name, "'");
  const ImagePreprocess p =
      name == "cifar" ? ImagePreprocess::cifar() : ImagePreprocess::imagenet();
  Preprocessing out{.name = std::string(name),
                    .resize_shorter = p.resize_shorter,
                    .center_crop = p.center_crop,
                    .mean = {p.mean.begin(), p.mean.end()},
                    .std = {p.std.begin(), p.std.end()},
                    .input_height = p.center_crop,
                    .input_width = p.center_crop};
  return out;
}

/// The registry's preset for m's architecture when m takes three channels; empty otherwise
/// (unknown architecture or other input channels: the file then records no preprocessing).
inline std::optional<Preprocessing> default_preprocessing(const nn::Model& m) {
  if (m.in_channels != 3) return std::nullopt;
  for (const nn::ModelInfo& i : nn::model_registry())
    if (i.name == m.arch) return preprocessing_preset(i.preprocess);
  return std::nullopt;
}

/// What a quantized file records besides the QuantModel.
struct SaveQuantizedParams {
  nn::ModelOptions options{};  ///< those the architecture was built with (width, base width, stem)
  /// Default: default_preprocessing(qm.model).
  std::optional<Preprocessing> preprocessing{};
  std::map<std::string, std::string> metadata{};  ///< informational entries, e.g. "settings"
};

namespace detail {
/// Point 0 is the model input; the others keep the numbering of files written before it existed.
inline std::string act_name(int p) { return p == 0 ? "act.input" : "act." + std::to_string(p - 1); }

inline int64_t meta_int(const SafetensorsFile& f, const std::string& key) {
  auto it = f.metadata().find(key);
  check(it != f.metadata().end(), "quantized model '", f.path(), "': metadata lacks '", key, "'");
  try {
    return std::stoll(it->second);
  } catch (const std::exception&) {
    fail("quantized model '", f.path(), "': metadata '", key, "' should be an integer, got '",
         it->second, "'");
  }
}

// The enums of nn/ and runtime/ list the same values in the same order.
static_assert(static_cast<int>(nn::Activation::relu6) ==
              static_cast<int>(runtime::Activation::relu6));
static_assert(static_cast<int>(nn::ShortcutKind::projection) ==
              static_cast<int>(runtime::ShortcutKind::projection));
static_assert(static_cast<int>(nn::ShortcutKind::option_a) ==
              static_cast<int>(runtime::ShortcutKind::option_a));
static_assert(static_cast<int>(nn::BlockKind::head) == static_cast<int>(runtime::BlockKind::head));
static_assert(static_cast<int>(nn::BlockKind::inverted_residual) ==
              static_cast<int>(runtime::BlockKind::inverted_residual));

/// An integer-valued float as int32; `what` names it in the error.
inline int32_t integer_value(float v, const std::string& what) {
  check(std::isfinite(v) && v == std::nearbyint(v) && std::abs(v) <= runtime::kMaxZeroPoint, what,
        " is ", v, ", expected an integer within ±", runtime::kMaxZeroPoint);
  return static_cast<int32_t>(v);
}

inline std::vector<float> to_vector(const Tensor& t) {
  Tensor c = t.contiguous();
  return {c.data<float>(), c.data<float>() + c.numel()};
}

inline runtime::Layer to_runtime_layer(const QuantModel& qm, const nn::Layer& l) {
  check(!l.bn, "save_quantized: layer ", l.name, " still has a BatchNorm (QuantModel folds them)");
  const UniformQuantizer& q = qm.weight_q[static_cast<size_t>(l.id)];
  check(q.initialized() && q.channels() == l.out_channels(), "save_quantized: layer ", l.name,
        " has no per-channel weight quantizer");
  runtime::Layer r;
  r.name = l.name;
  r.kind = l.kind == nn::LayerKind::conv ? runtime::LayerKind::conv : runtime::LayerKind::linear;
  r.in_channels = l.in_channels();
  r.out_channels = l.out_channels();
  if (l.kind == nn::LayerKind::conv) {
    r.kernel_h = l.weight.dim(2);
    r.kernel_w = l.weight.dim(3);
    r.stride = l.conv.stride;
    r.padding = l.conv.padding;
    r.dilation = l.conv.dilation;
    r.groups = l.conv.groups;
  }
  r.activation = static_cast<runtime::Activation>(l.activation);
  r.act_point = l.act_point;
  r.weight_bits = q.config.bits;
  const Tensor levels = qm.weight_levels(l);
  r.weight_levels = runtime::pack_levels(levels.data<uint8_t>(), levels.numel(), q.config.bits);
  r.weight_scale = to_vector(q.scale);
  for (int64_t o = 0; o < q.channels(); ++o)
    r.weight_zero_point.push_back(
        integer_value(q.zero_point.data<float>()[o],
                      "layer " + l.name + " weight zero point " + std::to_string(o)));
  if (l.bias.defined()) r.bias = to_vector(l.bias);
  return r;
}

/// nn::Layer of graph layer r: weight zero (shape only), bias from r.
inline nn::Layer to_nn_layer(const runtime::Layer& r) {
  nn::Layer l;
  l.name = r.name;
  l.kind = r.kind == runtime::LayerKind::conv ? nn::LayerKind::conv : nn::LayerKind::linear;
  if (l.kind == nn::LayerKind::conv) {
    l.conv = {.stride = r.stride, .padding = r.padding, .dilation = r.dilation, .groups = r.groups};
    l.weight =
        Tensor::zeros(Shape{r.out_channels, r.in_channels / r.groups, r.kernel_h, r.kernel_w});
  } else {
    l.weight = Tensor::zeros(Shape{r.out_channels, r.in_channels});
  }
  if (!r.bias.empty()) l.bias = Tensor::from_data<float>(Shape{r.out_channels}, r.bias.data());
  l.activation = static_cast<nn::Activation>(r.activation);
  return l;
}

/// The levels of graph layer r as a u8 tensor of the weight's shape.
inline Tensor unpacked_levels(const runtime::Layer& r, const Shape& shape) {
  Tensor t = Tensor::empty(shape, DType::u8);
  for (int64_t k = 0; k < r.weight_count(); ++k) t.data<uint8_t>()[k] = r.level(k);
  return t;
}

/// Installs layer r's weight quantizer and levels into qm's layer l (same geometry).
inline void install_weights(QuantModel& qm, const nn::Layer& l, const runtime::Layer& r) {
  UniformQuantizer& q = qm.weight_q[static_cast<size_t>(l.id)];
  q.config.bits = r.weight_bits;
  q.scale = Tensor::from_data<float>(Shape{r.out_channels}, r.weight_scale.data());
  q.zero_point = Tensor::empty(Shape{r.out_channels});
  for (int64_t o = 0; o < r.out_channels; ++o)
    q.zero_point.data<float>()[o] = static_cast<float>(r.weight_zero_point[static_cast<size_t>(o)]);
  qm.set_weight_levels(l, unpacked_levels(r, l.weight.shape()));
}

/// Rounds every conv bias whose input is quantized to its int32 accumulator grid
/// (runtime::bias_steps times weight_scale * input_scale): the bias the integer runtime adds, so
/// that the simulation of the file computes what the runtime computes. Returns the largest change.
inline double snap_conv_biases(runtime::Graph& g) {
  const std::vector<int> in = runtime::layer_input_points(g);
  size_t i = 0;  // index into in: Graph::layers() order
  double change = 0;
  for (runtime::Block& blk : g.blocks)
    for (auto* layers : {&blk.layers, &blk.shortcut_layers})
      for (runtime::Layer& l : *layers) {
        const int p = in[i++];
        if (l.kind != runtime::LayerKind::conv || p < 0) continue;
        const runtime::Point& pt = g.points[static_cast<size_t>(p)];
        if (!pt.enabled) continue;
        for (size_t o = 0; o < l.bias.size(); ++o) {
          const int64_t k = runtime::bias_steps(l.bias[o], l.weight_scale[o], pt.scale);
          check(std::abs(k) < (int64_t{1} << 30), "save_quantized: layer ", l.name, " bias ", o,
                " (", l.bias[o], ") is ", k, " steps of its accumulator, expected fewer than 2^30");
          const float b =
              static_cast<float>(static_cast<double>(k) * static_cast<double>(l.weight_scale[o]) *
                                 static_cast<double>(pt.scale));
          change = std::max(change, std::abs(static_cast<double>(b) - l.bias[o]));
          l.bias[o] = b;
        }
      }
  return change;
}

/// Checks that qm's layers have the geometry of g's (same names in the same order).
inline void check_same_layers(const nn::Model& m, const runtime::Graph& g,
                              const std::string& what) {
  const auto ml = m.layers();
  const auto gl = g.layers();
  check(ml.size() == gl.size(), what, " has ", gl.size(), " layers, the model ", m.arch, " has ",
        ml.size());
  for (size_t i = 0; i < ml.size(); ++i) {
    const runtime::Layer& r = *gl[i];
    const nn::Layer& l = *ml[i];
    const bool conv = l.kind == nn::LayerKind::conv;
    const bool same = l.name == r.name && conv == (r.kind == runtime::LayerKind::conv) &&
                      l.in_channels() == r.in_channels && l.out_channels() == r.out_channels &&
                      (!conv || (l.weight.dim(2) == r.kernel_h && l.weight.dim(3) == r.kernel_w &&
                                 l.conv.stride == r.stride && l.conv.padding == r.padding &&
                                 l.conv.dilation == r.dilation && l.conv.groups == r.groups));
    check(same, what, ": layer ", i, " is ", r.name, " (", runtime::layer_kind_name(r.kind), " ",
          r.in_channels, " -> ", r.out_channels, ", kernel ", r.kernel_h, "x", r.kernel_w,
          ", stride ", r.stride, ", groups ", r.groups, "), the model's is ", l.name, " (",
          l.weight.shape(), ", stride ", l.conv.stride, ", groups ", l.conv.groups, ")");
  }
}

// ---- version 1 --------------------------------------------------------------------------------

/// Every layer's weight quantizer and hard rounding from a version-1 file. take_bits: bit-widths
/// come from the file; otherwise they must equal qm's.
inline void read_weight_rounding_v1(QuantModel& qm, const SafetensorsFile& f, bool take_bits) {
  for (nn::Layer* l : qm.model.layers()) {
    UniformQuantizer& q = qm.weight_q[static_cast<size_t>(l->id)];
    const int bits = f.get(l->name + ".weight_bits").data<int32_t>()[0];
    check(take_bits || bits == q.config.bits, "quantized model '", f.path(), "': layer ", l->name,
          " has ", bits, "-bit weights, this run quantizes it to ", q.config.bits, " bits");
    q.config.bits = bits;
    validate(q.config, "layer " + l->name);
    q.scale = f.to_f32(l->name + ".weight_scale");
    q.zero_point = f.to_f32(l->name + ".weight_zero_point");
    check(q.scale.numel() == l->out_channels() && q.zero_point.numel() == l->out_channels(),
          "quantized model '", f.path(), "': layer ", l->name, " needs ", l->out_channels(),
          " scales, got ", q.scale.numel());
    qm.set_weight_levels(*l, f.get(l->name + ".weight_levels"));
  }
}

inline nn::ModelOptions options_v1(const SafetensorsFile& f) {
  return {.num_classes = meta_int(f, "num_classes"),
          .in_channels = meta_int(f, "in_channels"),
          .width_mult = static_cast<double>(meta_int(f, "width_mult_x1000")) / 1000.0,
          .small_input_stem = meta_int(f, "small_input_stem") != 0,
          .base_width = f.metadata().count("base_width") ? meta_int(f, "base_width") : 64};
}

inline QuantModel load_quantized_v1(const SafetensorsFile& f) {
  auto arch = f.metadata().find("arch");
  check(arch != f.metadata().end(), "quantized model '", f.path(), "': metadata lacks 'arch'");
  nn::Model m = nn::make_model(arch->second, options_v1(f));
  for (nn::Layer* l : m.layers()) {
    l->bn.reset();
    const std::string b = l->name + ".bias";
    if (f.contains(b))
      l->bias = f.to_f32(b);
    else
      l->bias = Tensor();
  }
  QuantSettings s{.w_bits = static_cast<int>(meta_int(f, "w_bits")),
                  .a_bits = static_cast<int>(meta_int(f, "a_bits")),
                  .first_last_bits = static_cast<int>(meta_int(f, "first_last_bits")),
                  // files from before the input quantizer have an FP input
                  .input_bits = f.metadata().count("input_bits")
                                    ? static_cast<int>(meta_int(f, "input_bits"))
                                    : 0};
  QuantModel qm(std::move(m), s, /*init_weight_ranges=*/false);
  read_weight_rounding_v1(qm, f, /*take_bits=*/true);
  for (nn::Layer* l : qm.model.layers()) l->weight = qm.quantized_weight(*l);
  for (size_t p = 0; p < qm.act_q.size(); ++p) {
    const std::string n = act_name(static_cast<int>(p));
    qm.act_enabled[p] = f.contains(n + ".scale");
    if (!qm.act_enabled[p]) continue;
    UniformQuantizer& q = qm.act_q[p];
    q.config.bits = f.get(n + ".bits").data<int32_t>()[0];
    validate(q.config, "activation point " + std::to_string(p));
    q.scale = f.to_f32(n + ".scale");
    q.zero_point = f.to_f32(n + ".zero_point");
  }
  return qm;
}

/// Metadata entries of a file that are neither format keys of version 1 nor of version 2.
inline std::map<std::string, std::string> informational_metadata(const SafetensorsFile& f) {
  static const std::set<std::string> format_keys{
      "format",      "graph",       "checksum",         "arch",
      "num_classes", "in_channels", "width_mult_x1000", "small_input_stem",
      "base_width",  "w_bits",      "a_bits",           "first_last_bits",
      "input_bits"};
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : f.metadata())
    if (!format_keys.count(k)) out[k] = v;
  return out;
}

}  // namespace detail

/// Tensors describing the quantized state in version-1 naming (hard weights as integer levels):
/// what tests compare to check that two quantized models are the same.
inline std::vector<std::pair<std::string, Tensor>> quantized_tensors(const QuantModel& qm) {
  std::vector<std::pair<std::string, Tensor>> t;
  for (const nn::Layer* l : qm.model.layers()) {
    const UniformQuantizer& q = qm.weight_q[static_cast<size_t>(l->id)];
    t.emplace_back(l->name + ".weight_levels", qm.weight_levels(*l));
    t.emplace_back(l->name + ".weight_scale", q.scale);
    t.emplace_back(l->name + ".weight_zero_point", q.zero_point);
    t.emplace_back(l->name + ".weight_bits", Tensor::from_data<int32_t>(Shape{1}, &q.config.bits));
    if (l->bias.defined()) t.emplace_back(l->name + ".bias", l->bias);
  }
  for (size_t p = 0; p < qm.act_q.size(); ++p) {
    const UniformQuantizer& q = qm.act_q[p];
    if (!qm.act_enabled[p] || !q.initialized()) continue;
    t.emplace_back(detail::act_name(static_cast<int>(p)) + ".scale", q.scale);
    t.emplace_back(detail::act_name(static_cast<int>(p)) + ".zero_point", q.zero_point);
    t.emplace_back(detail::act_name(static_cast<int>(p)) + ".bits",
                   Tensor::from_data<int32_t>(Shape{1}, &q.config.bits));
  }
  return t;
}

/// The first difference between the quantized states of a and b (quantized_tensors, compared
/// by value: -0 equals 0), or "" when they are the same.
inline std::string quantized_difference(const QuantModel& a, const QuantModel& b) {
  const auto x = quantized_tensors(a), y = quantized_tensors(b);
  if (x.size() != y.size())
    return brecq::detail::concat(x.size(), " quantized tensors against ", y.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const Tensor &s = x[i].second, &t = y[i].second;
    if (x[i].first != y[i].first) return "tensor " + x[i].first + " against " + y[i].first;
    if (s.shape() != t.shape() || s.dtype() != t.dtype())
      return brecq::detail::concat(x[i].first, ": ", s.shape(), " against ", t.shape());
    for (int64_t k = 0; k < s.numel(); ++k) {
      const bool same = s.dtype() == DType::f32   ? s.data<float>()[k] == t.data<float>()[k]
                        : s.dtype() == DType::i32 ? s.data<int32_t>()[k] == t.data<int32_t>()[k]
                                                  : s.data<uint8_t>()[k] == t.data<uint8_t>()[k];
      if (!same) return brecq::detail::concat(x[i].first, " differs at element ", k);
    }
  }
  return "";
}

/// The integer graph of qm: structure, packed weight levels and every quantizer. Points that are
/// disabled or were never initialised are recorded as disabled.
inline runtime::Graph to_graph(const QuantModel& qm, const SaveQuantizedParams& p = {}) {
  const nn::Model& m = qm.model;
  runtime::Graph g;
  runtime::ModelOptions& o = g.options;
  o.arch = m.arch;
  o.num_classes = m.num_classes;
  o.in_channels = m.in_channels;
  o.width_mult = p.options.width_mult;
  o.base_width = p.options.base_width;
  o.small_input_stem = p.options.small_input_stem;
  const std::optional<Preprocessing> pre =
      p.preprocessing ? p.preprocessing : default_preprocessing(m);
  if (pre) {
    o.preprocess = pre->name;
    o.resize_shorter = pre->resize_shorter;
    o.center_crop = pre->center_crop;
    o.mean = pre->mean;
    o.std = pre->std;
    o.input_height = pre->input_height;
    o.input_width = pre->input_width;
  }
  g.quant = {.w_bits = qm.settings.w_bits,
             .a_bits = qm.settings.a_bits,
             .first_last_bits = qm.settings.first_last_bits,
             .input_bits = qm.settings.input_bits};
  g.input_point = m.input_point;
  for (size_t i = 0; i < qm.act_q.size(); ++i) {
    const UniformQuantizer& q = qm.act_q[i];
    runtime::Point pt{.bits = q.config.bits, .enabled = qm.act_enabled[i] && q.initialized()};
    if (pt.enabled) {
      check(q.channels() == 1, "save_quantized: activation point ", i, " has ", q.channels(),
            " scales, expected a per-tensor quantizer");
      pt.scale = q.scale.data<float>()[0];
      pt.zero_point = detail::integer_value(
          q.zero_point.data<float>()[0], "activation point " + std::to_string(i) + " zero point");
    }
    g.points.push_back(pt);
  }
  for (const nn::Block& b : m.blocks) {
    runtime::Block r;
    r.name = b.name;
    r.kind = static_cast<runtime::BlockKind>(b.kind);
    r.stage = b.stage;
    r.global_pool_before = b.global_pool_before;
    for (const nn::Layer& l : b.layers) r.layers.push_back(detail::to_runtime_layer(qm, l));
    r.shortcut = static_cast<runtime::ShortcutKind>(b.shortcut);
    for (const nn::Layer& l : b.shortcut_layers)
      r.shortcut_layers.push_back(detail::to_runtime_layer(qm, l));
    r.option_a_stride = b.option_a_stride;
    r.option_a_pad = b.option_a_pad;
    r.out_activation = static_cast<runtime::Activation>(b.out_activation);
    if (b.max_pool_after)
      r.max_pool_after =
          runtime::MaxPool{.kernel = b.max_pool_after->kernel,
                           .stride = b.max_pool_after->stride > 0 ? b.max_pool_after->stride
                                                                  : b.max_pool_after->kernel,
                           .padding = b.max_pool_after->padding};
    r.out_point = b.out_point;
    g.blocks.push_back(std::move(r));
  }
  detail::snap_conv_biases(g);
  return g;
}

/// Rounds qm's conv biases to their int32 accumulator grids, as to_graph (and so save_quantized)
/// does: afterwards qm computes what its saved file and the integer runtime compute. Call it
/// when BRECQ is done (the grids depend on the learned activation steps). Returns the largest
/// change of a bias.
inline double snap_biases(QuantModel& qm) {
  const runtime::Graph g = to_graph(qm);
  const auto gl = g.layers();
  const auto ml = qm.model.layers();
  double change = 0;
  for (size_t i = 0; i < ml.size(); ++i) {
    nn::Layer& l = *ml[i];
    if (!l.bias.defined()) continue;
    Tensor b = Tensor::from_data<float>(l.bias.shape(), gl[i]->bias.data());
    for (int64_t o = 0; o < b.numel(); ++o)
      change = std::max(
          change, static_cast<double>(std::abs(b.data<float>()[o] - l.bias.data<float>()[o])));
    l.bias = b;
  }
  return change;
}

/// The fake-quantized model of graph g, built from g alone (no model registry); `what` names g
/// in errors.
inline QuantModel quant_model_from_graph(const runtime::Graph& g, const std::string& what) {
  nn::Model m;
  m.arch = g.options.arch;
  m.num_classes = g.options.num_classes;
  m.in_channels = g.options.in_channels;
  for (const runtime::Block& r : g.blocks) {
    nn::Block b;
    b.name = r.name;
    b.kind = static_cast<nn::BlockKind>(r.kind);
    b.stage = r.stage;
    b.global_pool_before = r.global_pool_before;
    for (const runtime::Layer& l : r.layers) b.layers.push_back(detail::to_nn_layer(l));
    b.shortcut = static_cast<nn::ShortcutKind>(r.shortcut);
    for (const runtime::Layer& l : r.shortcut_layers)
      b.shortcut_layers.push_back(detail::to_nn_layer(l));
    b.option_a_stride = r.option_a_stride;
    b.option_a_pad = r.option_a_pad;
    b.out_activation = static_cast<nn::Activation>(r.out_activation);
    if (r.max_pool_after)
      b.max_pool_after = Pool2dParams{.kernel = r.max_pool_after->kernel,
                                      .stride = r.max_pool_after->stride,
                                      .padding = r.max_pool_after->padding};
    m.blocks.push_back(std::move(b));
  }
  m.finalize();
  // The simulation numbers points as Model::finalize does; a graph numbered otherwise is not one
  // that save_quantized wrote.
  check(m.num_points() == static_cast<int>(g.points.size()) && m.input_point == g.input_point, what,
        ": the graph has ", g.points.size(), " points with input point ", g.input_point,
        ", the model it describes numbers ", m.num_points(), " with input point ", m.input_point);
  for (size_t bi = 0; bi < g.blocks.size(); ++bi) {
    const runtime::Block& r = g.blocks[bi];
    const nn::Block& b = m.blocks[bi];
    check(b.out_point == r.out_point, what, ": block ", r.name, " has output point ", r.out_point,
          ", expected ", b.out_point, " in forward order");
    for (size_t i = 0; i < r.layers.size(); ++i)
      check(b.layers[i].act_point == r.layers[i].act_point, what, ": layer ", r.layers[i].name,
            " has point ", r.layers[i].act_point, ", expected ", b.layers[i].act_point,
            " in forward order");
  }
  QuantSettings s{.w_bits = g.quant.w_bits,
                  .a_bits = g.quant.a_bits,
                  .first_last_bits = g.quant.first_last_bits,
                  .input_bits = g.quant.input_bits};
  try {
    validate(s);
  } catch (const Error& e) {
    fail(what, ": ", e.what());
  }
  QuantModel qm(std::move(m), s, /*init_weight_ranges=*/false);
  const auto gl = g.layers();
  const auto ml = qm.model.layers();
  for (size_t i = 0; i < ml.size(); ++i) detail::install_weights(qm, *ml[i], *gl[i]);
  for (nn::Layer* l : qm.model.layers()) l->weight = qm.quantized_weight(*l);
  for (size_t p = 0; p < g.points.size(); ++p) {
    const runtime::Point& pt = g.points[p];
    UniformQuantizer& q = qm.act_q[p];
    q.config.bits = pt.bits;
    qm.act_enabled[p] = pt.enabled;
    if (!pt.enabled) continue;
    q.scale = Tensor::from_data<float>(Shape{1}, &pt.scale);
    const float z = static_cast<float>(pt.zero_point);
    q.zero_point = Tensor::from_data<float>(Shape{1}, &z);
  }
  return qm;
}

/// A quantized model file read back: the model, what else the file records (so that saving it
/// again gives the same file) and the format version it had.
struct QuantizedFile {
  QuantModel model;
  SaveQuantizedParams params;
  int version = 0;
};

/// Reads a quantized model file of version 1 (through the model registry) or 2 (from the file
/// alone) held by f; newer versions, damaged files and invalid fields are refused, naming f.path().
inline QuantizedFile read_quantized(const SafetensorsFile& f) {
  const std::string& path = f.path();
  const int version = runtime::format_version(f);
  if (version == 1) {
    QuantModel qm = detail::load_quantized_v1(f);
    SaveQuantizedParams p{.options = detail::options_v1(f),
                          .preprocessing = default_preprocessing(qm.model),
                          .metadata = detail::informational_metadata(f)};
    p.metadata["upgraded_from"] = kQuantizedFormatV1;
    return {std::move(qm), std::move(p), version};
  }
  const runtime::Graph g = runtime::read_graph(f, {.integer_only = false});
  const runtime::ModelOptions& o = g.options;
  SaveQuantizedParams p{.options = {.num_classes = o.num_classes,
                                    .in_channels = o.in_channels,
                                    .width_mult = o.width_mult,
                                    .small_input_stem = o.small_input_stem,
                                    .base_width = o.base_width},
                        .metadata = detail::informational_metadata(f)};
  if (!o.preprocess.empty() || !o.mean.empty())
    p.preprocessing = Preprocessing{.name = o.preprocess,
                                    .resize_shorter = o.resize_shorter,
                                    .center_crop = o.center_crop,
                                    .mean = o.mean,
                                    .std = o.std,
                                    .input_height = o.input_height,
                                    .input_width = o.input_width};
  return {quant_model_from_graph(g, "quantized model '" + path + "'"), std::move(p), version};
}

/// Reads a quantized model file of version 1 or 2 (see read_quantized(const SafetensorsFile&)).
inline QuantizedFile read_quantized(const std::string& path) {
  return read_quantized(SafetensorsFile(path));
}

/// Rebuilds the fake-quantized model of a file written by save_quantized (version 1 or 2).
inline QuantModel load_quantized(const std::string& path) { return read_quantized(path).model; }

/// Writes the quantized model as a version-2 file.
inline void save_quantized(const QuantModel& qm, const std::string& path,
                           const SaveQuantizedParams& p) {
  runtime::save_graph(to_graph(qm, p), path, p.metadata);
}

/// Writes the quantized model; `options` are those the architecture was built with.
inline void save_quantized(const QuantModel& qm, const nn::ModelOptions& options,
                           const std::string& path,
                           std::map<std::string, std::string> metadata = {}) {
  save_quantized(qm, path,
                 SaveQuantizedParams{.options = options, .metadata = std::move(metadata)});
}

/// Installs the learned weight rounding (quantizers and integer levels) of a file written by
/// save_quantized into qm, which must hold the same architecture, FP weights and weight bit-widths:
/// e.g. to rerun the activation part of BRECQ on weights learned before.
inline void load_weight_rounding(QuantModel& qm, const std::string& path) {
  const SafetensorsFile f(path);
  const int version = runtime::format_version(f);
  std::optional<runtime::Graph> g;
  std::string arch;
  if (version == 1) {
    auto it = f.metadata().find("arch");
    arch = it == f.metadata().end() ? "(no arch)" : it->second;
  } else {
    g = runtime::read_graph(f, {.integer_only = false});
    arch = g->options.arch;
  }
  check(arch == qm.model.arch, "quantized model '", path, "': holds a ", arch, ", expected ",
        qm.model.arch);
  const std::string what = "quantized model '" + path + "'";
  if (g) detail::check_same_layers(qm.model, *g, what);
  const auto gl = g ? g->layers() : std::vector<const runtime::Layer*>{};
  const std::vector<int> in = g ? runtime::layer_input_points(*g) : std::vector<int>{};
  const auto ml = qm.model.layers();
  for (size_t i = 0; i < ml.size(); ++i) {
    const nn::Layer* l = ml[i];
    // The folded biases identify the FP weights the rounding was learned on.
    Tensor fb;
    const std::string b = l->name + ".bias";
    if (g) {
      if (!gl[i]->bias.empty())
        fb = Tensor::from_data<float>(Shape{gl[i]->out_channels}, gl[i]->bias.data());
    } else if (f.contains(b)) {
      fb = f.to_f32(b);
    }
    check(l->bias.defined() == fb.defined(), what, ": layer ", l->name,
          l->bias.defined() ? " lacks its bias" : " has a bias the model lacks");
    if (!l->bias.defined()) continue;
    check(fb.shape() == l->bias.shape(), what, ": ", b, " has shape ", fb.shape(), ", expected ",
          l->bias.shape());
    // Version 2 rounds conv biases to their accumulator grid (snap_conv_biases): half a step.
    const bool snapped = g && gl[i]->kind == runtime::LayerKind::conv && in[i] >= 0 &&
                         g->points[static_cast<size_t>(in[i])].enabled;
    float diff = 0.0f;
    for (int64_t k = 0; k < fb.numel(); ++k) {
      const float step = snapped ? gl[i]->weight_scale[static_cast<size_t>(k)] *
                                       g->points[static_cast<size_t>(in[i])].scale
                                 : 0.0f;
      diff = std::max(diff, std::abs(fb.data<float>()[k] - l->bias.data<float>()[k]) - 0.5f * step);
    }
    check(diff <= 1e-5f, what, ": ", b, " differs from the model's by ", diff,
          " (was it made from other FP weights?)");
  }
  if (!g) {
    detail::read_weight_rounding_v1(qm, f, /*take_bits=*/false);
    return;
  }
  for (size_t i = 0; i < ml.size(); ++i) {
    const int bits = qm.weight_q[static_cast<size_t>(ml[i]->id)].config.bits;
    check(gl[i]->weight_bits == bits, what, ": layer ", ml[i]->name, " has ", gl[i]->weight_bits,
          "-bit weights, this run quantizes it to ", bits, " bits");
    detail::install_weights(qm, *ml[i], *gl[i]);
  }
}

}  // namespace brecq::quant
