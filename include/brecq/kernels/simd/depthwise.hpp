#pragma once
// Depthwise 2-D convolution (groups == in_channels == out_channels), forward and both backward
// passes, on the wide grid of simd/im2col.hpp: each plane is padded and phase-split once, after
// which output column j of tap t reads xp[tap(t) + j], so every pass is a flat vector loop over
// j, whatever the stride, padding and dilation.
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <xsimd/xsimd.hpp>

#include "brecq/kernels/params.hpp"
#include "brecq/kernels/simd/im2col.hpp"
#include "brecq/kernels/workspace.hpp"
#include "brecq/tensor/parallel.hpp"

namespace brecq::kernels::simd {

namespace detail {

using DwVec = xsimd::batch<float>;
inline constexpr int64_t kDwVec = static_cast<int64_t>(DwVec::size);
inline constexpr int kDwChunk = 4;  // output vectors kept in registers per pass over the taps

/// {0, 1, ..., kDwVec - 1} as floats.
inline DwVec lane_index() {
  alignas(64) float lanes[kDwVec];
  for (int64_t i = 0; i < kDwVec; ++i) lanes[i] = static_cast<float>(i);
  return DwVec::load_aligned(lanes);
}

/// yw[j0 : j0 + NV * kDwVec] = bias + sum over taps t of w[t] * xp[tap(t) + j].
template <int NV>
inline void dw_forward_chunk(const WideGrid& wg, const float* xp, const float* w, float bias,
                             int64_t j0, float* yw) {
  DwVec acc[NV];
  for (int v = 0; v < NV; ++v) acc[v] = DwVec(bias);
  for (int64_t t = 0; t < wg.KH * wg.KW; ++t) {
    const float* src = xp + wg.tap(t) + j0;
    const DwVec wt(w[t]);
    for (int v = 0; v < NV; ++v)
      acc[v] = xsimd::fma(wt, DwVec::load_unaligned(src + v * kDwVec), acc[v]);
  }
  for (int v = 0; v < NV; ++v) acc[v].store_aligned(yw + j0 + v * kDwVec);
}

/// Calls chunk(nv, j0) over [0, n) (a multiple of kDwVec) in runs of kDwChunk vectors (the last
/// may be shorter), nv being a compile-time constant.
template <class Chunk>
inline void for_each_chunk(int64_t n, Chunk&& chunk) {
  for (int64_t j0 = 0; j0 < n; j0 += kDwChunk * kDwVec) {
    switch (std::min<int64_t>(kDwChunk, (n - j0) / kDwVec)) {
      case 1:
        chunk(std::integral_constant<int, 1>{}, j0);
        break;
      case 2:
        chunk(std::integral_constant<int, 2>{}, j0);
        break;
      case 3:
        chunk(std::integral_constant<int, 3>{}, j0);
        break;
      default:
        chunk(std::integral_constant<int, kDwChunk>{}, j0);
        break;
    }
  }
}

}  // namespace detail

/// Depthwise forward: y[n, c] = bias[c] + x[n, c] (*) w[c]; bias may be null.
inline void depthwise_forward(const Conv2dGeometry& g, const float* x, const float* w,
                              const float* bias, float* y) {
  using namespace detail;
  const WideGrid wg(g);
  const int64_t C = g.in_channels, HW = g.in_h * g.in_w, P = wg.OH * wg.OW,
                KK = g.kernel_h * g.kernel_w;
  const int64_t ld = wg.wide_floats();
  parallel_for(0, g.batch * C, 1, [&](int64_t p0, int64_t p1) {
    float* xp = workspace(Scratch::col, static_cast<size_t>(wg.padded_floats(1) + ld));
    float* yw = xp + wg.padded_floats(1);  // wide output row: [ld]
    wg.zero_slack(1, xp);
    for (int64_t plane = p0; plane < p1; ++plane) {
      const int64_t c = plane % C;
      wg.transfer<true>(0, 1, x + plane * HW, xp);  // x[n, c]: [H][W] -> xp: [sh * sw][HQ + 1][WQ]
      for_each_chunk(ld, [&](auto nv, int64_t j0) {
        dw_forward_chunk<decltype(nv)::value>(wg, xp, w + c * KK, bias ? bias[c] : 0.0f, j0, yw);
      });
      wg.reshape_rows<false>(1, y + plane * P, yw, ld);  // yw: [OH][WQ] -> y[n, c]: [OH][OW]
    }
  });
}

/// Depthwise input gradient: dx[n, c] = dy[n, c] (*)^T w[c] (overwrites dx).
inline void depthwise_backward_input(const Conv2dGeometry& g, const float* dy, const float* w,
                                     float* dx) {
  using namespace detail;
  const WideGrid wg(g);
  const int64_t C = g.in_channels, HW = g.in_h * g.in_w, P = wg.OH * wg.OW,
                KK = g.kernel_h * g.kernel_w;
  const int64_t ld = wg.wide_floats();
  parallel_for(0, g.batch * C, 1, [&](int64_t p0, int64_t p1) {
    float* dxp = workspace(Scratch::col, static_cast<size_t>(wg.padded_floats(1) + ld));
    float* dyw = dxp + wg.padded_floats(1);  // widened dy: [ld], zero past OW
    for (int64_t plane = p0; plane < p1; ++plane) {
      const int64_t c = plane % C;
      wg.reshape_rows<true>(1, dy + plane * P, dyw, ld);  // dy[n, c]: [OH][OW] -> dyw: [OH][WQ]
      std::fill_n(dxp, wg.padded_floats(1), 0.0f);
      // dxp[tap(t) + j] += w[t] * dyw[j]. Taps are the outer loop: the read-modify-writes of
      // consecutive taps overlap shifted by a column, and a load that partly overlaps a recent
      // store stalls, so they should be a whole row apart.
      for (int64_t t = 0; t < KK; ++t) {
        float* dst = dxp + wg.tap(t);
        const DwVec wt(w[c * KK + t]);
        for (int64_t j = 0; j < ld; j += kDwVec)
          xsimd::fma(wt, DwVec::load_aligned(dyw + j), DwVec::load_unaligned(dst + j))
              .store_unaligned(dst + j);
      }
      wg.transfer<false>(0, 1, dx + plane * HW, dxp);  // dxp -> dx[n, c]: [H][W]
    }
  });
}

/// Depthwise weight gradient: dw[c] = sum_n dy[n, c] (*) x[n, c] and dbias[c] = sum dy[n, c]
/// (both overwritten; dbias may be null).
inline void depthwise_backward_weight(const Conv2dGeometry& g, const float* x, const float* dy,
                                      float* dw, float* dbias) {
  using namespace detail;
  const WideGrid wg(g);
  const int64_t C = g.in_channels, HW = g.in_h * g.in_w, P = wg.OH * wg.OW,
                KK = g.kernel_h * g.kernel_w;
  const int64_t ld = wg.wide_floats();
  parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
    float* xp =
        workspace(Scratch::col, static_cast<size_t>(wg.padded_floats(1) + ld + KK * kDwVec));
    float* dyw = xp + wg.padded_floats(1);  // widened dy: [ld], zero past OW
    float* acc = dyw + ld;                  // one running vector sum per tap: [KK][kDwVec]
    wg.zero_slack(1, xp);
    for (int64_t c = c0; c < c1; ++c) {
      std::fill_n(acc, KK * kDwVec, 0.0f);
      DwVec bsum(0.0f);
      for (int64_t n = 0; n < g.batch; ++n) {
        const int64_t plane = n * C + c;
        wg.transfer<true>(0, 1, x + plane * HW, xp);        // x[n, c] -> xp
        wg.reshape_rows<true>(1, dy + plane * P, dyw, ld);  // dy[n, c] -> dyw
        for (int64_t j = 0; j < ld; j += kDwVec) bsum += DwVec::load_aligned(dyw + j);
        // acc[t] += sum_j dyw[j] * xp[tap(t) + j] over j < NW (xp past NW may be unset phases),
        // four independent chains per tap.
        const int64_t nw_full = wg.NW / kDwVec * kDwVec;
        const auto tail_mask = DwVec(static_cast<float>(wg.NW - nw_full)) > lane_index();
        for (int64_t t = 0; t < KK; ++t) {
          const float* src = xp + wg.tap(t);
          DwVec s[4] = {DwVec(0.0f), DwVec(0.0f), DwVec(0.0f), DwVec(0.0f)};
          int64_t j = 0;
          for (; j + 4 * kDwVec <= nw_full; j += 4 * kDwVec)
            for (int u = 0; u < 4; ++u)
              s[u] = xsimd::fma(DwVec::load_aligned(dyw + j + u * kDwVec),
                                DwVec::load_unaligned(src + j + u * kDwVec), s[u]);
          for (; j < nw_full; j += kDwVec)
            s[0] = xsimd::fma(DwVec::load_aligned(dyw + j), DwVec::load_unaligned(src + j), s[0]);
          if (j < wg.NW) {  // lanes past NW: 0 * whatever could be NaN, so select them away
            const DwVec x_tail =
                xsimd::select(tail_mask, DwVec::load_unaligned(src + j), DwVec(0.0f));
            s[1] = xsimd::fma(DwVec::load_aligned(dyw + j), x_tail, s[1]);
          }
          ((s[0] + s[1]) + (s[2] + s[3]) + DwVec::load_aligned(acc + t * kDwVec))
              .store_aligned(acc + t * kDwVec);
        }
      }
      for (int64_t t = 0; t < KK; ++t)
        dw[c * KK + t] = xsimd::hadd(DwVec::load_aligned(acc + t * kDwVec));
      if (dbias) dbias[c] = xsimd::hadd(bsum);
    }
  });
}

}  // namespace brecq::kernels::simd
