// brecq export: writes a model as ONNX (FP, BatchNorm folded or kept, or a quantized model in the
// QDQ form), and optionally reference data for checking it in another runtime: brecq's own
// preprocessed input batch, its labels and brecq's logits, as raw little-endian files, so that a
// runtime fed these exact floats can be compared with brecq logit for logit, without JPEG
// decoding or resizing differences.
//
// Built with ONNX support only when libonnx and libprotobuf were found at configure time
// (BRECQ_WITH_ONNX); otherwise the subcommand exists and says how to get it.
#include <cstdio>
#include <fstream>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include "args.hpp"
#include "brecq/io/dataset.hpp"
#include "brecq/nn/evaluate.hpp"
#include "brecq/nn/load.hpp"
#include "brecq/nn/models.hpp"
#include "brecq/quant/serialize.hpp"
#include "quant_flags.hpp"
#ifdef BRECQ_WITH_ONNX
#include "../onnx/onnx_export.hpp"
#endif

namespace {

using namespace brecq;

/// Appends n floats / ints to a raw little-endian file.
template <class T>
void append_raw(std::ofstream& f, const T* p, int64_t n, const std::string& path) {
  f.write(reinterpret_cast<const char*>(p), static_cast<std::streamsize>(n * sizeof(T)));
  check(f.good(), "brecq export: writing '", path, "' failed");
}

struct ReferenceParams {
  std::string data;  ///< labelled image folder
  std::string prefix;
  ImagePreprocess preprocess{};
  std::string preprocess_name;
  int64_t limit = 0;
  int64_t batch = 100;
};
#ifdef BRECQ_WITH_ONNX  // the reference files go with an exported model

/// Writes PREFIX.input.f32 [N, C, H, W], PREFIX.labels.i32 [N], PREFIX.logits.f32 [N, K] and
/// PREFIX.json (shapes, brecq's top-1) for the first `limit` images of the folder.
void write_reference(const nn::ForwardFn& forward, int64_t num_classes, const ReferenceParams& p) {
  const LabeledImages ds(p.data, p.preprocess);
  check(ds.max_label() < num_classes, "--reference-data folder '", p.data, "' has class index ",
        ds.max_label(), " but the model has only ", num_classes, " outputs");
  const int64_t n = p.limit > 0 ? std::min(p.limit, ds.size()) : ds.size();
  const std::string in_path = p.prefix + ".input.f32", lab_path = p.prefix + ".labels.i32",
                    log_path = p.prefix + ".logits.f32";
  std::ofstream fin(in_path, std::ios::binary), flab(lab_path, std::ios::binary),
      flog(log_path, std::ios::binary);
  check(fin.is_open() && flab.is_open() && flog.is_open(), "brecq export: cannot write '", p.prefix,
        ".*' (does the folder exist?)");
  NoGrad ng;
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), int64_t{0});
  Shape image_shape;
  nn::Accuracy acc;
  for (int64_t b = 0; b < n; b += p.batch) {
    const int64_t m = std::min(p.batch, n - b);
    const Batch x = gather(ds, std::span<const int64_t>(idx.data() + b, static_cast<size_t>(m)));
    if (b == 0) image_shape = x.images.shape();
    const Tensor logits = forward(x.images).contiguous();
    nn::score(logits, x.labels, acc);
    append_raw(fin, x.images.contiguous().data<float>(), x.images.numel(), in_path);
    append_raw(flab, x.labels.data(), m, lab_path);
    append_raw(flog, logits.data<float>(), logits.numel(), log_path);
  }
  const std::string json_path = p.prefix + ".json";
  std::ofstream fj(json_path);
  check(fj.is_open(), "brecq export: cannot write '", json_path, "'");
  fj << "{\"images\": " << n << ", \"input_shape\": [" << n << ", " << image_shape[1] << ", "
     << image_shape[2] << ", " << image_shape[3] << "], \"num_classes\": " << num_classes
     << ", \"data\": " << cli::json_quote(p.data)
     << ", \"preprocess\": " << cli::json_quote(p.preprocess_name)
     << ", \"brecq_top1_correct\": " << acc.top1 << "}\n";
  check(fj.good(), "brecq export: writing '", json_path, "' failed");
  std::printf(
      "reference   %lld images -> %s.{input.f32,labels.i32,logits.f32,json}; brecq top-1 "
      "%.2f %%\n",
      static_cast<long long>(n), p.prefix.c_str(), acc.top1_percent());
}
#endif  // BRECQ_WITH_ONNX

