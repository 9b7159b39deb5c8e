#pragma once
// Requantization: how an int32 accumulator becomes a level of the next activation point, exactly
// and identically in every kernel, the executor and the file writer.
//
// Rule. A real multiplier M > 0 is stored as (m, s): integer 0 <= m < 2^31 and shift 1 <= s <= 62
// with M ~= m / 2^s; for M >= 2^-31, m lies in [2^30, 2^31) (31 significant bits). Applied to an
// integer x in int64:
//     fixed_point(x) = (x * m + 2^(s-1)) >> s          (arithmetic shift: round half up)
// A requantized output is  clamp(z_out + fixed_point(acc + bias), lo, hi).
// A residual add y = round((acc + bias) * M1 + (r - z_r) * M2) uses two multipliers with one
// common shift (chosen for max(M1, M2)), so it rounds once:
//     (x1 * m1 + x2 * m2 + 2^(s-1)) >> s
// Bounds: |x1| < 2^31 (checked where weights are packed) and m < 2^31 give |x1 * m1| < 2^62; the
// residual term is a u8 difference (|.| <= 255) or an int32 projection accumulator, so the sum
// stays below 2^63.
// ReLU and ReLU6 are clamps on the output grid: lo = max(0, z_out) for ReLU, hi = level of 6.0.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "brecq/config.hpp"

namespace brecq::kernels::qint {

struct FixedPoint {
  int32_t multiplier = 0;  ///< m, 0 <= m < 2^31
  int32_t shift = 1;       ///< s, 1..62
};

struct FixedPointPair {
  int32_t multiplier = 0;           ///< m1 (accumulator)
  int32_t residual_multiplier = 0;  ///< m2 (residual operand)
  int32_t shift = 1;                ///< common s
};

constexpr int kMaxShift = 62;

namespace detail {
/// Shift s such that M * 2^s lies in [2^30, 2^31) (or the largest shift for tiny M).
inline int32_t shift_for(double M, const char* what) {
  check(std::isfinite(M) && M > 0.0, what, ": multiplier must be finite and > 0, got ", M);
  int ex = 0;
  const double f = std::frexp(M, &ex);  // M = f * 2^ex, f in [0.5, 1)
  int s = 31 - ex;
  if (std::round(std::ldexp(f, 31)) >= 2147483648.0) --s;  // f rounds up to 1: one bit less
  check(s >= 1, what, ": multiplier ", M, " is too large (expected < 2^30)");
  return std::min(s, kMaxShift);
}
inline int32_t scaled(double M, int32_t s) {
  return static_cast<int32_t>(std::min(std::round(std::ldexp(M, s)), 2147483647.0));
}
}  // namespace detail

/// (m, s) for one real multiplier M > 0 (rounded to nearest, ties away from zero).
inline FixedPoint quantize_multiplier(double M) {
  const int32_t s = detail::shift_for(M, "quantize_multiplier");
  return {detail::scaled(M, s), s};
}

/// (m1, m2, s) for a residual add: the shift suits the larger multiplier.
inline FixedPointPair quantize_multiplier_pair(double M1, double M2) {
  const int32_t s1 = detail::shift_for(M1, "quantize_multiplier_pair (accumulator)");
  const int32_t s2 = detail::shift_for(M2, "quantize_multiplier_pair (residual)");
  const int32_t s = std::min(s1, s2);
  return {detail::scaled(M1, s), detail::scaled(M2, s), s};
}

/// The integer bias of a layer: round(bias / (weight_scale * input_scale)) in double, ties away
/// from zero; |result| < 2^30 so accumulator + bias cannot overflow with the packing bounds.
inline int32_t quantize_bias(float bias, float weight_scale, float input_scale) {
  const double v =
      std::round(static_cast<double>(bias) / (static_cast<double>(weight_scale) * input_scale));
  check(std::isfinite(v) && std::fabs(v) < 1073741824.0, "quantize_bias: bias ", bias, " at scale ",
        weight_scale, " * ", input_scale, " gives ", v, " (expected |bias / scale| < 2^30)");
  return static_cast<int32_t>(v);
}

/// fixed_point(x) as defined above.
inline int64_t apply_fixed_point(int64_t x, int32_t m, int32_t s) {
  return (x * m + (int64_t{1} << (s - 1))) >> s;
}

/// The level of 6.0 on a grid (scale, zero point, qmax): the upper clamp of ReLU6, computed in
/// float as the fake quantizer does (nearbyint(6 / scale) + zero point, clamped).
inline int32_t relu6_level(float scale, int32_t zero_point, int32_t qmax) {
  const float q = std::nearbyint(6.0f / scale) + static_cast<float>(zero_point);
  return static_cast<int32_t>(std::min(std::max(q, 0.0f), static_cast<float>(qmax)));
}

/// Per-output-channel requantization of a conv (arrays of out_channels entries, not owned).
struct Requant {
  const int32_t* multiplier = nullptr;           ///< m1 per channel
  const int32_t* residual_multiplier = nullptr;  ///< m2 per channel (only with a residual)
  const int32_t* shift = nullptr;                ///< s per channel
  int32_t out_zero = 0;                          ///< z_out
  int32_t lo = 0, hi = 255;                      ///< clamp on the output grid
};

/// The scalar epilogue every kernel must match: v = acc + bias, t = residual term (0 if none).
inline uint8_t requantize(int64_t v, int64_t t, const Requant& q, int64_t c) {
  int64_t x = v * q.multiplier[c];
  if (t != 0) x += t * q.residual_multiplier[c];
  const int64_t y = ((x + (int64_t{1} << (q.shift[c] - 1))) >> q.shift[c]) + q.out_zero;
  return static_cast<uint8_t>(std::min<int64_t>(std::max<int64_t>(y, q.lo), q.hi));
}

}  // namespace brecq::kernels::qint
