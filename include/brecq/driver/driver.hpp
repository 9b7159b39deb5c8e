#pragma once
// What every program that quantizes or evaluates a model does (the `brecq` subcommands, the
// examples, the benchmarks), written once: the model built from a weights file with the options
// the file implies, the preprocessing choice, and streaming evaluation of the FP model, of
// round-to-nearest and of a quantized model (weights only, or weights and activations), with
// progress through one quant::ProgressSink.
//
//   driver::LoadedModel m = driver::load_model("resnet20_cifar", "resnet20.safetensors");
//   const LabeledImages val(dir, driver::preprocess_for("auto", m.model.arch));
//   nn::Accuracy a = driver::evaluate(driver::fp_forward(m.model), val, {.label = "FP"});
#include <cstdlib>
#include <string>

#include "brecq/io/dataset.hpp"
#include "brecq/nn/evaluate.hpp"
#include "brecq/nn/load.hpp"
#include "brecq/nn/models.hpp"
#include "brecq/quant/progress.hpp"
#include "brecq/quant/qmodel.hpp"

namespace brecq::driver {

/// A model with its weights and the options it was built with (for save_quantized).
struct LoadedModel {
  nn::Model model;
  nn::ModelOptions options;
};

/// `arch` built with the classes (classifier rows), input channels (stem) and, for
/// resnet18_cifar, base width (stem rows) of the state dict in the safetensors file at `path`,
/// and with the width_mult and small_input_stem its metadata records (where `arch` has them),
/// which is then loaded strictly. num_classes > 0 overrides the file's (and must agree with it).
inline LoadedModel load_model(const std::string& arch, const std::string& path,
                              int64_t num_classes = 0) {
  const SafetensorsFile file(path);
  const nn::Model plain = nn::make_model(arch);
  const std::string head = plain.blocks.back().layers.at(0).name + ".weight";
  const std::string stem = plain.blocks.front().layers.at(0).name + ".weight";
  for (const std::string& t : {head, stem})
    check(file.contains(t), "weights file '", path, "' has no tensor '", t, "' for ", arch,
          " (is it the right model?)");
  const std::vector<int64_t>& w0 = file.info(stem).shape;  // [out, in, kh, kw]
  check(w0.size() == 4, "weights file '", path, "': ", stem, " should be 4-D, got ", w0.size(),
        " dimensions");
  nn::ModelOptions o{.num_classes = num_classes > 0 ? num_classes : file.info(head).shape.at(0),
                     .in_channels = w0[1]};
  const nn::ModelInfo& info = nn::model_info(arch);
  if (info.has_base_width) o.base_width = w0[0];
  // What the tensor shapes cannot tell: the width multiplier (rounded channel counts) and the
  // strides, recorded by programs that train such models (train_fashion_mnist).
  const auto& meta = file.metadata();
  if (auto it = meta.find("width_mult"); info.has_width_mult && it != meta.end()) {
    char* end = nullptr;
    o.width_mult = std::strtod(it->second.c_str(), &end);
    check(end != it->second.c_str() && *end == '\0' && o.width_mult > 0, "weights file '", path,
          "': metadata width_mult expected a number > 0, got '", it->second, "'");
  }
  if (auto it = meta.find("small_input_stem"); info.has_small_input_stem && it != meta.end()) {
    check(it->second == "0" || it->second == "1", "weights file '", path,
          "': metadata small_input_stem expected 0 or 1, got '", it->second, "'");
    o.small_input_stem = it->second == "1";
  }
  LoadedModel m{nn::make_model(arch, o), o};
  nn::load_weights(m.model, file);
  return m;
}

/// The preprocessing `choice` names: imagenet, cifar, or for auto the one `arch` expects.
inline std::string preprocess_name(const std::string& choice, const std::string& arch) {
  const std::string c = choice == "auto" ? std::string(nn::model_info(arch).preprocess) : choice;
  check(c == "cifar" || c == "imagenet", "preprocessing: expected imagenet, cifar or auto, got '",
        choice, "'");
  return c;
}
inline ImagePreprocess preprocess_for(const std::string& choice, const std::string& arch) {
  return preprocess_name(choice, arch) == "cifar" ? ImagePreprocess::cifar()
                                                  : ImagePreprocess::imagenet();
}

struct EvalParams {
  int64_t batch = 100;
  int64_t limit = 0;       ///< first `limit` images only (0 = all)
  std::string label = "";  ///< progress label, e.g. "FP"; "" = no progress bar
  quant::ProgressSink progress = quant::terminal_progress();  ///< {} = no progress
};

/// Accuracy of `forward` on a dataset streamed batch by batch (never held in memory at once).
template <LabeledDataset D>
inline nn::Accuracy evaluate(const nn::ForwardFn& forward, const D& ds, const EvalParams& p = {}) {
  const int64_t n = p.limit > 0 ? std::min<int64_t>(p.limit, ds.size()) : ds.size();
  quant::ProgressBar bar("[eval " + p.label + "]", n, p.label.empty() ? nullptr : p.progress);
  int64_t done = 0;
  const nn::Accuracy a = nn::evaluate(
      [&](const Tensor& x) {
        Tensor y = forward(x);
        bar.update(done += x.dim(0), "");
        return y;
      },
      ds, {.batch = p.batch, .limit = p.limit});
  bar.finish();
  return a;
}

/// The FP model.
inline nn::ForwardFn fp_forward(const nn::Model& m) {
  return [&m](const Tensor& x) { return m.forward(x); };
}
/// A quantized model in a mode: ForwardMode::weights_only(), or the default (deployed: weights
/// and activations; round-to-nearest before reconstruction).
inline nn::ForwardFn quantized_forward(const quant::QuantModel& qm,
                                       const quant::ForwardMode& mode = {}) {
  return [&qm, mode](const Tensor& x) { return qm.forward(x, mode); };
}

/// "top-1  xx.xx %  top-5  xx.xx %  (n images)" after a left-aligned label of `width`.
inline std::string accuracy_line(const std::string& what, const nn::Accuracy& a, int width = 24) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "%-*s top-1 %6.2f %%  top-5 %6.2f %%  (%lld images)", width,
                what.c_str(), a.top1_percent(), a.top5_percent(), static_cast<long long>(a.images));
  return buf;
}

}  // namespace brecq::driver