int run(const std::vector<std::string>& argv) {
  cli::Args args(
      "export",
      "Writes a model as ONNX (opset 13). FP models (--model/--weights) with BatchNorm folded\n"
      "(default) or kept; quantized models (--quantized, from `brecq quantize`) in the QDQ form:\n"
      "uint8 weight levels with per-channel DequantizeLinear, QuantizeLinear/DequantizeLinear at\n"
      "each activation point brecq quantizes. --reference-data also writes brecq's preprocessed\n"
      "input, labels and logits for those images (raw float32/int32) to compare another runtime\n"
      "with (tools/ort/run.js). Models: " +
          nn::model_names_list() + ".",
      {{.name = "--model", .value_name = "MODEL", .help = "architecture (with --weights)"},
       {.name = "--weights", .value_name = "FILE", .help = "FP safetensors weights"},
       {.name = "--num-classes",
        .value_name = "N",
        .help = "classifier outputs (default: read from the weights file)"},
       {.name = "--quantized",
        .value_name = "FILE",
        .help = "a quantized model written by `brecq quantize` (instead of --model/--weights)"},
       {.name = "--format", .value_name = "onnx", .help = "output format", .required = true},
       {.name = "--fold-bn", .help = "FP models: fold BatchNorm into the convolutions (default)"},
       {.name = "--keep-bn", .help = "FP models: keep BatchNorm as BatchNormalization nodes"},
       {.name = "--conv-bias",
        .value_name = "separate|inline",
        .help = "quantized models: conv biases in an Add after the Conv (ONNX Runtime computes "
                "brecq's float bias exactly) or inline (ONNX Runtime rounds them to int32 and "
                "may fuse 8-bit convs into QLinearConv: faster, not bit-faithful)",
        .default_value = "separate"},
       {.name = "--out", .value_name = "FILE", .help = "the .onnx file to write", .required = true},
       {.name = "--reference-data",
        .value_name = "DIR",
        .help = "labelled image folder to write reference data for"},
       {.name = "--reference-out",
        .value_name = "PREFIX",
        .help = "reference files' prefix (default: --out without .onnx)"},
       {.name = "--limit",
        .value_name = "N",
        .help = "reference data for the first N images only (0 = all)",
        .default_value = "0"},
       {.name = "--batch",
        .value_name = "N",
        .help = "images per forward pass for the reference logits",
        .default_value = "100"},
       cli::preprocess_flag("input preset of the reference data; auto = the model's own")});
  if (!args.parse(argv)) return 0;
  args.get_choice("--format", {"onnx"});
  const bool quantized = args.has("--quantized");
  if (quantized && (args.has("--model") || args.has("--weights") || args.has("--num-classes")))
    args.fail("flag --quantized replaces --model, --weights and --num-classes; got both");
  if (!quantized && !(args.has("--model") && args.has("--weights")))
    args.fail("expected --model MODEL and --weights FILE, or --quantized FILE");
  if (args.has("--fold-bn") && args.has("--keep-bn"))
    args.fail("flags --fold-bn and --keep-bn exclude each other; got both");
  if (quantized && args.has("--keep-bn"))
    args.fail("flag --keep-bn is for FP models: a quantized model's BatchNorm is folded");
  if (!quantized && args.has("--conv-bias"))
    args.fail("flag --conv-bias is for quantized models (--quantized FILE)");
  const bool separate_bias = args.get_choice("--conv-bias", {"separate", "inline"}) == "separate";
  if (!args.has("--reference-data") && (args.has("--reference-out") || args.has("--limit")))
    args.fail("flags --reference-out and --limit need --reference-data DIR");
  const std::string out = args.get("--out");
  const std::string weights = args.get_file(quantized ? "--quantized" : "--weights");
  const int64_t limit = args.get_int("--limit", 0);
  const int64_t batch = args.get_int("--batch", 1);
  std::optional<std::string> ref_data;
  if (args.has("--reference-data")) ref_data = args.get_dir("--reference-data");
  std::string preprocess = args.get_choice("--preprocess", {"imagenet", "cifar", "auto"});
  const std::string model_arg = quantized ? "" : args.get_choice("--model", nn::model_names());
#ifndef BRECQ_WITH_ONNX
  (void)out, (void)separate_bias, (void)limit, (void)batch, (void)weights, (void)ref_data,
      (void)preprocess, (void)model_arg;
  fail(
      "this brecq was built without ONNX export: install libonnx-dev and libprotobuf-dev "
      "(Debian: apt-get install libonnx-dev libprotobuf-dev protobuf-compiler) and reconfigure "
      "(cmake -S . -B build)");
#else
  std::optional<quant::QuantModel> qm;
  nn::Model model;
  onnx_export::ExportSummary s;
  if (quantized) {
    qm.emplace(quant::load_quantized(weights));
    s = onnx_export::export_quantized(*qm, out, {.separate_conv_bias = separate_bias});
  } else {
    const SafetensorsFile file(weights);
    int64_t classes = 0;
    if (args.has("--num-classes")) {
      classes = args.get_int("--num-classes", 1);
    } else {
      const std::string head =
          nn::make_model(model_arg).blocks.back().layers.at(0).name + ".weight";
      check(file.contains(head), "weights file '", weights, "' has no classifier tensor '", head,
            "' for ", model_arg, " (is it the right --model?)");
      classes = file.info(head).shape.at(0);
    }
    model = nn::make_model(model_arg, {.num_classes = classes});
    nn::load_weights(model, file);
    s = onnx_export::export_fp(model, args.has("--keep-bn"), out);
  }
  const nn::Model& m = qm ? qm->model : model;
  std::printf("model       %s (%lld classes), %s %s\n", m.arch.c_str(),
              static_cast<long long>(m.num_classes), quantized ? "quantized" : "FP",
              weights.c_str());
  std::printf("onnx        %s (%lld bytes, opset %d)\n", out.c_str(),
              static_cast<long long>(s.bytes), onnx_export::kOpset);
  std::printf("nodes       %s\n", onnx_export::ops_line(s).c_str());
  if (quantized)
    std::printf(
        "quantized   %d weights as integer levels, %d activation points (%d with a grid "
        "Clip)\n",
        s.quantized_weights, s.activation_points, s.grid_clips);
  if (ref_data) {
    if (preprocess == "auto") preprocess = std::string(nn::model_info(m.arch).preprocess);
    std::string prefix = args.has("--reference-out") ? args.get("--reference-out") : out;
    if (!args.has("--reference-out") && prefix.ends_with(".onnx")) prefix.resize(prefix.size() - 5);
    const nn::ForwardFn forward = [&](const Tensor& x) {
      return qm ? qm->forward(x) : model.forward(x);
    };
    write_reference(forward, m.num_classes,
                    {.data = *ref_data,
                     .prefix = prefix,
                     .preprocess = preprocess == "cifar" ? ImagePreprocess::cifar()
                                                         : ImagePreprocess::imagenet(),
                     .preprocess_name = preprocess,
                     .limit = limit,
                     .batch = batch});
  }
  return 0;
#endif
}

[[maybe_unused]] const bool registered = cli::register_subcommand(
    {"export", "writes an FP or quantized model as ONNX (QDQ form for quantized models)", run});

}  // namespace
