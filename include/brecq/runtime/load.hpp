#pragma once
// Quantized model files, format version 2: a safetensors file whose metadata holds the graph
// (runtime::Graph as JSON) and whose tensors hold the numbers. Reading and writing need no Tensor,
// no nn/ and no model registry.
//
// Metadata ("__metadata__", string -> string):
//   format    "brecq-quantized-2"
//   graph     JSON: {"options": {...}, "quant": {...}, "input_point": P, "points": [{"bits",
//             "enabled"}, ...], "blocks": [{"name", "kind", "stage", "global_pool_before",
//             "layers": [LAYER...], "shortcut", "shortcut_layers": [LAYER...], "option_a_stride",
//             "option_a_pad", "out_activation", "max_pool_after": null | {"kernel", "stride",
//             "padding"}, "out_point"}, ...]}; LAYER = {"name", "kind", "in_channels",
//             "out_channels", "kernel": [kh, kw], "stride", "padding", "dilation", "groups",
//             "activation", "act_point", "weight_bits", "bias": true|false}. Every key is
//             required and no other key is allowed (see graph_json for the exact writer).
//   checksum  "fnv1a64:" + 16 hex digits: FNV-1a 64 over the graph JSON and every tensor (name,
//             dtype, shape, bytes, in name order), so damaged or edited files are refused.
//   any other keys the writer was given (e.g. "settings"), ignored by the reader.
// Tensors (every one required, no other allowed):
//   <layer>.weight_levels      U8  [packed_size(weight_count, weight_bits)]  (see graph.hpp)
//   <layer>.weight_scale       F32 [out_channels]
//   <layer>.weight_zero_point  I32 [out_channels]
//   <layer>.bias               F32 [out_channels]  (layers with "bias": true)
//   point.<p>.scale            F32 [1]             (enabled points)
//   point.<p>.zero_point       I32 [1]             (enabled points)
// Version 1 files ("brecq-quantized-1") hold no graph: quant::load_quantized reads them through
// the model registry, `brecq upgrade` converts them; this reader refuses them with that advice.
#include <charconv>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "brecq/io/safetensors_core.hpp"
#include "brecq/runtime/graph.hpp"

namespace brecq::runtime {

inline constexpr int kFormatVersion = 2;
inline constexpr std::string_view kFormatPrefix = "brecq-quantized-";

/// "brecq-quantized-2".
inline std::string format_name(int version = kFormatVersion) {
  return std::string(kFormatPrefix) + std::to_string(version);
}

/// The quantized-model format version of f (1, 2, or a newer one); throws, naming the file, if
/// f is not a brecq quantized model.
inline int format_version(const SafetensorsReader& f) {
  auto it = f.metadata().find("format");
  check(it != f.metadata().end(), "quantized model '", f.path(),
        "': not a brecq quantized model (its metadata has no 'format'; expected ", format_name(),
        ")");
  const std::string& s = it->second;
  int v = 0;
  const char* end = s.data() + s.size();
  const bool ok = s.starts_with(kFormatPrefix) &&
                  std::from_chars(s.data() + kFormatPrefix.size(), end, v).ptr == end && v >= 1;
  check(ok, "quantized model '", f.path(), "': not a brecq quantized model (format '", s,
        "', expected ", format_name(), ")");
  return v;
}

namespace detail {

inline std::string tensor_name(const Layer& l, const char* field) { return l.name + "." + field; }
inline std::string point_tensor(size_t p, const char* field) {
  return "point." + std::to_string(p) + "." + field;
}

/// FNV-1a 64 over the graph JSON and the tensors, as the checksum metadata records it.
class Checksum {
 public:
  void add(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    for (size_t i = 0; i < n; ++i) h_ = (h_ ^ p[i]) * 0x100000001b3ull;
  }
  void add_u64(uint64_t v) { add(&v, 8); }
  void add_string(std::string_view s) {
    add_u64(s.size());
    add(s.data(), s.size());
  }
  void add_tensor(std::string_view name, std::string_view dtype, const std::vector<int64_t>& shape,
                  const uint8_t* bytes, size_t n) {
    add_string(name);
    add_string(dtype);
    add_u64(shape.size());
    for (int64_t d : shape) add_u64(static_cast<uint64_t>(d));
    add_u64(n);
    add(bytes, n);
  }
  std::string str() const {
    char buf[32];
    std::snprintf(buf, sizeof buf, "fnv1a64:%016" PRIx64, h_);
    return buf;
  }

