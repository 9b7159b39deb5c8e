#pragma once
// A quantized model as plain data: what the integer runtime executes and what a version-2 file
// (brecq-quantized-2) holds. The structure mirrors nn::Model (blocks of layers, shortcuts,
// activation-quantization points) with every quantizer explicit, but it depends on nothing but
// the standard library: no Tensor, no nn/, no autodiff.
//
// Conventions (those of the float simulation, quant::QuantModel):
//   - A point quantizes a tensor per tensor: q = clamp(nearbyint(x / scale) + zero_point, 0,
//     2^bits - 1) (rounding half to even), x^ = (q - zero_point) * scale.
//   - A layer's weight is quantized per output channel o: w^ = (level - zero_point[o]) * scale[o],
//     level in [0, 2^weight_bits - 1]. Levels are stored packed: see storage_bits / packed_level.
//   - Zero points are integers within ±2^20 (kMaxZeroPoint). Activation points need theirs on the
//     grid [0, 2^bits - 1] to run on integers (validate_integer); a weight channel whose values do
//     not straddle 0 gets an off-grid one from the range search, which the integer kernels handle.
//   - A layer computes linear part (+ bias), then its activation, then its point (if any).
//   - A block: optional global average pool, its layers in order, the residual add (shortcut),
//     out_activation, optional max pool, then out_point (if any). The head's last layer gives
//     the float logits.
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "brecq/config.hpp"

namespace brecq::runtime {

enum class LayerKind { conv, linear };
enum class Activation { none, relu, relu6 };
enum class ShortcutKind {
  none,        ///< no residual add
  identity,    ///< out = main(x) + x
  option_a,    ///< out = main(x) + zero-pad-channels(x[:, :, ::s, ::s], pad each side)
  projection,  ///< out = main(x) + shortcut_layers(x)
};
enum class BlockKind { stem, basic, bottleneck, inverted_residual, conv, head };

inline const char* layer_kind_name(LayerKind k) { return k == LayerKind::conv ? "conv" : "linear"; }
inline const char* activation_name(Activation a) {
  switch (a) {
    case Activation::none:
      return "none";
    case Activation::relu:
      return "relu";
    case Activation::relu6:
      return "relu6";
  }
  return "?";
}
inline const char* shortcut_kind_name(ShortcutKind k) {
  switch (k) {
    case ShortcutKind::none:
      return "none";
    case ShortcutKind::identity:
      return "identity";
    case ShortcutKind::option_a:
      return "option_a";
    case ShortcutKind::projection:
      return "projection";
  }
  return "?";
}
inline const char* block_kind_name(BlockKind k) {
  switch (k) {
    case BlockKind::stem:
      return "stem";
    case BlockKind::basic:
      return "basic";
    case BlockKind::bottleneck:
      return "bottleneck";
    case BlockKind::inverted_residual:
      return "inverted_residual";
    case BlockKind::conv:
      return "conv";
    case BlockKind::head:
      return "head";
  }
  return "?";
}

// ---- packed weight levels ---------------------------------------------------------------------

/// Bits each weight level occupies in memory and on disk: 2-bit levels four per byte, 3- and
/// 4-bit two per byte, 5..8-bit one per byte.
inline constexpr int storage_bits(int bits) { return bits <= 2 ? 2 : bits <= 4 ? 4 : 8; }

/// Bytes of `count` levels of `bits` bits packed densely (no padding between rows).
inline constexpr int64_t packed_size(int64_t count, int bits) {
  const int64_t per_byte = 8 / storage_bits(bits);
  return (count + per_byte - 1) / per_byte;
}

/// Level k of a packed array: element k sits in byte k / per_byte, LSB first (element k's bits
/// start at bit (k % per_byte) * storage_bits). Unused high bits of the last byte are zero.
inline uint8_t packed_level(const uint8_t* packed, int64_t k, int bits) {
  const int sb = storage_bits(bits), per_byte = 8 / sb;
  const int shift = static_cast<int>(k % per_byte) * sb;
  return static_cast<uint8_t>((packed[k / per_byte] >> shift) & ((1 << sb) - 1));
}

/// Packs count levels (each < 2^bits, unchecked) as packed_level reads them.
inline std::vector<uint8_t> pack_levels(const uint8_t* levels, int64_t count, int bits) {
  std::vector<uint8_t> out(static_cast<size_t>(packed_size(count, bits)), 0);
  const int sb = storage_bits(bits), per_byte = 8 / sb;
  for (int64_t k = 0; k < count; ++k)
    out[static_cast<size_t>(k / per_byte)] |=
        static_cast<uint8_t>(levels[k] << (static_cast<int>(k % per_byte) * sb));
  return out;
}

// ---- graph ------------------------------------------------------------------------------------

/// A per-tensor activation quantizer. Disabled points pass the float tensor through (the
/// simulation of a weight-only or FP-input model); the integer runtime needs them all enabled.
struct Point {
  int bits = 8;
  float scale = 1.0f;
  int32_t zero_point = 0;
  bool enabled = false;

