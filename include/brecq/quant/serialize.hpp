#pragma once
// Saving and loading quantized models (safetensors): integer weight levels, per-channel scales
// and zero points, biases, activation quantizers and bit-widths, with the architecture in the
// metadata, so `brecq eval --quantized FILE` rebuilds the fake-quantized model from this file
// alone. Checkpoints for resuming a reconstruction add the learned rounding logits.
#include <algorithm>
#include <cmath>
#include <string>

#include "brecq/io/safetensors.hpp"
#include "brecq/nn/models.hpp"
#include "brecq/quant/qmodel.hpp"

namespace brecq::quant {

inline constexpr const char* kQuantizedFormat = "brecq-quantized-1";

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
/// The file at path, checked to be a quantized model written by save_quantized.
inline SafetensorsFile open_quantized(const std::string& path) {
  SafetensorsFile f(path);
  auto fmt = f.metadata().find("format");
  check(fmt != f.metadata().end() && fmt->second == kQuantizedFormat, "quantized model '", path,
        "': not a brecq quantized model (metadata format should be ", kQuantizedFormat, ")");
  return f;
}

/// Every layer's weight quantizer and hard rounding from f. take_bits: bit-widths come from the
/// file; otherwise they must equal qm's.
inline void read_weight_rounding(QuantModel& qm, const SafetensorsFile& f, bool take_bits) {
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
}  // namespace detail

/// Tensors describing the quantized state (hard weights as integer levels).
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

/// Writes the quantized model; `options` are those the architecture was built with.
inline void save_quantized(const QuantModel& qm, const nn::ModelOptions& options,
                           const std::string& path,
                           std::map<std::string, std::string> metadata = {}) {
  metadata["format"] = kQuantizedFormat;
  metadata["arch"] = qm.model.arch;
  metadata["num_classes"] = std::to_string(qm.model.num_classes);
  metadata["in_channels"] = std::to_string(qm.model.in_channels);
  metadata["width_mult_x1000"] =
      std::to_string(static_cast<int64_t>(options.width_mult * 1000 + 0.5));
  metadata["small_input_stem"] = options.small_input_stem ? "1" : "0";
  metadata["base_width"] = std::to_string(options.base_width);
  metadata["w_bits"] = std::to_string(qm.settings.w_bits);
  metadata["a_bits"] = std::to_string(qm.settings.a_bits);
  metadata["first_last_bits"] = std::to_string(qm.settings.first_last_bits);
  metadata["input_bits"] = std::to_string(qm.settings.input_bits);
  save_safetensors(path, quantized_tensors(qm), {.metadata = metadata});
}

/// Installs the learned weight rounding (quantizers and integer levels) of a file written by
/// save_quantized into qm, which must hold the same architecture, FP weights and weight bit-widths:
/// e.g. to rerun the activation part of BRECQ on weights learned before.
inline void load_weight_rounding(QuantModel& qm, const std::string& path) {
  const SafetensorsFile f = detail::open_quantized(path);
  auto arch = f.metadata().find("arch");
  check(arch != f.metadata().end() && arch->second == qm.model.arch, "quantized model '", path,
        "': holds a ", arch == f.metadata().end() ? std::string("(no arch)") : arch->second,
        ", expected ", qm.model.arch);
  for (const nn::Layer* l : qm.model.layers()) {
    // The folded biases identify the FP weights the rounding was learned on.
    const std::string b = l->name + ".bias";
    check(l->bias.defined() == f.contains(b), "quantized model '", path, "': layer ", l->name,
          l->bias.defined() ? " lacks its bias" : " has a bias the model lacks");
    if (!l->bias.defined()) continue;
    const Tensor fb = f.to_f32(b);
    check(fb.shape() == l->bias.shape(), "quantized model '", path, "': ", b, " has shape ",
          fb.shape(), ", expected ", l->bias.shape());
    float diff = 0.0f;
    for (int64_t i = 0; i < fb.numel(); ++i)
      diff = std::max(diff, std::abs(fb.data<float>()[i] - l->bias.data<float>()[i]));
    check(diff <= 1e-5f, "quantized model '", path, "': ", b, " differs from the model's by ", diff,
          " (was it made from other FP weights?)");
  }
  detail::read_weight_rounding(qm, f, /*take_bits=*/false);
}

/// Rebuilds a fake-quantized model from a file written by save_quantized.
inline QuantModel load_quantized(const std::string& path) {
  const SafetensorsFile f = detail::open_quantized(path);
  auto arch = f.metadata().find("arch");
  check(arch != f.metadata().end(), "quantized model '", path, "': metadata lacks 'arch'");
  nn::ModelOptions o{
      .num_classes = detail::meta_int(f, "num_classes"),
      .in_channels = detail::meta_int(f, "in_channels"),
      .width_mult = static_cast<double>(detail::meta_int(f, "width_mult_x1000")) / 1000.0,
      .small_input_stem = detail::meta_int(f, "small_input_stem") != 0,
      .base_width = f.metadata().count("base_width") ? detail::meta_int(f, "base_width") : 64};
  nn::Model m = nn::make_model(arch->second, o);
  for (nn::Layer* l : m.layers()) {
    l->bn.reset();
    const std::string b = l->name + ".bias";
    if (f.contains(b))
      l->bias = f.to_f32(b);
    else
      l->bias = Tensor();
  }
  QuantSettings s{.w_bits = static_cast<int>(detail::meta_int(f, "w_bits")),
                  .a_bits = static_cast<int>(detail::meta_int(f, "a_bits")),
                  .first_last_bits = static_cast<int>(detail::meta_int(f, "first_last_bits")),
                  // files from before the input quantizer have an FP input
                  .input_bits = f.metadata().count("input_bits")
                                    ? static_cast<int>(detail::meta_int(f, "input_bits"))
                                    : 0};
  QuantModel qm(std::move(m), s, /*init_weight_ranges=*/false);
  detail::read_weight_rounding(qm, f, /*take_bits=*/true);
  for (nn::Layer* l : qm.model.layers()) l->weight = qm.quantized_weight(*l);
  for (size_t p = 0; p < qm.act_q.size(); ++p) {
    const std::string n = detail::act_name(static_cast<int>(p));
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

}  // namespace brecq::quant
