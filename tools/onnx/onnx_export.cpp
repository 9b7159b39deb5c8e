// ONNX export (see onnx_export.hpp). The graph mirrors nn::Model::forward_block step by step, so
// every activation-quantization point lands exactly where the simulation applies it.
#include "onnx_export.hpp"

#include <onnx/onnx-ml.pb.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <vector>

#include "brecq/config.hpp"
#include "brecq/nn/fold_bn.hpp"

namespace brecq::onnx_export {

namespace {

using TP = onnx::TensorProto;

/// Builds one GraphProto: initializers, nodes and unique tensor names.
class GraphBuilder {
 public:
  explicit GraphBuilder(onnx::GraphProto* g = nullptr) : g_(g) {}

  std::string f32(const std::string& name, const std::vector<int64_t>& dims, const float* data) {
    TP* t = init(name, dims, TP::FLOAT);
    t->set_raw_data(data, static_cast<size_t>(numel(dims)) * sizeof(float));
    return t->name();
  }
  std::string f32_scalar(const std::string& name, float v) { return f32(name, {}, &v); }
  std::string u8(const std::string& name, const std::vector<int64_t>& dims, const uint8_t* data) {
    TP* t = init(name, dims, TP::UINT8);
    t->set_raw_data(data, static_cast<size_t>(numel(dims)));
    return t->name();
  }
  std::string i64(const std::string& name, const std::vector<int64_t>& values) {
    TP* t = init(name, {static_cast<int64_t>(values.size())}, TP::INT64);
    t->set_raw_data(values.data(), values.size() * sizeof(int64_t));
    return t->name();
  }

  /// Adds a node with one output named after `name`; returns the output.
  std::string node(const std::string& op, const std::string& name,
                   const std::vector<std::string>& inputs, onnx::NodeProto** out_node = nullptr) {
    onnx::NodeProto* n = g_->add_node();
    n->set_op_type(op);
    n->set_name(unique(name));
    for (const std::string& i : inputs) n->add_input(i);
    n->add_output(n->name());
    ++ops_[op];
    if (out_node) *out_node = n;
    return n->output(0);
  }

  const std::map<std::string, int>& ops() const { return ops_; }

 private:
  static int64_t numel(const std::vector<int64_t>& dims) {
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    return n;
  }
  TP* init(const std::string& name, const std::vector<int64_t>& dims, TP::DataType type) {
    TP* t = g_->add_initializer();
    t->set_name(unique(name));
    t->set_data_type(type);
    for (int64_t d : dims) t->add_dims(d);
    return t;
  }
  std::string unique(const std::string& name) {
    const int k = used_[name]++;
    return k == 0 ? name : name + "_" + std::to_string(k);
  }

  onnx::GraphProto* g_;
  std::map<std::string, int> used_;
  std::map<std::string, int> ops_;
};

void set_ints(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v) {
  onnx::AttributeProto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t x : v) a->add_ints(x);
}
void set_int(onnx::NodeProto* n, const std::string& name, int64_t v) {
  onnx::AttributeProto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}
void set_float(onnx::NodeProto* n, const std::string& name, float v) {
  onnx::AttributeProto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(v);
}

std::vector<int64_t> dims_of(const Tensor& t) {
  std::vector<int64_t> d;
  for (int64_t i = 0; i < t.ndim(); ++i) d.push_back(t.dim(i));
  return d;
}

/// The integer zero point of a quantizer channel, checked to lie on the grid.
uint8_t zero_point_u8(const quant::UniformQuantizer& q, int64_t c, const std::string& what) {
  const float z = q.zero_point.data<float>()[c];
  check(z >= 0.0f && z <= q.qmax() && z == std::nearbyint(z), what,
        ": zero point must be an integer in [0, ", q.qmax(), "], got ", z);
  return static_cast<uint8_t>(z);
}

struct WriteParams {
  bool keep_bn = false;
  bool separate_conv_bias = true;
  std::map<std::string, std::string> meta{};
};

/// Exports one model; `qm` is null for an FP export.
class Exporter {
 public:
  Exporter(const nn::Model& m, const quant::QuantModel* qm, const WriteParams& p)
      : m_(m), qm_(qm), keep_bn_(p.keep_bn), separate_bias_(p.separate_conv_bias) {}

  /// Adds the model's nodes to g; returns the output's name.
  std::string model(onnx::GraphProto* g, const std::string& input) {
    b_ = GraphBuilder(g);
    std::string y = input;
    if (m_.input_point >= 0) y = point(m_.input_point, y, "input");
    for (const nn::Block& blk : m_.blocks) y = block(blk, y);
    return y;
  }

  ExportSummary summary() const {
    ExportSummary s;
    s.ops = b_.ops();
    s.activation_points = points_;
    s.grid_clips = clips_;
    s.quantized_weights = qweights_;
    return s;
  }