  int32_t qmax() const { return (1 << bits) - 1; }
};

/// A conv or linear layer with its quantized weight.
struct Layer {
  std::string name;  ///< state-dict prefix, e.g. "layer1.0.conv1"
  LayerKind kind = LayerKind::conv;
  int64_t in_channels = 0;   ///< linear: input features
  int64_t out_channels = 0;  ///< linear: output features
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride = 1, padding = 0, dilation = 1, groups = 1;  ///< conv only; linear: 1, 0, 1, 1
  Activation activation = Activation::none;
  int act_point = -1;  ///< point after the activation, or -1 (output stays in float/int32)

  int weight_bits = 8;
  /// packed_size(weight_count(), weight_bits) bytes: levels in PyTorch order (conv OIHW,
  /// [out, in / groups, kh, kw]; linear [out, in]), see packed_level.
  std::vector<uint8_t> weight_levels{};
  std::vector<float> weight_scale{};         ///< [out_channels], > 0
  std::vector<int32_t> weight_zero_point{};  ///< [out_channels], see the conventions above
  std::vector<float> bias{};                 ///< [out_channels], or empty: no bias

  /// Weights feeding one output channel: in / groups * kh * kw.
  int64_t weights_per_output() const { return in_channels / groups * kernel_h * kernel_w; }
  int64_t weight_count() const { return out_channels * weights_per_output(); }
  /// Level of weight k (flat index in PyTorch order).
  uint8_t level(int64_t k) const { return packed_level(weight_levels.data(), k, weight_bits); }
  int32_t weight_qmax() const { return (1 << weight_bits) - 1; }
};

struct MaxPool {
  int64_t kernel = 3, stride = 2, padding = 1;
};

struct Block {
  std::string name;  ///< e.g. "layer2.0", "features.3"
  BlockKind kind = BlockKind::basic;
  int stage = 0;  ///< group of blocks between downsamplings (stem 0), as nn::Block::stage
  bool global_pool_before = false;  ///< [N,C,H,W] -> [N,C] (mean) before the layers
  std::vector<Layer> layers{};      ///< main path, in order
  ShortcutKind shortcut = ShortcutKind::none;
  std::vector<Layer> shortcut_layers{};          ///< projection only
  int64_t option_a_stride = 1;                   ///< option A: spatial subsampling
  int64_t option_a_pad = 0;                      ///< option A: zero channels added on each side
  Activation out_activation = Activation::none;  ///< after the residual add
  std::optional<MaxPool> max_pool_after{};       ///< ImageNet ResNet stem
  int out_point = -1;                            ///< point at the block output, or -1
};

/// How the model was built and how its images are prepared (as in nn::ModelOptions and
/// io::ImagePreprocess); preprocessing fields are empty / 0 where unknown.
struct ModelOptions {
  std::string arch;  ///< registry name, e.g. "resnet20_cifar"
  int64_t num_classes = 0;
  int64_t in_channels = 3;
  double width_mult = 1.0;
  int64_t base_width = 64;
  bool small_input_stem = false;
  std::string preprocess{};    ///< preset name ("cifar", "imagenet", "fashion_mnist") or empty
  int64_t resize_shorter = 0;  ///< 0: no resize
  int64_t center_crop = 0;     ///< 0: no crop
  std::vector<float> mean{};   ///< per input channel (of pixel / 255), or empty
  std::vector<float> std{};    ///< per input channel, or empty
  int64_t input_height = 0;    ///< image size the network sees, 0 if unknown
  int64_t input_width = 0;
};

/// Bit-widths the model was quantized with (informational: each layer and point has its own).
struct QuantInfo {
  int w_bits = 0;
  int a_bits = 0;
  int first_last_bits = 0;
  int input_bits = 0;
};

struct Graph {
  ModelOptions options;
  QuantInfo quant{};
  std::vector<Block> blocks{};  ///< stem first, head last
  std::vector<Point> points{};  ///< indexed by Layer::act_point, Block::out_point, input_point
  int input_point = -1;         ///< the image's quantizer, or -1 (FP input)

