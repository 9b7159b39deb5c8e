#pragma once
// Weights of one conv (or linear) layer packed once, at load, into the layout of the kernel that
// runs it. The source is the densely bit-packed level array of the quantized file (PyTorch OIHW
// order, four 2-bit or two 3/4-bit levels per byte, one 5..8-bit level per byte, LSB first);
// levels are unpacked while they are written into the panels, never into a full-size copy.
//
// Activations are NHWC u8 levels with a per-tensor zero point zx; a conv is a GEMM over
// K = kh * kw * in_channels / groups in tap order k = (kh_i * kw + kw_i) * cin_g + ci, and padded
// taps hold zx, so they contribute exactly 0 to sum (wq - zw)(xq - zx).
//
// Exact asymmetric weights (per-channel zero point zw). The s8 operand is w8 = level - offset with
// offset = zw for bits <= 7 (|w8| <= 127; an off-grid zw, which the range search gives a channel
// whose weights do not straddle 0, is clamped into [0, 2^bits - 1]) and offset = 128 for 8-bit
// weights (w8 in -128..127):
//   acc_true = sum_k w8 * xq + (offset - zw) * colsum(xq) - zx * rowsum,  rowsum = sum_k (wq - zw)
// The packed layer keeps col_coef = offset - zw (zero below 8 bits with on-grid zero points: no
// column sums needed) and channel_offset = bias - zx * rowsum: one constant per channel.
//
// Layouts (PackedConv::layout):
//   ref        int32 (wq - zw) as [out][K]; channel_offset = bias. The scalar definition.
//   gemm       s8 panels of nr output channels per group: [group][panel][K/4][nr][4] with K
//              padded to a multiple of 4 (vpdpbusd / vpmaddubsw take 4 consecutive k per lane);
//              nr = 64 (VNNI, 4 zmm) or 16 (AVX2, 2 ymm); channels past the group are zero.
//   depthwise  3x3, groups == in == out: int32 [9][channels] with (wq - zw) in the low 16 bits
//              and zero high bits, for vpdpwssd / vpmaddwd on zero-extended u8 inputs.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "brecq/kernels/int/buffer.hpp"
#include "brecq/kernels/int/isa.hpp"

namespace brecq::kernels::qint {

struct ConvGeometry {
  int64_t in_channels = 0, out_channels = 0;
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride = 1, padding = 0, dilation = 1, groups = 1;