 private:
  uint64_t h_ = 0xcbf29ce484222325ull;
};

// ---- JSON writing -----------------------------------------------------------------------------

inline std::string json_float(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(v));  // round-trips every float
  return buf;
}
inline std::string json_double(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

class JsonWriter {
 public:
  JsonWriter& begin_object() { return open('{'); }
  JsonWriter& end_object() { return close('}'); }
  JsonWriter& begin_array() { return open('['); }
  JsonWriter& end_array() { return close(']'); }
  JsonWriter& key(std::string_view k) {
    comma();
    brecq::detail::io::json_append_string(s_, k);
    s_ += ':';
    after_key_ = true;
    return *this;
  }
  JsonWriter& value(std::string_view v) {
    comma();
    brecq::detail::io::json_append_string(s_, v);
    return *this;
  }
  JsonWriter& value(const char* v) { return value(std::string_view(v)); }
  JsonWriter& value(int64_t v) { return raw(std::to_string(v)); }
  JsonWriter& value(int v) { return raw(std::to_string(v)); }
  JsonWriter& value(bool v) { return raw(v ? "true" : "false"); }
  JsonWriter& raw(const std::string& literal) {
    comma();
    s_ += literal;
    return *this;
  }
  template <class T>
  JsonWriter& field(std::string_view k, const T& v) {
    return key(k).value(v);
  }
  const std::string& str() const { return s_; }

 private:
  JsonWriter& open(char c) {
    comma();
    s_ += c;
    first_ = true;
    return *this;
  }
  JsonWriter& close(char c) {
    s_ += c;
    first_ = false;
    return *this;
  }
  void comma() {
    if (after_key_) {
      after_key_ = false;
      return;
    }
    if (!first_ && !s_.empty()) s_ += ',';
    first_ = false;
  }
  std::string s_;
  bool first_ = true, after_key_ = false;
};

inline void write_layer(JsonWriter& w, const Layer& l) {
  w.begin_object()
      .field("name", l.name)
      .field("kind", layer_kind_name(l.kind))
      .field("in_channels", l.in_channels)
      .field("out_channels", l.out_channels);
  w.key("kernel").begin_array().value(l.kernel_h).value(l.kernel_w).end_array();
  w.field("stride", l.stride)
      .field("padding", l.padding)
      .field("dilation", l.dilation)
      .field("groups", l.groups)
      .field("activation", activation_name(l.activation))
      .field("act_point", l.act_point)
      .field("weight_bits", l.weight_bits)
      .field("bias", !l.bias.empty())
      .end_object();
}

}  // namespace detail

/// The graph's structure as the "graph" metadata JSON (numbers live in the tensors).
inline std::string graph_json(const Graph& g) {
  detail::JsonWriter w;
  const ModelOptions& o = g.options;
  w.begin_object().key("options").begin_object();
  w.field("arch", o.arch)
      .field("num_classes", o.num_classes)
      .field("in_channels", o.in_channels)
      .key("width_mult")
      .raw(detail::json_double(o.width_mult))
      .field("base_width", o.base_width)
      .field("small_input_stem", o.small_input_stem)
      .field("preprocess", o.preprocess)
      .field("resize_shorter", o.resize_shorter)
      .field("center_crop", o.center_crop);
  w.key("mean").begin_array();
  for (float v : o.mean) w.raw(detail::json_float(v));
  w.end_array().key("std").begin_array();
  for (float v : o.std) w.raw(detail::json_float(v));
  w.end_array();
  w.field("input_height", o.input_height).field("input_width", o.input_width).end_object();
  w.key("quant")
      .begin_object()
      .field("w_bits", g.quant.w_bits)
      .field("a_bits", g.quant.a_bits)
      .field("first_last_bits", g.quant.first_last_bits)
      .field("input_bits", g.quant.input_bits)
      .end_object();
  w.field("input_point", g.input_point);
  w.key("points").begin_array();
  for (const Point& p : g.points)
    w.begin_object().field("bits", p.bits).field("enabled", p.enabled).end_object();
  w.end_array();
  w.key("blocks").begin_array();
  for (const Block& b : g.blocks) {
    w.begin_object()
        .field("name", b.name)
        .field("kind", block_kind_name(b.kind))
        .field("stage", b.stage)
        .field("global_pool_before", b.global_pool_before);
    w.key("layers").begin_array();
    for (const Layer& l : b.layers) detail::write_layer(w, l);
    w.end_array().field("shortcut", shortcut_kind_name(b.shortcut));
    w.key("shortcut_layers").begin_array();
    for (const Layer& l : b.shortcut_layers) detail::write_layer(w, l);
    w.end_array()
        .field("option_a_stride", b.option_a_stride)
        .field("option_a_pad", b.option_a_pad)
        .field("out_activation", activation_name(b.out_activation));
    w.key("max_pool_after");
    if (b.max_pool_after)
      w.begin_object()
          .field("kernel", b.max_pool_after->kernel)
          .field("stride", b.max_pool_after->stride)
          .field("padding", b.max_pool_after->padding)
          .end_object();
    else
      w.raw("null");
    w.field("out_point", b.out_point).end_object();
  }
  w.end_array().end_object();
  return w.str();
}

namespace detail {

template <class T>
inline std::vector<uint8_t> le_bytes(const std::vector<T>& v) {
  std::vector<uint8_t> out(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(out.data(), v.data(), out.size());
  return out;
}

/// Every tensor of g as the file stores it.
inline std::vector<SafetensorsRawTensor> graph_tensors(const Graph& g) {
  std::vector<SafetensorsRawTensor> t;
  const int64_t one = 1;
  for (const Layer* l : g.layers()) {
    const int64_t oc = l->out_channels;
    t.push_back({tensor_name(*l, "weight_levels"),
                 "U8",
                 {static_cast<int64_t>(l->weight_levels.size())},
                 l->weight_levels});
    t.push_back({tensor_name(*l, "weight_scale"), "F32", {oc}, le_bytes(l->weight_scale)});
    t.push_back(
        {tensor_name(*l, "weight_zero_point"), "I32", {oc}, le_bytes(l->weight_zero_point)});
    if (!l->bias.empty()) t.push_back({tensor_name(*l, "bias"), "F32", {oc}, le_bytes(l->bias)});
  }
  for (size_t p = 0; p < g.points.size(); ++p) {
    if (!g.points[p].enabled) continue;
    t.push_back({point_tensor(p, "scale"), "F32", {one}, le_bytes(std::vector{g.points[p].scale})});
    t.push_back({point_tensor(p, "zero_point"),
                 "I32",
                 {one},
                 le_bytes(std::vector{g.points[p].zero_point})});
  }
  return t;
}

}  // namespace detail

namespace detail {
/// A version-2 file image of the graph JSON `json` and `tensors`, with its checksum; no
/// validation (graph_file_bytes validates; tests build damaged files with it).
inline std::vector<uint8_t> signed_file_bytes(const std::string& json,
                                              const std::vector<SafetensorsRawTensor>& tensors,
                                              std::map<std::string, std::string> metadata = {}) {
  Checksum sum;
  sum.add_string(json);
  std::map<std::string_view, const SafetensorsRawTensor*> sorted;
  for (const auto& t : tensors) sorted.emplace(t.name, &t);
  for (const auto& [name, t] : sorted)
    sum.add_tensor(name, t->dtype, t->shape, t->bytes.data(), t->bytes.size());
  metadata["format"] = format_name();
  metadata["graph"] = json;
  metadata["checksum"] = sum.str();
  return serialize_safetensors_raw(tensors, metadata);
}
}  // namespace detail

/// The bytes of a version-2 file holding g (validated first); `metadata` adds informational
/// entries (format, graph and checksum are the writer's).
inline std::vector<uint8_t> graph_file_bytes(const Graph& g,
                                             std::map<std::string, std::string> metadata = {}) {
  validate(g, "save_graph (" + g.options.arch + ")");
  return detail::signed_file_bytes(graph_json(g), detail::graph_tensors(g), std::move(metadata));
}

/// Writes g to `path` as a version-2 quantized model file.
inline void save_graph(const Graph& g, const std::string& path,
                       std::map<std::string, std::string> metadata = {}) {
  write_file_bytes(path, graph_file_bytes(g, std::move(metadata)));
}

// ---- reading ----------------------------------------------------------------------------------

struct LoadParams {
  /// Also require what the integer runtime needs (validate_integer): every activation
  /// quantized, the input included. quant::load_quantized reads without it.
  bool integer_only = true;
};

namespace detail {

using brecq::detail::io::Json;

/// Reads one JSON object of the graph: every key required once, unknown keys refused.
class JsonObject {
 public:
  JsonObject(const Json& j, std::string where, const std::string& file)
      : j_(j), where_(std::move(where)), file_(file) {
    if (j.kind != Json::Kind::object)
      bad("is ", brecq::detail::io::json_kind_name(j.kind), ", expected an object");
    used_.assign(j.keys.size(), false);
  }