  std::vector<const Layer*> layers() const {
    std::vector<const Layer*> out;
    for (const Block& b : blocks) {
      for (const Layer& l : b.layers) out.push_back(&l);
      for (const Layer& l : b.shortcut_layers) out.push_back(&l);
    }
    return out;
  }
};

/// The point whose levels feed each layer, in Graph::layers() order: the block input's point for
/// a block's first main-path layer and for its shortcut layers (the previous block's out_point,
/// input_point for the first block), the previous layer's act_point otherwise; -1 where that
/// tensor is not quantized.
inline std::vector<int> layer_input_points(const Graph& g) {
  std::vector<int> out;
  int block_in = g.input_point;
  for (const Block& b : g.blocks) {
    int cur = block_in;
    for (const Layer& l : b.layers) {
      out.push_back(cur);
      cur = l.act_point;
    }
    for (size_t i = 0; i < b.shortcut_layers.size(); ++i)
      out.push_back(i == 0 ? block_in : b.shortcut_layers[i - 1].act_point);
    block_in = b.out_point;
  }
  return out;
}

/// A conv bias as the integer runtime adds it: on the int32 grid of its accumulator,
/// round(bias / (weight_scale * input_scale)) in double, ties away from zero.
inline int64_t bias_steps(float bias, float weight_scale, float input_scale) {
  return static_cast<int64_t>(
      std::round(static_cast<double>(bias) /
                 (static_cast<double>(weight_scale) * static_cast<double>(input_scale))));
}

// ---- shapes -----------------------------------------------------------------------------------

/// Activation shape of one image: [c, h, w]; h = w = 1 and flat = true after a global pool.
struct ActShape {
  int64_t c = 0, h = 0, w = 0;
  bool flat = false;
  bool operator==(const ActShape&) const = default;
};

inline int64_t conv_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t padding,
                                int64_t dilation) {
  return (in + 2 * padding - dilation * (kernel - 1) - 1) / stride + 1;
}

/// Output shape of l on input x; `what` names the graph in errors.
inline ActShape layer_output_shape(const Layer& l, const ActShape& x, const std::string& what) {
  check(x.c == l.in_channels, what, ": layer ", l.name, " expects ", l.in_channels,
        " input channels, gets ", x.c);
  if (l.kind == LayerKind::linear) {
    check(x.flat, what, ": linear layer ", l.name, " needs a pooled [N, C] input, gets [", x.c,
          ", ", x.h, ", ", x.w, "]");
    return {l.out_channels, 1, 1, true};
  }
  check(!x.flat, what, ": conv layer ", l.name, " after a global pool");
  const int64_t oh = conv_output_size(x.h, l.kernel_h, l.stride, l.padding, l.dilation);
  const int64_t ow = conv_output_size(x.w, l.kernel_w, l.stride, l.padding, l.dilation);
  check(oh >= 1 && ow >= 1, what, ": layer ", l.name, " maps ", x.h, "x", x.w, " to an empty ", oh,
        "x", ow, " output");
  return {l.out_channels, oh, ow, false};
}

/// Output shape of b on input x, checking the residual add's operands agree.
inline ActShape block_output_shape(const Block& b, const ActShape& x, const std::string& what) {
  ActShape y = x;
  if (b.global_pool_before) {
    check(!x.flat, what, ": block ", b.name, " pools an already pooled input");
    y = {x.c, 1, 1, true};
  }
  for (const Layer& l : b.layers) y = layer_output_shape(l, y, what);
  ActShape s = x;
  switch (b.shortcut) {
    case ShortcutKind::none:
      break;
    case ShortcutKind::identity:
      break;
    case ShortcutKind::option_a:
      check(!x.flat, what, ": block ", b.name, " has an option-A shortcut on a pooled input");
      s = {x.c + 2 * b.option_a_pad, (x.h - 1) / b.option_a_stride + 1,
           (x.w - 1) / b.option_a_stride + 1, false};
      break;
    case ShortcutKind::projection:
      for (const Layer& l : b.shortcut_layers) s = layer_output_shape(l, s, what);
      break;
  }
  if (b.shortcut != ShortcutKind::none)
    check(s == y, what, ": block ", b.name, " adds a ", shortcut_kind_name(b.shortcut),
          " shortcut of shape [", s.c, ", ", s.h, ", ", s.w, "] to a main path of shape [", y.c,
          ", ", y.h, ", ", y.w, "]");
  if (b.max_pool_after) {
    const MaxPool& p = *b.max_pool_after;
    check(!y.flat, what, ": block ", b.name, " max-pools a pooled tensor");
    y.h = conv_output_size(y.h, p.kernel, p.stride, p.padding, 1);
    y.w = conv_output_size(y.w, p.kernel, p.stride, p.padding, 1);
    check(y.h >= 1 && y.w >= 1, what, ": block ", b.name, "'s max pool gives an empty output");
  }
  return y;
}

