#pragma once
// Run-time arguments of an integer conv: input, output, fused residual add and requantization.
// Tensors are NHWC, contiguous; u8 buffers hold levels of a 2..8-bit point.
#include <cstdint>

#include "brecq/kernels/int/pack.hpp"
#include "brecq/kernels/int/requant.hpp"

namespace brecq::kernels::qint {

enum class ResidualKind {
  none,
  u8,   ///< levels of a point: identity or option-A shortcut, term (r - z_r) * m2
  s32,  ///< a projection conv's output (accumulator + bias), term r * m2
};

/// Residual operand of the output pixel (n, oh, ow), channel c:
///   u8: r[n, oh * stride, ow * stride, c - channel_pad], 0 where c - channel_pad is outside
///       [0, channels) (option A's zero channels); identity is stride 1, pad 0.
///   s32: r[n, oh, ow, c] of a tensor shaped like the output.
struct Residual {
  ResidualKind kind = ResidualKind::none;
  const uint8_t* u8 = nullptr;
  const int32_t* s32 = nullptr;
  int32_t zero_point = 0;                       ///< z_r (u8)
  int64_t height = 0, width = 0, channels = 0;  ///< shape of r (u8)
  int64_t stride = 1, channel_pad = 0;          ///< option A (u8)
};

struct ConvArgs {
  const uint8_t* input = nullptr;  ///< [batch, height, width, in_channels]
  int64_t batch = 0, height = 0, width = 0;
  uint8_t* out_u8 = nullptr;   ///< requantized output [batch, oh, ow, out_channels], or
  int32_t* out_s32 = nullptr;  ///< accumulator + bias (projection shortcut); exactly one is set
  const Requant* requant = nullptr;  ///< required with out_u8
  Residual residual{};               ///< only with out_u8
  int threads = 1;
  uint8_t* workspace = nullptr;  ///< conv_workspace_bytes(layer, threads) bytes, 64-aligned
  int64_t workspace_bytes = 0;
};

namespace detail {

/// Residual term of output (n, oh, ow, c): (r - z_r) for u8 (0 on option A's padded channels),
/// r for s32.
inline int64_t residual_term(const Residual& r, int64_t n, int64_t oh, int64_t ow, int64_t c,
                             int64_t out_h, int64_t out_w, int64_t out_c) {
  switch (r.kind) {
    case ResidualKind::none:
      return 0;
    case ResidualKind::u8: {
      const int64_t rc = c - r.channel_pad;
      if (rc < 0 || rc >= r.channels) return 0;
      const int64_t row = (n * r.height + oh * r.stride) * r.width + ow * r.stride;
      return static_cast<int64_t>(r.u8[row * r.channels + rc]) - r.zero_point;
    }
    case ResidualKind::s32:
      return r.s32[((n * out_h + oh) * out_w + ow) * out_c + c];
  }
  return 0;
}

inline void check_conv_args(const PackedConv& pc, const ConvArgs& a, const char* what) {
  check(a.input != nullptr && a.batch >= 1 && a.height >= 1 && a.width >= 1, what,
        ": expected a non-null input of positive batch and size, got batch ", a.batch, ", ",
        a.height, "x", a.width);
  check((a.out_u8 != nullptr) != (a.out_s32 != nullptr), what,
        ": exactly one of out_u8 and out_s32 must be set");
  check(a.out_s32 == nullptr || a.residual.kind == ResidualKind::none, what,
        ": an s32 output takes no residual");
  check(a.out_u8 == nullptr || a.requant != nullptr, what, ": a u8 output needs a Requant");
  check(a.threads >= 1, what, ": threads must be >= 1, got ", a.threads);
  const ConvGeometry& g = pc.geometry;
  const int64_t oh = g.out_h(a.height), ow = g.out_w(a.width);
  check(oh >= 1 && ow >= 1, what, ": input ", a.height, "x", a.width, " gives an empty output");
  const Residual& r = a.residual;
  if (r.kind == ResidualKind::u8)
    check(r.u8 != nullptr && r.stride >= 1 && r.channel_pad >= 0 &&
              r.channels + 2 * r.channel_pad == g.out_channels &&
              (r.height - 1) / r.stride + 1 == oh && (r.width - 1) / r.stride + 1 == ow,
          what, ": u8 residual of ", r.height, "x", r.width, "x", r.channels, " (stride ", r.stride,
          ", channel pad ", r.channel_pad, ") does not match the output ", oh, "x", ow, "x",
          g.out_channels);
  if (r.kind == ResidualKind::s32) check(r.s32 != nullptr, what, ": null s32 residual");
  if (r.kind != ResidualKind::none)
    check(a.requant->residual_multiplier != nullptr, what,
          ": a residual needs residual multipliers");
}

}  // namespace detail

}  // namespace brecq::kernels::qint
