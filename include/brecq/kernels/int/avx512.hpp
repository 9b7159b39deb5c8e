#pragma once
// AVX-512 VNNI integer conv: vpdpbusd register tiles (u8 activations x s8 weights, four k per
// 32-bit lane, no intermediate saturation), a vpdpwssd depthwise 3x3 and the fused requantization
// epilogue on 16 channels at a time (64-bit products with vpmuldq, vpsravq for the rounding
// shift). Namespace qint::avx512; the scalar twin is qint::ref::conv.
//
// Tiles: mr pixels x nv * 16 channels, mr chosen so mr * nv <= 24 accumulators of 32 zmm
// (nv 4: 6 rows, 3: 8, 2: 12, 1: 16). Per k4 step: nv 64-byte panel loads, mr 4-byte broadcasts.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "brecq/kernels/int/gemm_common.hpp"

namespace brecq::kernels::qint::avx512 {

namespace detail {
using qint::detail::Epilogue;
using qint::detail::Row;

/// The per-channel constants of 16 output channels, loaded once for all rows of a tile.
struct Channels16 {
  int64_t c = 0;
  __mmask16 m = 0;
  __m512i offset, col, mul_e, mul_o, m2_e, m2_o, sh_e, sh_o, rnd_e, rnd_o;
};

__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) inline Channels16 load_channels(
    const Epilogue& ep, int64_t c, __mmask16 m) {
  Channels16 ch;
  ch.c = c;
  ch.m = m;
  ch.offset = _mm512_maskz_loadu_epi32(m, ep.offset + c);
  ch.col = ep.has_col ? _mm512_maskz_loadu_epi32(m, ep.col + c) : _mm512_setzero_si512();
  ch.mul_e = ch.mul_o = ch.m2_e = ch.m2_o = ch.sh_e = ch.sh_o = ch.rnd_e = ch.rnd_o =
      _mm512_setzero_si512();
  if (ep.out_s32) return ch;
  const Requant& q = *ep.rq;
  ch.mul_e = _mm512_maskz_loadu_epi32(m, q.multiplier + c);
  ch.mul_o = _mm512_srli_epi64(ch.mul_e, 32);
  if (ep.residual != ResidualKind::none) {
    ch.m2_e = _mm512_maskz_loadu_epi32(m, q.residual_multiplier + c);
    ch.m2_o = _mm512_srli_epi64(ch.m2_e, 32);
  }
  const __m512i sh = _mm512_maskz_loadu_epi32(m, q.shift + c);
  const __m512i one = _mm512_set1_epi64(1);
  ch.sh_e = _mm512_and_si512(sh, _mm512_set1_epi64(0xFFFFFFFFLL));
  ch.sh_o = _mm512_srli_epi64(sh, 32);
  ch.rnd_e = _mm512_sllv_epi64(one, _mm512_sub_epi64(ch.sh_e, one));  // masked lanes: 0
  ch.rnd_o = _mm512_sllv_epi64(one, _mm512_sub_epi64(ch.sh_o, one));
  return ch;
}

/// Requantizes 16 channels of one row: v = acc + offset (+ col * colsum), then the rule of
/// requant.hpp on 64-bit lanes (even channels in one vector, odd ones in the other).
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) inline void epilogue16(
    __m512i acc, const Epilogue& ep, const Channels16& ch, const Row& row) {
  const int64_t c = ch.c;
  const __mmask16 m = ch.m;
  __m512i v = _mm512_add_epi32(acc, ch.offset);
  if (ep.has_col)  // wraps mod 2^32 like the sum it corrects; the true value fits in int32
    v = _mm512_add_epi32(v, _mm512_mullo_epi32(ch.col, _mm512_set1_epi32(row.colsum)));
  if (ep.out_s32) {
    _mm512_mask_storeu_epi32(ep.out_s32 + row.pix * ep.channels + c, m, v);
    return;
  }
  const Requant& q = *ep.rq;
  __m512i ev = _mm512_mul_epi32(v, ch.mul_e);
  __m512i od = _mm512_mul_epi32(_mm512_srli_epi64(v, 32), ch.mul_o);
  if (ep.residual != ResidualKind::none) {
    __m512i t;
    if (ep.residual == ResidualKind::u8) {
      const int64_t rc = c - ep.res_pad;  // option A: lanes outside [0, channels) add 0
      __mmask16 valid = m;
      if (rc < 0 || rc + 16 > ep.res_channels) {
        const int64_t first = std::max<int64_t>(0, -rc);
        const int64_t last = std::min<int64_t>(16, ep.res_channels - rc);
        valid = last <= first
                    ? __mmask16(0)
                    : static_cast<__mmask16>(m & ((1u << last) - 1u) & ~((1u << first) - 1u));
      }
      const __m128i bytes = _mm_maskz_loadu_epi8(valid, row.res + rc);
      t = _mm512_maskz_sub_epi32(valid, _mm512_cvtepu8_epi32(bytes),
                                 _mm512_set1_epi32(ep.res_zero));
    } else {
      t = _mm512_maskz_loadu_epi32(m, ep.res_s32 + row.pix * ep.channels + c);
    }
    ev = _mm512_add_epi64(ev, _mm512_mul_epi32(t, ch.m2_e));
    od = _mm512_add_epi64(od, _mm512_mul_epi32(_mm512_srli_epi64(t, 32), ch.m2_o));
  }
  ev = _mm512_srav_epi64(_mm512_add_epi64(ev, ch.rnd_e), ch.sh_e);
  od = _mm512_srav_epi64(_mm512_add_epi64(od, ch.rnd_o), ch.sh_o);
  const __m512i z = _mm512_set1_epi64(q.out_zero), lo = _mm512_set1_epi64(q.lo),
                hi = _mm512_set1_epi64(q.hi);
  ev = _mm512_min_epi64(_mm512_max_epi64(_mm512_add_epi64(ev, z), lo), hi);
  od = _mm512_min_epi64(_mm512_max_epi64(_mm512_add_epi64(od, z), lo), hi);
  const __m512i y = _mm512_or_si512(ev, _mm512_slli_epi64(od, 32));  // both in [0, 255]
  _mm_mask_storeu_epi8(ep.out_u8 + row.pix * ep.channels + c, m, _mm512_cvtepi32_epi8(y));
}