/// Output shape of every block for an input image of h x w; throws if the graph cannot run on it.
inline std::vector<ActShape> block_output_shapes(const Graph& g, int64_t h, int64_t w,
                                                 const std::string& what) {
  check(h >= 1 && w >= 1, what, ": input size must be positive, got ", h, "x", w);
  std::vector<ActShape> out;
  ActShape x{g.options.in_channels, h, w, false};
  for (const Block& b : g.blocks) out.push_back(x = block_output_shape(b, x, what));
  return out;
}

// ---- validation -------------------------------------------------------------------------------

/// Bound on zero points in a graph (exact as float, far beyond any grid).
inline constexpr int32_t kMaxZeroPoint = 1 << 20;

namespace detail {
inline bool finite_positive(float v) { return std::isfinite(v) && v > 0.0f; }

inline void validate_point_ref(const Graph& g, int p, const std::string& what,
                               const std::string& who) {
  check(p >= -1 && p < static_cast<int>(g.points.size()), what, ": ", who, " refers to point ", p,
        ", the graph has ", g.points.size(), " points");
}

inline void validate_layer(const Graph& g, const Layer& l, const std::string& what) {
  const std::string who = "layer " + l.name;
  check(!l.name.empty(), what, ": a layer has no name");
  check(l.in_channels >= 1 && l.out_channels >= 1, what, ": ", who, " has ", l.in_channels, " -> ",
        l.out_channels, " channels");
  if (l.kind == LayerKind::linear) {
    check(l.kernel_h == 1 && l.kernel_w == 1 && l.stride == 1 && l.padding == 0 &&
              l.dilation == 1 && l.groups == 1,
          what, ": linear ", who,
          " must have kernel 1x1, stride 1, padding 0, dilation 1, groups 1");
  } else {
    check(l.kernel_h >= 1 && l.kernel_w >= 1 && l.kernel_h <= 64 && l.kernel_w <= 64, what, ": ",
          who, " has kernel ", l.kernel_h, "x", l.kernel_w, " (expected 1..64)");
    check(l.stride >= 1 && l.stride <= 64 && l.dilation >= 1 && l.dilation <= 64 &&
              l.padding >= 0 && l.padding <= 64,
          what, ": ", who, " has stride ", l.stride, ", padding ", l.padding, ", dilation ",
          l.dilation, " (expected stride, dilation 1..64, padding 0..64)");
    check(l.groups >= 1 && l.in_channels % l.groups == 0 && l.out_channels % l.groups == 0, what,
          ": ", who, " has ", l.groups, " groups for ", l.in_channels, " -> ", l.out_channels,
          " channels (both must be multiples)");
  }
  check(l.weight_bits >= 2 && l.weight_bits <= 8, what, ": ", who, " has ", l.weight_bits,
        "-bit weights (expected 2..8)");
  check(
      static_cast<int64_t>(l.weight_levels.size()) == packed_size(l.weight_count(), l.weight_bits),
      what, ": ", who, " needs ", packed_size(l.weight_count(), l.weight_bits), " bytes of packed ",
      l.weight_bits, "-bit levels for ", l.weight_count(), " weights, has ",
      l.weight_levels.size());
  const size_t oc = static_cast<size_t>(l.out_channels);
  check(l.weight_scale.size() == oc && l.weight_zero_point.size() == oc, what, ": ", who, " needs ",
        oc, " weight scales and zero points, has ", l.weight_scale.size(), " and ",
        l.weight_zero_point.size());
  check(l.bias.empty() || l.bias.size() == oc, what, ": ", who, " needs ", oc,
        " biases (or none), has ", l.bias.size());
  for (size_t o = 0; o < oc; ++o) {
    check(finite_positive(l.weight_scale[o]), what, ": ", who, " weight scale ", o, " is ",
          l.weight_scale[o], " (expected finite and > 0)");
    check(std::abs(l.weight_zero_point[o]) <= kMaxZeroPoint, what, ": ", who, " weight zero point ",
          o, " is ", l.weight_zero_point[o], " (expected an integer within ±", kMaxZeroPoint,
          "; 0..", l.weight_qmax(), " for ", l.weight_bits, " bits to run on integers)");
  }
  for (size_t o = 0; o < l.bias.size(); ++o)
    check(std::isfinite(l.bias[o]), what, ": ", who, " bias ", o, " is ", l.bias[o]);
  // Levels above 2^bits - 1 fit the storage width when bits is not a storage width (3, 5..7).
  if (storage_bits(l.weight_bits) != l.weight_bits)
    for (int64_t k = 0; k < l.weight_count(); ++k)
      check(l.level(k) <= l.weight_qmax(), what, ": ", who, " weight level ", k, " is ",
            static_cast<int>(l.level(k)), " (expected 0..", l.weight_qmax(), " for ", l.weight_bits,
            " bits)");
  // Padding bits after the last level are zero, so equal graphs have equal bytes.
  const int per_byte = 8 / storage_bits(l.weight_bits);
  const int64_t used = l.weight_count() % per_byte;
  if (used != 0)
    check((l.weight_levels.back() >> (used * storage_bits(l.weight_bits))) == 0, what, ": ", who,
          " has non-zero padding bits after its last weight level");
  validate_point_ref(g, l.act_point, what, who);
}
}  // namespace detail

