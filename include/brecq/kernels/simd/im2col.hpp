#pragma once
// The implicit im2col layout shared by the SIMD convolution kernels ("wide grid").
//
// Each input channel is copied once into a zero-padded, stride-phase-split plane:
//   xp[c]: [sh * sw][HQ + 1][WQ],  padded pixel (ihp, iwp) = (ih + ph, iw + pw) at
//   phase (ihp % sh) * sw + iwp % sw, row ihp / sh, column iwp / sw
// (HQ = ceil((H + 2 ph) / sh), WQ = ceil((W + 2 pw) / sw), one spare zero row per phase). The
// output is then computed on a wide grid of OH x WQ columns, j = oh * WQ + ow, of which ow < OW
// are kept: kernel tap t = (kh, kw) reads, for every j, xp[c] + tap(t) + j with
//   tap(t) = ((kh dh) % sh * sw + (kw dw) % sw) * phase_size + (kh dh) / sh * WQ + (kw dw) / sw.
// So row r = (c, kh, kw) of the im2col matrix is the contiguous slice xp + row_offset(r) + j:
// GEMM panels are plain vector copies (or rows are read in place), depthwise taps are plain
// vector loads, and col2im is plain vector adds, whatever the stride, padding, dilation and
// width, at the price of (WQ - OW) / OW extra columns. Columns j < NW stay inside the tap's phase
// of their channel's plane; depthwise vector loops may run up to kVec floats past NW (and past
// the last plane: see kSlack), where outputs are discarded and gradients are fed zeros.
#include <algorithm>
#include <array>
#include <cstdint>
#include <type_traits>
#include <xsimd/xsimd.hpp>

#include "brecq/kernels/params.hpp"
#include "brecq/tensor/parallel.hpp"

namespace brecq::kernels::simd::detail {

/// ToPadded: dense[q * S] -> padded[q] for q < n, else padded[q] -> dense[q * S]. S is a
/// compile-time stride where it matters (1, 2) so that the loop vectorises, else 0 for s.
template <bool ToPadded, int64_t S>
inline void transfer_run(std::conditional_t<ToPadded, const float*, float*> dense, float* padded,
                         int64_t n, int64_t s) {
  const int64_t step = S > 0 ? S : s;
  for (int64_t q = 0; q < n; ++q) {
    if constexpr (ToPadded) {
      padded[q] = dense[q * step];
    } else {
      dense[q * step] = padded[q];
    }
  }
}

struct WideGrid {
  static constexpr int64_t kSlack = static_cast<int64_t>(xsimd::batch<float>::size);
  static constexpr int64_t kMaxTaps = 64;

  int64_t H, W, ph, pw, sh, sw, dh, dw, KH, KW, OH, OW;
  int64_t HQ, WQ;                        // rows and columns of one phase
  int64_t phase_size;                    // (HQ + 1) * WQ
  int64_t plane;                         // sh * sw * phase_size: one padded channel
  int64_t NW;                            // OH * WQ wide output columns
  std::array<int64_t, kMaxTaps> taps{};  // tap(t) when KH * KW <= kMaxTaps

  explicit WideGrid(const Conv2dGeometry& g)
      : H(g.in_h),
        W(g.in_w),
        ph(g.pad_h),
        pw(g.pad_w),
        sh(g.stride_h),
        sw(g.stride_w),
        dh(g.dilation_h),
        dw(g.dilation_w),
        KH(g.kernel_h),
        KW(g.kernel_w),
        OH(g.out_h()),
        OW(g.out_w()),
        HQ((H + 2 * ph + sh - 1) / sh),
        WQ((W + 2 * pw + sw - 1) / sw),
        phase_size((HQ + 1) * WQ),
        plane(sh * sw * phase_size),
        NW(OH * WQ) {
    if (KH * KW <= kMaxTaps)
      for (int64_t t = 0; t < KH * KW; ++t) taps[t] = tap_offset(t);
  }

  /// Offset of tap t = kh * KW + kw relative to output column j.
  int64_t tap_offset(int64_t t) const {
    const int64_t dy = t / KW * dh, dx = t % KW * dw;  // the tap's offset in padded pixels
    return (dy % sh * sw + dx % sw) * phase_size + dy / sh * WQ + dx / sw;
  }
  int64_t tap(int64_t t) const { return KH * KW <= kMaxTaps ? taps[t] : tap_offset(t); }
  /// Offset of im2col row r = c * KH * KW + t relative to output column j.
  int64_t row_offset(int64_t r) const {
    const int64_t c = r / (KH * KW);
    return c * plane + tap(r - c * KH * KW);
  }
  /// Floats for `channels` padded planes plus the slack that vector loops may touch, rounded up
  /// to whole vectors (so that a buffer placed after them stays aligned).
  int64_t padded_floats(int64_t channels) const {
    return (channels * plane + 2 * kSlack - 1) / kSlack * kSlack;
  }
  /// Wide columns rounded up to whole vectors.
  int64_t wide_floats() const { return (NW + kSlack - 1) / kSlack * kSlack; }

  /// Whether some tap reads row phase a (column phase a when Column).
  template <bool Column>
  bool phase_used(int64_t a) const {
    const int64_t s = Column ? sw : sh, d = Column ? dw : dh, k = Column ? KW : KH;
    for (int64_t i = 0; i < std::min(k, s); ++i)
      if (i * d % s == a) return true;
    return false;
  }