 private:
  /// forward_block: optional global pool, main path, shortcut, residual add, out activation,
  /// max pool, then the block's output point.
  std::string block(const nn::Block& blk, const std::string& x) {
    std::string y = x;
    if (blk.global_pool_before) {
      y = b_.node("GlobalAveragePool", blk.name + ".pool", {y});  // [N, C, 1, 1]
      onnx::NodeProto* f = nullptr;
      y = b_.node("Flatten", blk.name + ".flatten", {y}, &f);  // [N, C]
      set_int(f, "axis", 1);
    }
    for (const nn::Layer& l : blk.layers) y = layer(l, y);
    switch (blk.shortcut) {
      case nn::ShortcutKind::none:
        break;
      case nn::ShortcutKind::identity:
        y = b_.node("Add", blk.name + ".add", {y, x});
        break;
      case nn::ShortcutKind::option_a: {
        // x[:, :, ::s, ::s], then zeros on both sides of the channel axis.
        const int64_t s = blk.option_a_stride, p = blk.option_a_pad;
        const int64_t big = std::numeric_limits<int64_t>::max();
        std::string sc = b_.node("Slice", blk.name + ".shortcut.slice",
                                 {x, b_.i64(blk.name + ".shortcut.starts", {0, 0}),
                                  b_.i64(blk.name + ".shortcut.ends", {big, big}),
                                  b_.i64(blk.name + ".shortcut.axes", {2, 3}),
                                  b_.i64(blk.name + ".shortcut.steps", {s, s})});
        sc = b_.node("Pad", blk.name + ".shortcut.pad",
                     {sc, b_.i64(blk.name + ".shortcut.pads", {0, p, 0, 0, 0, p, 0, 0})});
        y = b_.node("Add", blk.name + ".add", {y, sc});
        break;
      }
      case nn::ShortcutKind::projection: {
        std::string sc = x;
        for (const nn::Layer& l : blk.shortcut_layers) sc = layer(l, sc);
        y = b_.node("Add", blk.name + ".add", {y, sc});
        break;
      }
    }
    y = activation(blk.out_activation, y, blk.name + ".out");
    if (blk.max_pool_after) {
      const Pool2dParams& p = *blk.max_pool_after;
      const int64_t stride = p.stride > 0 ? p.stride : p.kernel;
      onnx::NodeProto* n = nullptr;
      y = b_.node("MaxPool", blk.name + ".maxpool", {y}, &n);
      set_ints(n, "kernel_shape", {p.kernel, p.kernel});
      set_ints(n, "strides", {stride, stride});
      set_ints(n, "pads", {p.padding, p.padding, p.padding, p.padding});
    }
    if (blk.out_point >= 0) y = point(blk.out_point, y, blk.name + ".out");
    return y;
  }

  /// forward_layer: linear part (with its BatchNorm when kept), activation, then its point.
  std::string layer(const nn::Layer& l, const std::string& x) {
    const std::string w = weight(l);
    std::vector<std::string> in{x, w};
    // A quantized conv adds its bias in a separate Add: ONNX Runtime rewrites a float bias of a
    // Conv fed by two DequantizeLinear nodes into int32 at scale s_x * s_w (BiasQuantization,
    // from the basic optimization level on), a rounding brecq does not have that moves 4-bit
    // activations across grid steps. An Add of [C, 1, 1] stays a float add.
    const bool separate_bias =
        qm_ && separate_bias_ && l.kind == nn::LayerKind::conv && l.bias.defined();
    if (l.bias.defined() && !separate_bias)
      in.push_back(b_.f32(l.name + ".bias", dims_of(l.bias), l.bias.contiguous().data<float>()));
    onnx::NodeProto* n = nullptr;
    std::string y;
    if (l.kind == nn::LayerKind::linear) {
      y = b_.node("Gemm", l.name, in, &n);  // x [N, in] * W^T [in, out] + b
      set_int(n, "transB", 1);
    } else {
      y = b_.node("Conv", l.name, in, &n);
      const int64_t k = l.weight.dim(2), s = l.conv.stride, p = l.conv.padding, d = l.conv.dilation;
      check(l.weight.dim(3) == k, "onnx export: layer ", l.name, " has a non-square kernel ",
            l.weight.shape());
      set_ints(n, "kernel_shape", {k, k});
      set_ints(n, "strides", {s, s});
      set_ints(n, "pads", {p, p, p, p});
      set_ints(n, "dilations", {d, d});
      set_int(n, "group", l.conv.groups);
      if (separate_bias)
        y = b_.node("Add", l.name + ".bias_add",
                    {y, b_.f32(l.name + ".bias", {l.bias.numel(), 1, 1},
                               l.bias.contiguous().data<float>())});
    }
    if (l.bn) {
      check(qm_ == nullptr && keep_bn_, "onnx export: layer ", l.name,
            " still has a BatchNorm (fold it first)");
      const nn::BatchNorm& bn = *l.bn;
      const int64_t c = bn.weight.numel();
      y = b_.node(
          "BatchNormalization", bn.name,
          {y, b_.f32(bn.name + ".weight", {c}, bn.weight.contiguous().data<float>()),
           b_.f32(bn.name + ".bias", {c}, bn.bias.contiguous().data<float>()),
           b_.f32(bn.name + ".running_mean", {c}, bn.running_mean.contiguous().data<float>()),
           b_.f32(bn.name + ".running_var", {c}, bn.running_var.contiguous().data<float>())},
          &n);
      set_float(n, "epsilon", bn.eps);
    }
    y = activation(l.activation, y, l.name);
    if (l.act_point >= 0) y = point(l.act_point, y, l.name + ".out");
    return y;
  }