inline __mmask16 lane_mask(int n) {
  return n >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

/// One register tile: MR rows x NV * 16 channels of a 64-channel panel ([K/4][64][4] s8). Row r
/// of tap t reads 4 * k4t bytes at ind[r * taps + t] (rows past nrows repeat the last one).
template <int MR, int NV>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) inline void tile(
    const uint8_t* const* ind, int taps, int nrows, const int8_t* B, int64_t k4t, int64_t c0,
    int nc, const Row* info, const Epilogue& ep) {
  // Accumulators stay in registers only if every index is a compile-time constant: the loops
  // over MR and NV are unrolled and the epilogue reads a stored copy.
  __m512i acc[MR][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_si512();
  for (int t = 0; t < taps; ++t) {
    const uint8_t* rows[MR];
    for (int r = 0; r < MR; ++r) rows[r] = ind[std::min(r, nrows - 1) * taps + t];
    const int8_t* Bt = B + t * k4t * 256;
    for (int64_t k = 0; k < k4t; ++k) {
      __m512i b[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) b[v] = _mm512_load_si512(Bt + k * 256 + 64 * v);
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        int32_t x;
        std::memcpy(&x, rows[r] + 4 * k, 4);
        const __m512i a = _mm512_set1_epi32(x);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], a, b[v]);
      }
    }
  }
  alignas(64) int32_t out[MR][NV * 16];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm512_store_si512(out[r] + 16 * v, acc[r][v]);
  for (int v = 0; v < NV && 16 * v < nc; ++v) {
    const Channels16 ch = load_channels(ep, c0 + 16 * v, lane_mask(nc - 16 * v));
    for (int r = 0; r < nrows; ++r) epilogue16(_mm512_load_si512(out[r] + 16 * v), ep, ch, info[r]);
  }
}

inline int rows_for(int64_t cout_g) {
  const int64_t nv = std::min<int64_t>(4, (cout_g + 15) / 16);
  return nv >= 4 ? 6 : nv == 3 ? 8 : nv == 2 ? 12 : 16;
}