  int64_t cin_g() const { return in_channels / groups; }
  int64_t cout_g() const { return out_channels / groups; }
  int64_t k() const { return cin_g() * kernel_h * kernel_w; }
  int64_t out_h(int64_t h) const {
    return (h + 2 * padding - dilation * (kernel_h - 1) - 1) / stride + 1;
  }
  int64_t out_w(int64_t w) const {
    return (w + 2 * padding - dilation * (kernel_w - 1) - 1) / stride + 1;
  }
  bool depthwise3x3() const {
    return groups == in_channels && groups == out_channels && kernel_h == 3 && kernel_w == 3 &&
           dilation == 1;
  }
};

/// Bits a level occupies in the packed source: 2, 4 (3- and 4-bit) or 8 (5..8-bit).
inline constexpr int level_storage_bits(int bits) { return bits <= 2 ? 2 : bits <= 4 ? 4 : 8; }

/// Level k of a densely packed array (LSB first).
inline int32_t unpack_level(const uint8_t* packed, int64_t k, int bits) {
  const int sb = level_storage_bits(bits), per_byte = 8 / sb;
  return (packed[k / per_byte] >> (static_cast<int>(k % per_byte) * sb)) & ((1 << sb) - 1);
}

/// A layer's quantized weight as stored in the file (not owned).
struct WeightView {
  const uint8_t* levels = nullptr;       ///< packed, OIHW
  int bits = 8;                          ///< 2..8
  const int32_t* zero_points = nullptr;  ///< [out_channels]; may lie off the grid (|zw| <= 2^20)
};

struct PackParams {
  Isa isa = Isa::ref;
  int32_t input_zero_point = 0;   ///< zx of the input point (fills padded taps)
  int32_t input_max_level = 255;  ///< 2^bits - 1 of the input point (AVX2 saturation guard)
  const int32_t* bias = nullptr;  ///< [out_channels] int32 bias (quantize_bias), or null
};

enum class PackedLayout { ref, gemm, depthwise };

struct PackedConv {
  ConvGeometry geometry;
  Isa isa = Isa::ref;
  PackedLayout layout = PackedLayout::ref;
  int weight_bits = 8;
  int64_t k = 0;       ///< K per group
  int64_t kp = 0;      ///< K padded to a multiple of 4 (gemm)
  int64_t nr = 0;      ///< channels per panel (gemm)
  int64_t panels = 0;  ///< panels per group (gemm)
  int32_t input_zero_point = 0;
  int32_t input_max_level = 255;
  bool has_col = false;         ///< some col_coef != 0 (8-bit weights): column sums needed
  bool avx2_split = false;      ///< AVX2: vpmaddubsw could saturate, split activations in nibbles
  int32_t max_abs_w8 = 0;       ///< max |w8| (the s8 operand)
  AlignedBuffer<int8_t> w8;     ///< gemm panels
  AlignedBuffer<int32_t> wref;  ///< ref [out][K]
  AlignedBuffer<int32_t> wdw;   ///< depthwise [9][out]
  AlignedBuffer<int32_t> channel_offset;  ///< [out]
  AlignedBuffer<int32_t> col_coef;        ///< [out] offset - zw
};

inline void validate_geometry(const ConvGeometry& g, const char* what) {
  check(g.in_channels >= 1 && g.out_channels >= 1 && g.groups >= 1 &&
            g.in_channels % g.groups == 0 && g.out_channels % g.groups == 0,
        what, ": invalid channels ", g.in_channels, " -> ", g.out_channels, " in ", g.groups,
        " groups");
  check(g.kernel_h >= 1 && g.kernel_w >= 1 && g.stride >= 1 && g.dilation >= 1 && g.padding >= 0,
        what, ": invalid kernel ", g.kernel_h, "x", g.kernel_w, ", stride ", g.stride, ", padding ",
        g.padding, ", dilation ", g.dilation);
}

/// Packs a layer for p.isa. Checks bit-width, zero points, level range and the int32 bound
/// 255 * sum_k |wq - zw| + |bias| < 2^31 on every channel.
inline PackedConv pack_conv(const ConvGeometry& g, const WeightView& w, const PackParams& p) {
  validate_geometry(g, "pack_conv");
  check(w.bits >= 2 && w.bits <= 8, "pack_conv: weight bits must be in [2, 8], got ", w.bits);
  check(w.levels != nullptr && w.zero_points != nullptr,
        "pack_conv: null weight levels or zero points");
  check(p.input_max_level >= 1 && p.input_max_level <= 255 && p.input_zero_point >= 0 &&
            p.input_zero_point <= p.input_max_level,
        "pack_conv: input zero point ", p.input_zero_point, " and max level ", p.input_max_level,
        " (expected 0 <= zero <= max <= 255)");
  const int32_t qmax = (1 << w.bits) - 1;
  PackedConv pc;
  pc.geometry = g;
  pc.isa = p.isa;
  pc.weight_bits = w.bits;
  pc.k = g.k();
  pc.input_zero_point = p.input_zero_point;
  pc.input_max_level = p.input_max_level;
  const int64_t C = g.out_channels, K = pc.k, cout_g = g.cout_g(), cin_g = g.cin_g();
  const int64_t taps = g.kernel_h * g.kernel_w;
  pc.channel_offset = AlignedBuffer<int32_t>(static_cast<size_t>(C));
  pc.col_coef = AlignedBuffer<int32_t>(static_cast<size_t>(C));
  // Source index of (output channel o, tap-order k).
  auto src = [&](int64_t o, int64_t kk) {
    const int64_t tap = kk / cin_g, ci = kk % cin_g;
    return (o * cin_g + ci) * taps + tap;
  };
  for (int64_t o = 0; o < C; ++o) {
    const int32_t zw = w.zero_points[o];
    check(std::abs(zw) <= (1 << 20), "pack_conv: weight zero point ", zw, " of channel ", o,
          " outside [-2^20, 2^20]");
    int64_t abs_sum = 0, rowsum = 0;
    for (int64_t kk = 0; kk < K; ++kk) {
      const int32_t lv = unpack_level(w.levels, src(o, kk), w.bits);
      check(lv <= qmax, "pack_conv: weight level ", lv, " of channel ", o, " exceeds ", qmax,
            " for ", w.bits, " bits");
      abs_sum += std::abs(lv - zw);
      rowsum += lv - zw;
    }
    const int64_t bias = p.bias ? p.bias[o] : 0;
    check(
        255 * abs_sum + std::abs(bias) + std::abs(p.input_zero_point * rowsum) < (int64_t{1} << 31),
        "pack_conv: channel ", o, " can overflow the int32 accumulator (K = ", K, ")");
    // An off-grid zero point (a channel whose range does not contain 0) is clamped into the
    // grid for the s8 operand; the difference goes through the column-sum correction.
    const int32_t offset =
        pc.isa == Isa::ref ? zw : (w.bits <= 7 ? std::min(std::max(zw, 0), qmax) : 128);
    pc.col_coef[static_cast<size_t>(o)] = offset - zw;
    pc.has_col = pc.has_col || offset != zw;
    pc.channel_offset[static_cast<size_t>(o)] = static_cast<int32_t>(
        bias - (pc.isa == Isa::ref || g.depthwise3x3() ? 0 : p.input_zero_point * rowsum));
    for (int64_t kk = 0; kk < K; ++kk)
      pc.max_abs_w8 =
          std::max(pc.max_abs_w8, std::abs(unpack_level(w.levels, src(o, kk), w.bits) - offset));
  }
  if (p.isa == Isa::ref) {
    pc.layout = PackedLayout::ref;
    pc.wref = AlignedBuffer<int32_t>(static_cast<size_t>(C * K));
    for (int64_t o = 0; o < C; ++o)
      for (int64_t kk = 0; kk < K; ++kk)
        pc.wref[static_cast<size_t>(o * K + kk)] =
            unpack_level(w.levels, src(o, kk), w.bits) - w.zero_points[o];
    return pc;
  }
  check_isa(p.isa, "pack_conv");
  if (g.depthwise3x3()) {
    // (wq - zw) exactly, no offset: the depthwise kernels widen to 16/32 bits.
    pc.layout = PackedLayout::depthwise;
    pc.has_col = false;
    for (int64_t o = 0; o < C; ++o) pc.col_coef[static_cast<size_t>(o)] = 0;
    pc.wdw = AlignedBuffer<int32_t>(static_cast<size_t>(9 * C));
    for (int64_t o = 0; o < C; ++o)
      for (int64_t t = 0; t < 9; ++t) {
        const int32_t v = unpack_level(w.levels, o * 9 + t, w.bits) - w.zero_points[o];
        check(v >= -32768 && v <= 32767, "pack_conv: depthwise weight ", v, " of channel ", o,
              " does not fit 16 bits (zero point ", w.zero_points[o], ")");
        pc.wdw[static_cast<size_t>(t * C + o)] = static_cast<int32_t>(static_cast<uint16_t>(v));
      }
    return pc;
  }
  pc.layout = PackedLayout::gemm;
  pc.kp = (K + 3) / 4 * 4;
  pc.nr = p.isa == Isa::avx512_vnni ? 64 : 16;
  pc.panels = (cout_g + pc.nr - 1) / pc.nr;
  // vpmaddubsw adds two u8 * s8 products in saturating int16: exact iff 2 * xmax * |w8| <= 32767.
  pc.avx2_split = 2 * p.input_max_level * pc.max_abs_w8 > 32767;
  const int64_t panel_bytes = pc.kp * pc.nr;
  pc.w8 = AlignedBuffer<int8_t>(static_cast<size_t>(g.groups * pc.panels * panel_bytes));
  for (int64_t gr = 0; gr < g.groups; ++gr)
    for (int64_t ol = 0; ol < cout_g; ++ol) {
      const int64_t o = gr * cout_g + ol, panel = ol / pc.nr, ch = ol % pc.nr;
      const int32_t offset = w.zero_points[o] + pc.col_coef[static_cast<size_t>(o)];
      int8_t* dst = pc.w8.data() + (gr * pc.panels + panel) * panel_bytes;
      for (int64_t kk = 0; kk < K; ++kk)
        dst[(kk / 4) * pc.nr * 4 + ch * 4 + kk % 4] =
            static_cast<int8_t>(unpack_level(w.levels, src(o, kk), w.bits) - offset);
    }
  return pc;
}

}  // namespace brecq::kernels::qint