  /// The weight as the forward pass uses it: FP, or integer levels through a per-channel
  /// DequantizeLinear, which computes (level - zero_point) * scale in float as
  /// QuantModel::set_weight_levels does, so the dequantized weights are bit-identical.
  std::string weight(const nn::Layer& l) {
    if (!qm_)
      return b_.f32(l.name + ".weight", dims_of(l.weight), l.weight.contiguous().data<float>());
    const quant::UniformQuantizer& q = qm_->weight_q[static_cast<size_t>(l.id)];
    check(q.initialized() && q.channels() == l.out_channels(), "onnx export: layer ", l.name,
          " needs ", l.out_channels(), " weight scales, got ", q.initialized() ? q.channels() : 0);
    const Tensor levels = qm_->weight_levels(l);
    std::vector<uint8_t> zp(static_cast<size_t>(q.channels()));
    for (int64_t c = 0; c < q.channels(); ++c)
      zp[static_cast<size_t>(c)] = zero_point_u8(q, c, "layer " + l.name + " weights");
    ++qweights_;
    onnx::NodeProto* n = nullptr;
    const std::string w =
        b_.node("DequantizeLinear", l.name + ".weight_dq",
                {b_.u8(l.name + ".weight_levels", dims_of(levels), levels.data<uint8_t>()),
                 b_.f32(l.name + ".weight_scale", {q.channels()}, q.scale.data<float>()),
                 b_.u8(l.name + ".weight_zero_point", {q.channels()}, zp.data())},
                &n);
    set_int(n, "axis", 0);
    return w;
  }

  std::string activation(nn::Activation a, const std::string& x, const std::string& name) {
    switch (a) {
      case nn::Activation::none:
        return x;
      case nn::Activation::relu:
        return b_.node("Relu", name + ".relu", {x});
      case nn::Activation::relu6:
        return b_.node("Clip", name + ".relu6",
                       {x, b_.f32_scalar(name + ".relu6_min", 0.0f),
                        b_.f32_scalar(name + ".relu6_max", 6.0f)});
    }
    fail("onnx export: unknown activation");
  }

  /// brecq's fake quantization at point p, y = (clamp(round(x / s) + z, 0, 2^b - 1) - z) * s,
  /// as QuantizeLinear (round(x / s) half to even, + z, saturated to 0..255) and
  /// DequantizeLinear ((q - z) * s). For b < 8 the uint8 saturation is wider than brecq's grid,
  /// so a Clip to [(0 - z) * s, (2^b - 1 - z) * s] comes first: a clipped bound k * s (k = -z or
  /// 2^b - 1 - z, |k| <= 255) divides back to k within a few ulps and rounds to k, and values
  /// inside the bounds are untouched, so the levels equal brecq's clamp exactly.
  std::string point(int p, const std::string& x, const std::string& name) {
    if (!qm_ || !qm_->act_enabled[static_cast<size_t>(p)]) return x;
    const quant::UniformQuantizer& q = qm_->act_q[static_cast<size_t>(p)];
    const std::string what = "activation point " + std::to_string(p) + " (" + name + ")";
    check(q.initialized() && q.channels() == 1, "onnx export: ", what,
          " must have an initialised per-tensor quantizer");
    const float s = q.scale.data<float>()[0], z = q.zero_point.data<float>()[0];
    check(s > 0.0f && std::isfinite(s), "onnx export: ", what, ": scale must be > 0, got ", s);
    const uint8_t zp = zero_point_u8(q, 0, what);
    const std::string tag = name + ".q" + std::to_string(p);
    std::string y = x;
    if (q.config.bits < 8) {
      y = b_.node("Clip", tag + ".grid",
                  {y, b_.f32_scalar(tag + ".lo", (0.0f - z) * s),
                   b_.f32_scalar(tag + ".hi", (q.qmax() - z) * s)});
      ++clips_;
    }
    const std::string scale = b_.f32_scalar(tag + ".scale", s);
    const std::string zero = b_.u8(tag + ".zero_point", {}, &zp);
    y = b_.node("QuantizeLinear", tag + ".quantize", {y, scale, zero});
    y = b_.node("DequantizeLinear", tag + ".dequantize", {y, scale, zero});
    ++points_;
    return y;
  }