  const Json& get(std::string_view key) {
    for (size_t i = 0; i < j_.keys.size(); ++i)
      if (j_.keys[i] == key) {
        used_[i] = true;
        return j_.items[i];
      }
    bad("lacks the key '", key, "'");
  }
  int64_t integer(std::string_view key, int64_t lo, int64_t hi) {
    const Json& v = get(key);
    int64_t x = 0;
    const std::string& s = v.text;
    const auto r = std::from_chars(s.data(), s.data() + s.size(), x);  // out of range: x stays 0
    const bool ok = v.kind == Json::Kind::number && s.find_first_of(".eE") == std::string::npos &&
                    r.ec == std::errc() && r.ptr == s.data() + s.size();
    if (!ok) bad("'", key, "' should be an integer, got ", describe(v));
    if (x < lo || x > hi) bad("'", key, "' is ", x, ", expected ", lo, "..", hi);
    return x;
  }
  int small(std::string_view key, int lo, int hi) { return static_cast<int>(integer(key, lo, hi)); }
  double number(std::string_view key) { return to_number(get(key), key); }
  bool boolean(std::string_view key) {
    const Json& v = get(key);
    if (v.kind != Json::Kind::boolean)
      bad("'", key, "' should be true or false, got ", describe(v));
    return v.boolean;
  }
  std::string string(std::string_view key) {
    const Json& v = get(key);
    if (v.kind != Json::Kind::string) bad("'", key, "' should be a string, got ", describe(v));
    return v.text;
  }
  const Json& array(std::string_view key) {
    const Json& v = get(key);
    if (v.kind != Json::Kind::array) bad("'", key, "' should be an array, got ", describe(v));
    return v;
  }
  std::vector<float> floats(std::string_view key) {
    std::vector<float> out;
    for (const Json& v : array(key).items) out.push_back(static_cast<float>(to_number(v, key)));
    return out;
  }
  template <class E, size_t N>
  E choice(std::string_view key, const E (&values)[N], const char* (*name)(E)) {
    const std::string s = string(key);
    std::string all;
    for (E e : values) {
      if (s == name(e)) return e;
      all += (all.empty() ? "" : ", ") + std::string(name(e));
    }
    bad("'", key, "' is '", s, "', expected one of ", all);
  }
  /// Refuses keys that were not read.
  void done() const {
    for (size_t i = 0; i < used_.size(); ++i)
      if (!used_[i]) bad("has the unknown key '", j_.keys[i], "'");
  }
  template <class... A>
  [[noreturn]] void bad(const A&... a) const {
    fail("quantized model '", file_, "': graph ", where_, " ", a...);
  }