/// Checks every field and reference of g (shapes on options.input_height x input_width when
/// known); `what` names the graph (e.g. the file) in the error.
inline void validate(const Graph& g, const std::string& what) {
  const ModelOptions& o = g.options;
  check(!o.arch.empty(), what, ": model options lack the architecture name");
  check(o.num_classes >= 1 && o.in_channels >= 1, what, ": model has ", o.num_classes,
        " classes and ", o.in_channels, " input channels (expected >= 1)");
  check(std::isfinite(o.width_mult) && o.width_mult > 0 && o.base_width >= 1, what, ": width_mult ",
        o.width_mult, " and base_width ", o.base_width, " must be positive");
  check(o.mean.empty() || static_cast<int64_t>(o.mean.size()) == o.in_channels, what, ": ",
        o.mean.size(), " mean values for ", o.in_channels, " input channels");
  check(o.std.size() == o.mean.size(), what, ": ", o.std.size(), " std values for ", o.mean.size(),
        " mean values");
  for (size_t c = 0; c < o.std.size(); ++c)
    check(std::isfinite(o.mean[c]) && detail::finite_positive(o.std[c]), what,
          ": preprocessing mean/std of channel ", c, " are ", o.mean[c], "/", o.std[c],
          " (expected finite, std > 0)");
  check(o.resize_shorter >= 0 && o.center_crop >= 0 && o.input_height >= 0 && o.input_width >= 0,
        what, ": preprocessing sizes must be >= 0");

  for (size_t p = 0; p < g.points.size(); ++p) {
    const Point& pt = g.points[p];
    if (!pt.enabled) continue;
    check(pt.bits >= 2 && pt.bits <= 8, what, ": point ", p, " has ", pt.bits,
          " bits (expected 2..8)");
    check(detail::finite_positive(pt.scale), what, ": point ", p, " has scale ", pt.scale,
          " (expected finite and > 0)");
    check(std::abs(pt.zero_point) <= kMaxZeroPoint, what, ": point ", p, " has zero point ",
          pt.zero_point, " (expected an integer within ±", kMaxZeroPoint, "; 0..", pt.qmax(),
          " for ", pt.bits, " bits to run on integers)");
  }
  detail::validate_point_ref(g, g.input_point, what, "the input");

  check(g.blocks.size() >= 2, what, ": expected a stem and a head block, got ", g.blocks.size(),
        " blocks");
  check(g.blocks.back().kind == BlockKind::head, what, ": the last block ", g.blocks.back().name,
        " is a ", block_kind_name(g.blocks.back().kind), " block, expected the head");
  std::set<std::string> layer_names;
  for (const Layer* l : g.layers())
    check(layer_names.insert(l->name).second, what, ": two layers are named '", l->name, "'");
  std::vector<int> uses(g.points.size(), 0);
  auto use = [&](int p) {
    if (p >= 0) ++uses[static_cast<size_t>(p)];
  };
  use(g.input_point);
  for (size_t bi = 0; bi < g.blocks.size(); ++bi) {
    const Block& b = g.blocks[bi];
    const std::string who = "block " + b.name;
    check(!b.name.empty(), what, ": block ", bi, " has no name");
    check(!b.layers.empty(), what, ": ", who, " has no layers");
    check(b.kind != BlockKind::head || bi + 1 == g.blocks.size(), what, ": ", who,
          " is a head block before the last block");
    check((b.shortcut == ShortcutKind::projection) == !b.shortcut_layers.empty(), what, ": ", who,
          " has a ", shortcut_kind_name(b.shortcut), " shortcut with ", b.shortcut_layers.size(),
          " shortcut layers");
    if (b.shortcut == ShortcutKind::option_a)
      check(b.option_a_stride >= 1 && b.option_a_pad >= 0, what, ": ", who, " has option-A stride ",
            b.option_a_stride, " and pad ", b.option_a_pad);
    if (b.max_pool_after) {
      const MaxPool& p = *b.max_pool_after;
      check(p.kernel >= 1 && p.stride >= 1 && p.padding >= 0 && 2 * p.padding <= p.kernel, what,
            ": ", who, " has max pool kernel ", p.kernel, ", stride ", p.stride, ", padding ",
            p.padding);
    }
    for (const Layer& l : b.layers) detail::validate_layer(g, l, what);
    for (const Layer& l : b.shortcut_layers) {
      detail::validate_layer(g, l, what);
      check(l.act_point == -1, what, ": shortcut layer ", l.name,
            " has a point; the residual add takes its unquantized output");
    }
    for (size_t i = 0; i < b.layers.size(); ++i) use(b.layers[i].act_point);
    detail::validate_point_ref(g, b.out_point, what, who);
    use(b.out_point);
  }
  for (size_t p = 0; p < uses.size(); ++p)
    check(uses[p] <= 1, what, ": point ", p, " is used ", uses[p], " times");
  check(g.blocks.back().layers.back().out_channels == o.num_classes, what, ": the head gives ",
        g.blocks.back().layers.back().out_channels, " outputs for ", o.num_classes, " classes");

  // Channel (and, with a known input size, spatial) consistency of the whole chain.
  const int64_t h = o.input_height > 0 ? o.input_height : 224;
  const int64_t w = o.input_width > 0 ? o.input_width : 224;
  const std::vector<ActShape> shapes = block_output_shapes(g, h, w, what);
  check(shapes.back().flat, what, ": the head does not pool to [N, ", o.num_classes, "]");
}