  const nn::Model& m_;
  const quant::QuantModel* qm_;
  bool keep_bn_, separate_bias_;
  GraphBuilder b_;
  int points_ = 0, clips_ = 0, qweights_ = 0;
};

void set_value_info(onnx::ValueInfoProto* v, const std::string& name,
                    const std::vector<std::string>& dims) {
  v->set_name(name);
  onnx::TypeProto_Tensor* t = v->mutable_type()->mutable_tensor_type();
  t->set_elem_type(TP::FLOAT);
  for (const std::string& d : dims) {
    onnx::TensorShapeProto_Dimension* dim = t->mutable_shape()->add_dim();
    if (!d.empty() && std::isdigit(static_cast<unsigned char>(d[0])))
      dim->set_dim_value(std::stoll(d));
    else
      dim->set_dim_param(d);
  }
}

ExportSummary write(const nn::Model& m, const quant::QuantModel* qm, const std::string& path,
                    const WriteParams& p) {
  GOOGLE_PROTOBUF_VERIFY_VERSION;
  check(!m.blocks.empty(), "onnx export: model ", m.arch, " has no blocks");
  onnx::ModelProto model;
  model.set_ir_version(7);  // the IR version of opset 13
  model.set_producer_name("brecq");
  model.set_producer_version(BRECQ_VERSION_STRING);
  model.set_model_version(1);
  onnx::OperatorSetIdProto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOpset);
  for (const auto& [k, v] : p.meta) {
    onnx::StringStringEntryProto* e = model.add_metadata_props();
    e->set_key(k);
    e->set_value(v);
  }
  onnx::GraphProto* g = model.mutable_graph();
  g->set_name(m.arch);
  set_value_info(g->add_input(), "input", {"N", std::to_string(m.in_channels), "H", "W"});
  Exporter e(m, qm, p);
  const std::string out = e.model(g, "input");
  // The last node's output is renamed to the graph output.
  onnx::NodeProto* last = g->mutable_node(g->node_size() - 1);
  check(last->output(0) == out, "onnx export: the last node does not produce the model output");
  last->set_output(0, "logits");
  set_value_info(g->add_output(), "logits", {"N", std::to_string(m.num_classes)});

  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    check(f.is_open(), "onnx export: cannot open '", path, "' for writing");
    check(model.SerializeToOstream(&f), "onnx export: serializing the model to '", path,
          "' failed");
    f.close();
    check(!f.fail(), "onnx export: writing '", path, "' failed");
  }
  ExportSummary s = e.summary();
  s.bytes = static_cast<int64_t>(std::filesystem::file_size(path));
  return s;
}

}  // namespace

ExportSummary export_fp(const nn::Model& model, bool keep_bn, const std::string& path) {
  std::map<std::string, std::string> meta{
      {"arch", model.arch}, {"quantized", "0"}, {"batchnorm", keep_bn ? "kept" : "folded"}};
  if (keep_bn) return write(model, nullptr, path, {.keep_bn = true, .meta = meta});
  nn::Model folded = model.clone();
  nn::fold_batchnorm(folded);
  return write(folded, nullptr, path, {.meta = meta});
}

ExportSummary export_quantized(const quant::QuantModel& qm, const std::string& path,
                               const QuantizedExportParams& params) {
  // A QuantModel is always the deployed model (hard rounding, every enabled point): modes that
  // quantize part of it or learn rounding exist only within a forward pass.
  const quant::QuantSettings& s = qm.settings;
  std::map<std::string, std::string> meta{
      {"arch", qm.model.arch},
      {"quantized", "1"},
      {"w_bits", std::to_string(s.w_bits)},
      {"a_bits", std::to_string(s.a_bits)},
      {"first_last_bits", std::to_string(s.first_last_bits)},
      {"input_bits", std::to_string(s.input_bits)},
      {"conv_bias", params.separate_conv_bias ? "separate" : "inline"}};
  return write(qm.model, &qm, path,
               {.separate_conv_bias = params.separate_conv_bias, .meta = meta});
}

std::string ops_line(const ExportSummary& s) {
  std::string out;
  for (const auto& [op, n] : s.ops) out += (out.empty() ? "" : ", ") + op + " " + std::to_string(n);
  return out;
}

}  // namespace brecq::onnx_export