inline void run_tile(int mr, const uint8_t* const* ind, int taps, int nrows, const int8_t* B,
                     int64_t k4t, int64_t c0, int nc, const Row* info, const Epilogue& ep) {
  const int nv = (nc + 15) / 16;
  switch (mr * 8 + nv) {
    case 6 * 8 + 1:
      return tile<6, 1>(ind, taps, nrows, B, k4t, c0, nc, info, ep);
    case 6 * 8 + 2:
      return tile<6, 2>(ind, taps, nrows, B, k4t, c0, nc, info, ep);
    case 6 * 8 + 3:
      return tile<6, 3>(ind, taps, nrows, B, k4t, c0, nc, info, ep);
    case 6 * 8 + 4:
      return tile<6, 4>(ind, taps, nrows, B, k4t, c0, nc, info, ep);
    case 8 * 8 + 1:
      return tile<8, 1>(ind, taps, nrows, B, k4t, c0, nc, info, ep);
    case 8 * 8 + 2:
      return tile<8, 2>(ind, taps, nrows, B, k4t, c0, nc, info, ep);
    case 8 * 8 + 3:
      return tile<8, 3>(ind, taps, nrows, B, k4t, c0, nc, info, ep);
    case 12 * 8 + 1:
      return tile<12, 1>(ind, taps, nrows, B, k4t, c0, nc, info, ep);
    case 12 * 8 + 2:
      return tile<12, 2>(ind, taps, nrows, B, k4t, c0, nc, info, ep);
    case 16 * 8 + 1:
      return tile<16, 1>(ind, taps, nrows, B, k4t, c0, nc, info, ep);
  }
  fail("qint::avx512: no tile for ", mr, " rows x ", nv, " vectors");
}

/// Depthwise 3x3 over pixels [p0, p1): per 16 channels, 9 taps of vpdpwssd on (x - zx) widened
/// to 32-bit lanes against (wq - zw) in the low 16 bits (high bits zero).
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) inline void depthwise_rows(
    const PackedConv& pc, const ConvArgs& a, int64_t p0, int64_t p1, const Epilogue& ep) {
  const ConvGeometry& g = pc.geometry;
  const int64_t OH = g.out_h(a.height), OW = g.out_w(a.width), C = g.out_channels;
  const __m512i zx = _mm512_set1_epi32(pc.input_zero_point);
  for (int64_t pix = p0; pix < p1; ++pix) {
    const int64_t n = pix / (OH * OW), oh = pix / OW % OH, ow = pix % OW;
    const Row row = qint::detail::make_row(a, pix, OH, OW);
    const uint8_t* taps[9];
    int nt = 0, tap_id[9];
    for (int kh = 0; kh < 3; ++kh) {
      const int64_t ih = oh * g.stride - g.padding + kh;
      if (ih < 0 || ih >= a.height) continue;
      for (int kw = 0; kw < 3; ++kw) {
        const int64_t iw = ow * g.stride - g.padding + kw;
        if (iw < 0 || iw >= a.width) continue;
        taps[nt] = a.input + ((n * a.height + ih) * a.width + iw) * C;
        tap_id[nt++] = kh * 3 + kw;
      }
    }
    for (int64_t c = 0; c < C; c += 16) {
      const __mmask16 m = lane_mask(static_cast<int>(std::min<int64_t>(16, C - c)));
      __m512i acc = _mm512_setzero_si512();
      for (int t = 0; t < nt; ++t) {
        const __m512i x =
            _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, taps[t] + c)), zx);
        acc = _mm512_dpwssd_epi32(acc, x,
                                  _mm512_maskz_loadu_epi32(m, pc.wdw.data() + tap_id[t] * C + c));
      }
      epilogue16(acc, ep, load_channels(ep, c, m), row);
    }
  }
}

}  // namespace detail

inline void conv(const PackedConv& pc, const ConvArgs& a) {
  qint::detail::check_conv_args(pc, a, "qint::avx512::conv");
  check(pc.isa == Isa::avx512_vnni, "qint::avx512::conv: weights packed for ", isa_name(pc.isa));
  check_isa(Isa::avx512_vnni, "qint::avx512::conv");
  if (pc.layout == PackedLayout::depthwise) {
    const ConvGeometry& g = pc.geometry;
    const int64_t P = a.batch * g.out_h(a.height) * g.out_w(a.width);
    const qint::detail::Epilogue ep = qint::detail::make_epilogue(pc, a);
    parallel_for(0, P, 32, a.threads,
                 [&](int64_t b, int64_t e) { detail::depthwise_rows(pc, a, b, e, ep); });
    return;
  }
  const int mr = detail::rows_for(pc.geometry.cout_g());
  qint::detail::gemm_conv(
      pc, a, mr,
      [&](const uint8_t* const* ind, int taps, int nrows, const int8_t* B, int64_t k4t, int64_t c0,
          int nc, const qint::detail::Row* info, const qint::detail::Epilogue& ep) {
        detail::run_tile(mr, ind, taps, nrows, B, k4t, c0, nc, info, ep);
      });
}

}  // namespace brecq::kernels::qint::avx512
