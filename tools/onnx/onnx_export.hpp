#pragma once
// ONNX export of brecq models, written through the ONNX project's own protobuf schema
// (onnx/onnx-ml.pb.h) and libprotobuf. Part of the `brecq` program and its tests only: the
// header-only library does not depend on ONNX or protobuf.
//
// FP models become Conv / Gemm graphs (BatchNorm folded or kept as BatchNormalization).
// Quantized models become the QDQ form: every weight is a uint8 initializer of its integer levels
// with a per-channel DequantizeLinear (axis 0, brecq's scales and zero points), every enabled
// activation point a QuantizeLinear / DequantizeLinear pair with brecq's scale and zero point,
// exactly where brecq quantizes (nn::Model::forward_block) and nowhere else. Opset 13.
#include <map>
#include <string>

#include "brecq/nn/model.hpp"
#include "brecq/quant/qmodel.hpp"

namespace brecq::onnx_export {

inline constexpr int kOpset = 13;

/// What was written: node count by op type and the quantization content.
struct ExportSummary {
  std::map<std::string, int> ops;  ///< op type -> nodes
  int activation_points = 0;       ///< QuantizeLinear/DequantizeLinear pairs on activations
  int grid_clips = 0;              ///< Clips restricting a < 8-bit point to its grid
  int quantized_weights = 0;       ///< weights stored as integer levels
  int64_t bytes = 0;               ///< size of the file
};

/// Exports an FP model (not modified): BatchNorm kept as BatchNormalization nodes (keep_bn) or
/// folded into the convolutions as quant::QuantModel folds it. Input "input" [N, C, H, W] float,
/// output "logits" [N, classes].
ExportSummary export_fp(const nn::Model& model, bool keep_bn, const std::string& path);

struct QuantizedExportParams {
  /// Conv biases in an Add after the Conv (default): ONNX Runtime then computes exactly brecq's
  /// float bias. false: the bias is the Conv's third input, which ONNX Runtime rounds to int32
  /// at scale s_x * s_w and, for 8-bit points right after the Conv (ReLU aside), fuses with the
  /// DequantizeLinear / QuantizeLinear around it into its integer QLinearConv: faster, but no
  /// longer brecq's arithmetic.
  bool separate_conv_bias = true;
};

/// Exports a quantized model in the QDQ form; computes what qm.forward computes. qm must be in
/// its inference state (no layer learning its rounding, nothing quantized only up to a unit).
ExportSummary export_quantized(const quant::QuantModel& qm, const std::string& path,
                               const QuantizedExportParams& params = {});

/// "Conv 20, Relu 19, ..." (for messages).
std::string ops_line(const ExportSummary& s);

}  // namespace brecq::onnx_export