 private:
  static std::string describe(const Json& v) {
    if (v.kind == Json::Kind::number || v.kind == Json::Kind::string) return "'" + v.text + "'";
    return std::string(brecq::detail::io::json_kind_name(v.kind));
  }
  double to_number(const Json& v, std::string_view key) const {
    if (v.kind != Json::Kind::number) bad("'", key, "' should be a number, got ", describe(v));
    double x = 0;
    const auto r = std::from_chars(v.text.data(), v.text.data() + v.text.size(), x);
    if (r.ec != std::errc() || r.ptr != v.text.data() + v.text.size() || !std::isfinite(x))
      bad("'", key, "' is not a finite number: ", v.text);
    return x;
  }
  const Json& j_;
  std::string where_;
  const std::string& file_;
  std::vector<bool> used_;
};

inline constexpr int64_t kMaxChannels = int64_t{1} << 20;
inline constexpr LayerKind kLayerKinds[] = {LayerKind::conv, LayerKind::linear};
inline constexpr Activation kActivations[] = {Activation::none, Activation::relu,
                                              Activation::relu6};
inline constexpr ShortcutKind kShortcuts[] = {ShortcutKind::none, ShortcutKind::identity,
                                              ShortcutKind::option_a, ShortcutKind::projection};
inline constexpr BlockKind kBlockKinds[] = {BlockKind::stem,       BlockKind::basic,
                                            BlockKind::bottleneck, BlockKind::inverted_residual,
                                            BlockKind::conv,       BlockKind::head};

inline Layer parse_layer(const Json& j, const std::string& where, const std::string& file) {
  JsonObject o(j, where, file);
  Layer l;
  l.name = o.string("name");
  JsonObject named(j, "layer '" + l.name + "'", file);  // errors name the layer from here on
  named.get("name");
  l.kind = named.choice("kind", kLayerKinds, layer_kind_name);
  l.in_channels = named.integer("in_channels", 1, kMaxChannels);
  l.out_channels = named.integer("out_channels", 1, kMaxChannels);
  const Json& k = named.array("kernel");
  if (k.items.size() != 2) named.bad("'kernel' should be [kh, kw], has ", k.items.size(), " items");
  auto kernel_dim = [&](const Json& v) {
    int64_t x = 0;
    const bool ok = v.kind == Json::Kind::number &&
                    std::from_chars(v.text.data(), v.text.data() + v.text.size(), x).ptr ==
                        v.text.data() + v.text.size() &&
                    x >= 1 && x <= 64;
    if (!ok) named.bad("'kernel' entries should be integers 1..64, got '", v.text, "'");
    return x;
  };
  l.kernel_h = kernel_dim(k.items[0]);
  l.kernel_w = kernel_dim(k.items[1]);
  l.stride = named.integer("stride", 1, 64);
  l.padding = named.integer("padding", 0, 64);
  l.dilation = named.integer("dilation", 1, 64);
  l.groups = named.integer("groups", 1, kMaxChannels);
  l.activation = named.choice("activation", kActivations, activation_name);
  l.act_point = named.small("act_point", -1, 1 << 20);
  l.weight_bits = named.small("weight_bits", 2, 8);
  if (named.boolean("bias")) l.bias.resize(static_cast<size_t>(l.out_channels));
  named.done();
  return l;
}

inline void parse_graph_json(Graph& g, const std::string& json, const std::string& file) {
  const Json root =
      brecq::detail::io::JsonParser(json, "quantized model '" + file + "': graph").parse_document();
  JsonObject top(root, "(top level)", file);
  {
    JsonObject o(top.get("options"), "options", file);
    ModelOptions& m = g.options;
    m.arch = o.string("arch");
    m.num_classes = o.integer("num_classes", 1, kMaxChannels);
    m.in_channels = o.integer("in_channels", 1, kMaxChannels);
    m.width_mult = o.number("width_mult");
    m.base_width = o.integer("base_width", 1, kMaxChannels);
    m.small_input_stem = o.boolean("small_input_stem");
    m.preprocess = o.string("preprocess");
    m.resize_shorter = o.integer("resize_shorter", 0, 1 << 16);
    m.center_crop = o.integer("center_crop", 0, 1 << 16);
    m.mean = o.floats("mean");
    m.std = o.floats("std");
    m.input_height = o.integer("input_height", 0, 1 << 16);
    m.input_width = o.integer("input_width", 0, 1 << 16);
    o.done();
  }
  {
    JsonObject q(top.get("quant"), "quant", file);
    g.quant = {.w_bits = q.small("w_bits", 2, 8),
               .a_bits = q.small("a_bits", 0, 8),
               .first_last_bits = q.small("first_last_bits", 2, 8),
               .input_bits = q.small("input_bits", 0, 8)};
    q.done();
  }
  g.input_point = top.small("input_point", -1, 1 << 20);
  const Json& points = top.array("points");
  for (size_t p = 0; p < points.items.size(); ++p) {
    JsonObject o(points.items[p], "point " + std::to_string(p), file);
    Point pt;
    pt.bits = o.small("bits", 2, 8);
    pt.enabled = o.boolean("enabled");
    o.done();
    g.points.push_back(pt);
  }
  const Json& blocks = top.array("blocks");
  for (size_t bi = 0; bi < blocks.items.size(); ++bi) {
    JsonObject first(blocks.items[bi], "block " + std::to_string(bi), file);
    Block b;
    b.name = first.string("name");
    JsonObject o(blocks.items[bi], "block '" + b.name + "'", file);
    o.get("name");
    b.kind = o.choice("kind", kBlockKinds, block_kind_name);
    b.stage = o.small("stage", 0, 1 << 20);
    b.global_pool_before = o.boolean("global_pool_before");
    for (const Json& l : o.array("layers").items)
      b.layers.push_back(parse_layer(l, "block '" + b.name + "' layer", file));
    b.shortcut = o.choice("shortcut", kShortcuts, shortcut_kind_name);
    for (const Json& l : o.array("shortcut_layers").items)
      b.shortcut_layers.push_back(parse_layer(l, "block '" + b.name + "' shortcut layer", file));
    b.option_a_stride = o.integer("option_a_stride", 1, 64);
    b.option_a_pad = o.integer("option_a_pad", 0, kMaxChannels);
    b.out_activation = o.choice("out_activation", kActivations, activation_name);
    const Json& mp = o.get("max_pool_after");
    if (mp.kind != Json::Kind::null) {
      JsonObject p(mp, "block '" + b.name + "' max_pool_after", file);
      b.max_pool_after = MaxPool{.kernel = p.integer("kernel", 1, 64),
                                 .stride = p.integer("stride", 1, 64),
                                 .padding = p.integer("padding", 0, 64)};
      p.done();
    }
    b.out_point = o.small("out_point", -1, 1 << 20);
    o.done();
    g.blocks.push_back(std::move(b));
  }
  top.done();
}

/// Reads tensor `name` of f into out, checking its dtype and its number of elements.
template <class T>
inline void read_tensor(const SafetensorsReader& f, const std::string& name, const char* dtype,
                        int64_t count, std::vector<T>& out, std::set<std::string>& used) {
  check(f.contains(name), "quantized model '", f.path(), "': tensor '", name, "' is missing");
  const SafetensorsTensorInfo& i = f.info(name);
  check(i.dtype == dtype && i.shape.size() == 1 && i.shape[0] == count, "quantized model '",
        f.path(), "': tensor '", name, "' is ", i.dtype, " ", brecq::detail::io::shape_str(i.shape),
        ", expected ", dtype, " [", count, "]");
  out.resize(static_cast<size_t>(count));
  if (count) std::memcpy(out.data(), f.bytes(name).data(), out.size() * sizeof(T));
  used.insert(name);
}

}  // namespace detail

/// The graph of a version-2 file held by f, every field validated; errors name the file.
inline Graph read_graph(const SafetensorsReader& f, const LoadParams& p = {}) {
  const std::string what = "quantized model '" + f.path() + "'";
  const int version = format_version(f);
  check(version != 1, what,
        " is a version-1 file (brecq-quantized-1), which holds no graph and needs the model "
        "registry: convert it with `brecq upgrade --quantized ",
        f.path(), " --out NEW.safetensors`, or quantize the model again with `brecq quantize`");
  check(version <= kFormatVersion, what, " is format version ", version, " (", format_name(version),
        "), newer than this brecq reads (up to ", kFormatVersion, "): update brecq");
  auto graph_it = f.metadata().find("graph");
  check(graph_it != f.metadata().end(), what, ": metadata lacks 'graph'");
  auto sum_it = f.metadata().find("checksum");
  check(sum_it != f.metadata().end(), what, ": metadata lacks 'checksum'");
  detail::Checksum sum;
  sum.add_string(graph_it->second);
  for (const std::string& name : f.names()) {
    const SafetensorsTensorInfo& i = f.info(name);
    const auto bytes = f.bytes(name);
    sum.add_tensor(name, i.dtype, i.shape, bytes.data(), bytes.size());
  }
  check(sum.str() == sum_it->second, what, ": checksum mismatch (file says ", sum_it->second,
        ", contents give ", sum.str(),
        "): the file is damaged or was modified after it was written");

  Graph g;
  detail::parse_graph_json(g, graph_it->second, f.path());
  std::set<std::string> used;
  for (Block& b : g.blocks)
    for (auto* layers : {&b.layers, &b.shortcut_layers})
      for (Layer& l : *layers) {
        const int64_t oc = l.out_channels;
        detail::read_tensor(f, detail::tensor_name(l, "weight_levels"), "U8",
                            packed_size(l.weight_count(), l.weight_bits), l.weight_levels, used);
        detail::read_tensor(f, detail::tensor_name(l, "weight_scale"), "F32", oc, l.weight_scale,
                            used);
        detail::read_tensor(f, detail::tensor_name(l, "weight_zero_point"), "I32", oc,
                            l.weight_zero_point, used);
        if (!l.bias.empty())
          detail::read_tensor(f, detail::tensor_name(l, "bias"), "F32", oc, l.bias, used);
      }
  for (size_t i = 0; i < g.points.size(); ++i) {
    Point& pt = g.points[i];
    if (!pt.enabled) continue;
    std::vector<float> s;
    std::vector<int32_t> z;
    detail::read_tensor(f, detail::point_tensor(i, "scale"), "F32", 1, s, used);
    detail::read_tensor(f, detail::point_tensor(i, "zero_point"), "I32", 1, z, used);
    pt.scale = s[0];
    pt.zero_point = z[0];
  }
  for (const std::string& name : f.names())
    check(used.count(name), what, ": unexpected tensor '", name, "' (not described by the graph)");
  validate(g, what);
  if (p.integer_only) validate_integer(g, what);
  return g;
}

/// Reads and validates a version-2 quantized model file.
inline Graph load_graph(const std::string& path, const LoadParams& p = {}) {
  return read_graph(SafetensorsReader(path), p);
}

}  // namespace brecq::runtime