/// Checks that g runs on integers only: the input and every tensor between layers and blocks is
/// quantized (enabled points), the head ends in a linear layer without point.
inline void validate_integer(const Graph& g, const std::string& what) {
  auto need = [&](int p, const std::string& who) {
    check(
        p >= 0 && p < static_cast<int>(g.points.size()) && g.points[static_cast<size_t>(p)].enabled,
        what, ": ", who,
        " is not quantized (float activation); the integer runtime needs every activation "
        "quantized: requantize with activation bits (--a-bits) and --input-bits 8");
  };
  check(g.input_point >= 0 && g.points.at(static_cast<size_t>(g.input_point)).enabled, what,
        ": the model has a float input (quantized without an input quantizer); requantize with "
        "--input-bits 8 for the integer runtime");
  for (size_t bi = 0; bi < g.blocks.size(); ++bi) {
    const Block& b = g.blocks[bi];
    for (size_t i = 0; i + 1 < b.layers.size(); ++i)
      need(b.layers[i].act_point, "the output of layer " + b.layers[i].name);
    if (bi + 1 < g.blocks.size()) need(b.out_point, "the output of block " + b.name);
  }
  for (size_t p = 0; p < g.points.size(); ++p) {
    const Point& pt = g.points[p];
    check(!pt.enabled || (pt.zero_point >= 0 && pt.zero_point <= pt.qmax()), what, ": point ", p,
          " has zero point ", pt.zero_point, " off its ", pt.bits, "-bit grid 0..", pt.qmax(),
          "; the integer runtime needs zero points on the grid");
  }
  const Block& head = g.blocks.back();
  check(head.out_point == -1 && head.layers.back().act_point == -1 &&
            head.layers.back().kind == LayerKind::linear,
        what, ": the head must end in a linear layer with float logits");
}

}  // namespace brecq::runtime