  /// ToPadded: xp = the padded, phase-split copy of channels [c0, c1) of x ([C][H][W]). Phases
  /// that no tap reads (e.g. 3 of 4 for a 1x1 stride-2 kernel) are neither filled nor zeroed: no
  /// GEMM reads them, as columns j < NW stay inside the tap's phase.
  /// !ToPadded: x = the interior of xp (the input gradient from padded planes, all zeroed).
  template <bool ToPadded>
  void transfer(int64_t c0, int64_t c1, std::conditional_t<ToPadded, const float*, float*> x,
                float* xp) const {
    // Per column phase: the input columns iw0, iw0 + sw, ... (n of them) land at column q0 of
    // the phase. Tabulated once (for up to kMaxPhases phases), as the row loop is hot.
    struct Run {
      int64_t iw0, n, q0;
      bool used;
    };
    constexpr int64_t kMaxPhases = 8;
    const auto run_of = [&](int64_t phase) {
      const int64_t iw0 = ((phase - pw) % sw + sw) % sw;
      return Run{iw0, iw0 < W ? (W - iw0 + sw - 1) / sw : 0, (iw0 + pw) / sw,
                 !ToPadded || phase_used<true>(phase)};
    };
    const auto row_used = [&](int64_t phase) { return !ToPadded || phase_used<false>(phase); };
    std::array<Run, kMaxPhases> runs{};
    std::array<bool, kMaxPhases> rows{};
    for (int64_t phase = 0; phase < std::min(sw, kMaxPhases); ++phase) runs[phase] = run_of(phase);
    for (int64_t phase = 0; phase < std::min(sh, kMaxPhases); ++phase)
      rows[phase] = row_used(phase);
    const auto run_at = [&](int64_t phase) {
      return phase < kMaxPhases ? runs[phase] : run_of(phase);
    };
    const auto row_at = [&](int64_t phase) {
      return phase < kMaxPhases ? rows[phase] : row_used(phase);
    };
    for (int64_t c = c0; c < c1; ++c) {
      float* xc = xp + c * plane;
      if constexpr (ToPadded)
        for (int64_t a = 0; a < sh; ++a)
          for (int64_t b = 0; b < sw; ++b)
            if (row_at(a) && run_at(b).used)
              std::fill_n(xc + (a * sw + b) * phase_size, phase_size, 0.0f);
      for (int64_t ih = 0, rp = ph % sh, rq = ph / sh; ih < H; ++ih) {  // padded row = rq * sh + rp
        auto* xr = x + (c * H + ih) * W;
        for (int64_t phase = 0; row_at(rp) && phase < sw; ++phase) {
          const Run run = run_at(phase);
          if (!run.used) continue;
          float* dst = xc + (rp * sw + phase) * phase_size + rq * WQ + run.q0;
          if (sw == 1) {
            transfer_run<ToPadded, 1>(xr + run.iw0, dst, run.n, sw);
          } else if (sw == 2) {
            transfer_run<ToPadded, 2>(xr + run.iw0, dst, run.n, sw);
          } else {
            transfer_run<ToPadded, 0>(xr + run.iw0, dst, run.n, sw);
          }
        }
        if (++rp == sh) rp = 0, ++rq;
      }
    }
  }

  /// Zeroes the slack after `channels` padded planes (transfer leaves it alone, so that channel
  /// ranges can be transferred concurrently).
  void zero_slack(int64_t channels, float* xp) const {
    std::fill_n(xp + channels * plane, kSlack, 0.0f);
  }

  /// Rows [0, rows) of a [rows][ld] block: wide (row length NW, pitch WQ) to dense (OW per output
  /// row) or back; the widened copy zero-fills columns ow >= OW and the vector tail up to ld.
  template <bool Widen>
  void reshape_rows(int64_t rows, std::conditional_t<Widen, const float*, float*> dense,
                    std::conditional_t<Widen, float*, const float*> wide, int64_t ld) const {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t oh = 0; oh < OH; ++oh) {
        auto* d = dense + (r * OH + oh) * OW;
        auto* w = wide + r * ld + oh * WQ;
        if constexpr (Widen) {
          std::copy_n(d, OW, w);
          std::fill(w + OW, w + WQ, 0.0f);
        } else {
          std::copy_n(w, OW, d);
        }
      }
    if constexpr (Widen)
      for (int64_t r = 0; r < rows; ++r) std::fill(wide + r * ld + NW, wide + (r + 1) * ld, 0.0f);
  }
};

/// xp[row_offset(r) + j] += dcol[r][j] for j < NW and the im2col rows of channels [c0, c1)
/// (col2im on the wide grid: dcol's columns past OW must be zero).
inline void wide_col2im_add(const WideGrid& wg, const float* dcol, int64_t ld, int64_t c0,
                            int64_t c1, float* xp) {
  using V = xsimd::batch<float>;
  constexpr int64_t kV = static_cast<int64_t>(V::size);
  const int64_t taps = wg.KH * wg.KW;
  for (int64_t r = c0 * taps; r < c1 * taps; ++r) {
    float* d = xp + wg.row_offset(r);
    const float* s = dcol + r * ld;
    int64_t j = 0;
    for (; j + kV <= wg.NW; j += kV)
      (V::load_unaligned(d + j) + V::load_unaligned(s + j)).store_unaligned(d + j);
    for (; j < wg.NW; ++j) d[j] += s[j];
  }
}

}  // namespace brecq::kernels::simd::detail
