#pragma once
// AVX2 integer conv: vpmaddubsw + vpmaddwd register tiles on the same 4-k-per-lane panels as
// VNNI (16 channels per panel, 2 ymm), a vpmaddwd depthwise 3x3 and the fused requantization
// epilogue on 8 channels. Namespace qint::avx2; the scalar twin is qint::ref::conv.
//
// Saturation. vpmaddubsw returns sat16(x0 * w0 + x1 * w1) for u8 x and s8 w, exact iff
// |x0 * w0 + x1 * w1| <= 2 * xmax * wmax <= 32767. With xmax = 2^a - 1 of the input point and
// wmax = max |w8| of the layer (w8 = level - offset, pack.hpp):
//   weights <= 6 bits (|w8| <= 63): 2 * 255 * 63 = 32130, exact for every activation width;
//   7-bit weights (|w8| <= 127): exact up to 7-bit activations (2 * 127 * 127 = 32258);
//   8-bit weights (|w8| <= 128): exact up to 7-bit activations (2 * 127 * 128 = 32512);
//   8-bit activations with 7/8-bit weights (e.g. W8A8: 2 * 255 * 128 = 65280) can saturate.
// pack_conv sets avx2_split when 2 * xmax * max|w8| > 32767 (the measured max, not the bound);
// those layers split each activation byte into nibbles x = 16 * xh + xl (xl, xh <= 15, so
// 2 * 15 * 128 = 3840 cannot saturate) and add madd(xl * w, 1) + madd(xh * w, 16): exact.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "brecq/kernels/int/gemm_common.hpp"

namespace brecq::kernels::qint::avx2 {

namespace detail {
using qint::detail::Epilogue;
using qint::detail::Row;

/// Arithmetic right shift of int64 lanes by per-lane counts (AVX2 has only the logical one):
/// floor(x / 2^s) = ~((~x) >> s) for negative x.
__attribute__((target("avx2,fma"))) inline __m256i srav64(__m256i x, __m256i s) {
  const __m256i sign = _mm256_cmpgt_epi64(_mm256_setzero_si256(), x);
  return _mm256_xor_si256(_mm256_srlv_epi64(_mm256_xor_si256(x, sign), s), sign);
}

__attribute__((target("avx2,fma"))) inline __m256i clamp64(__m256i x, __m256i lo, __m256i hi) {
  x = _mm256_blendv_epi8(x, lo, _mm256_cmpgt_epi64(lo, x));
  return _mm256_blendv_epi8(x, hi, _mm256_cmpgt_epi64(x, hi));
}

/// The per-channel constants of 8 output channels [c, c + n), loaded once for all rows of a tile.
struct Channels8 {
  int64_t c = 0;
  int n = 0;
  __m256i m, offset, col, mul_e, mul_o, m2_e, m2_o, sh_e, sh_o, rnd_e, rnd_o;
};

__attribute__((target("avx2,fma"))) inline Channels8 load_channels(const Epilogue& ep, int64_t c,
                                                                   int n) {
  Channels8 ch;
  ch.c = c;
  ch.n = n;
  ch.m = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  const __m256i zero = _mm256_setzero_si256();
  ch.offset = _mm256_maskload_epi32(ep.offset + c, ch.m);
  ch.col = ep.has_col ? _mm256_maskload_epi32(ep.col + c, ch.m) : zero;
  ch.mul_e = ch.mul_o = ch.m2_e = ch.m2_o = ch.sh_e = ch.sh_o = ch.rnd_e = ch.rnd_o = zero;
  if (ep.out_s32) return ch;
  const Requant& q = *ep.rq;
  ch.mul_e = _mm256_maskload_epi32(q.multiplier + c, ch.m);
  ch.mul_o = _mm256_srli_epi64(ch.mul_e, 32);
  if (ep.residual != ResidualKind::none) {
    ch.m2_e = _mm256_maskload_epi32(q.residual_multiplier + c, ch.m);
    ch.m2_o = _mm256_srli_epi64(ch.m2_e, 32);
  }
  const __m256i sh = _mm256_maskload_epi32(q.shift + c, ch.m);
  const __m256i one = _mm256_set1_epi64x(1);
  ch.sh_e = _mm256_and_si256(sh, _mm256_set1_epi64x(0xFFFFFFFFLL));
  ch.sh_o = _mm256_srli_epi64(sh, 32);
  ch.rnd_e = _mm256_sllv_epi64(one, _mm256_sub_epi64(ch.sh_e, one));  // masked lanes: 0
  ch.rnd_o = _mm256_sllv_epi64(one, _mm256_sub_epi64(ch.sh_o, one));
  return ch;
}

/// Requantizes channels [c, c + n) (n <= 8) of one row.
__attribute__((target("avx2,fma"))) inline void epilogue8(__m256i acc, const Epilogue& ep,
                                                          const Channels8& ch, const Row& row) {
  const int64_t c = ch.c;
  const int n = ch.n;
  __m256i v = _mm256_add_epi32(acc, ch.offset);
  if (ep.has_col)  // wraps mod 2^32 like the sum it corrects; the true value fits in int32
    v = _mm256_add_epi32(v, _mm256_mullo_epi32(ch.col, _mm256_set1_epi32(row.colsum)));
  if (ep.out_s32) {
    _mm256_maskstore_epi32(ep.out_s32 + row.pix * ep.channels + c, ch.m, v);
    return;
  }
  const Requant& q = *ep.rq;
  __m256i ev = _mm256_mul_epi32(v, ch.mul_e);
  __m256i od = _mm256_mul_epi32(_mm256_srli_epi64(v, 32), ch.mul_o);
  if (ep.residual != ResidualKind::none) {
    __m256i t;
    if (ep.residual == ResidualKind::u8) {
      const int64_t rc = c - ep.res_pad;
      if (rc >= 0 && rc + n <= ep.res_channels && n == 8) {
        __m128i b;
        std::memcpy(&b, row.res + rc, 8);
        t = _mm256_sub_epi32(_mm256_cvtepu8_epi32(b), _mm256_set1_epi32(ep.res_zero));
      } else {  // option A's zero channels or a partial vector: 0 outside the operand
        alignas(32) int32_t tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int j = 0; j < n; ++j)
          if (rc + j >= 0 && rc + j < ep.res_channels) tmp[j] = row.res[rc + j] - ep.res_zero;
        t = _mm256_load_si256(reinterpret_cast<const __m256i*>(tmp));
      }
    } else {
      t = _mm256_maskload_epi32(ep.res_s32 + row.pix * ep.channels + c, ch.m);
    }
    ev = _mm256_add_epi64(ev, _mm256_mul_epi32(t, ch.m2_e));
    od = _mm256_add_epi64(od, _mm256_mul_epi32(_mm256_srli_epi64(t, 32), ch.m2_o));
  }
  ev = srav64(_mm256_add_epi64(ev, ch.rnd_e), ch.sh_e);
  od = srav64(_mm256_add_epi64(od, ch.rnd_o), ch.sh_o);
  const __m256i z = _mm256_set1_epi64x(q.out_zero), lo = _mm256_set1_epi64x(q.lo),
                hi = _mm256_set1_epi64x(q.hi);
  ev = clamp64(_mm256_add_epi64(ev, z), lo, hi);
  od = clamp64(_mm256_add_epi64(od, z), lo, hi);
  const __m256i y = _mm256_or_si256(ev, _mm256_slli_epi64(od, 32));  // 8 int32 in [0, 255]
  const __m128i w16 = _mm_packus_epi32(_mm256_castsi256_si128(y), _mm256_extracti128_si256(y, 1));
  const __m128i b8 = _mm_packus_epi16(w16, w16);
  uint8_t* dst = ep.out_u8 + row.pix * ep.channels + c;
  if (n == 8) {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), b8);
  } else {
    alignas(16) uint8_t tmp[16];
    _mm_store_si128(reinterpret_cast<__m128i*>(tmp), b8);
    std::memcpy(dst, tmp, static_cast<size_t>(n));
  }
}

/// One register tile: 4 rows x 16 channels of a 16-channel panel ([K/4][16][4] s8).
template <bool kSplit>
__attribute__((target("avx2,fma"))) inline void tile(const uint8_t* const* ind, int taps, int nrows,
                                                     const int8_t* B, int64_t k4t, int64_t c0,
                                                     int nc, const Row* info, const Epilogue& ep) {
  constexpr int MR = 4;
  __m256i acc[MR][2];
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
  const __m256i ones = _mm256_set1_epi16(1), sixteen = _mm256_set1_epi16(16),
                nibble = _mm256_set1_epi8(0x0F);
  for (int t = 0; t < taps; ++t) {
    const uint8_t* rows[MR];
    for (int r = 0; r < MR; ++r) rows[r] = ind[std::min(r, nrows - 1) * taps + t];
    const int8_t* Bt = B + t * k4t * 64;
    for (int64_t k = 0; k < k4t; ++k) {
      const __m256i b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(Bt + k * 64));
      const __m256i b1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(Bt + k * 64 + 32));
#pragma GCC unroll 4
      for (int r = 0; r < MR; ++r) {
        int32_t x;
        std::memcpy(&x, rows[r] + 4 * k, 4);
        const __m256i a = _mm256_set1_epi32(x);
        if constexpr (!kSplit) {
          acc[r][0] =
              _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(_mm256_maddubs_epi16(a, b0), ones));
          acc[r][1] =
              _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(_mm256_maddubs_epi16(a, b1), ones));
        } else {
          const __m256i al = _mm256_and_si256(a, nibble);
          const __m256i ah = _mm256_and_si256(_mm256_srli_epi16(a, 4), nibble);
          acc[r][0] = _mm256_add_epi32(
              acc[r][0],
              _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(al, b0), ones),
                               _mm256_madd_epi16(_mm256_maddubs_epi16(ah, b0), sixteen)));
          acc[r][1] = _mm256_add_epi32(
              acc[r][1],
              _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(al, b1), ones),
                               _mm256_madd_epi16(_mm256_maddubs_epi16(ah, b1), sixteen)));
        }
      }
    }
  }
  // Stored first: a run-time row index into acc would keep the accumulators in memory.
  alignas(32) int32_t out[MR][16];
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(out[r]), acc[r][0]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(out[r] + 8), acc[r][1]);
  }
  for (int v = 0; v < 2 && 8 * v < nc; ++v) {
    const Channels8 ch = load_channels(ep, c0 + 8 * v, std::min(8, nc - 8 * v));
    for (int r = 0; r < nrows; ++r)
      epilogue8(_mm256_load_si256(reinterpret_cast<const __m256i*>(out[r] + 8 * v)), ep, ch,
                info[r]);
  }
}

/// Depthwise 3x3 over pixels [p0, p1): vpmaddwd of (x - zx) in 32-bit lanes against (wq - zw)
/// in the low 16 bits (high bits zero), 8 channels at a time.
__attribute__((target("avx2,fma"))) inline void depthwise_rows(const PackedConv& pc,
                                                               const ConvArgs& a, int64_t p0,
                                                               int64_t p1, const Epilogue& ep) {
  const ConvGeometry& g = pc.geometry;
  const int64_t OH = g.out_h(a.height), OW = g.out_w(a.width), C = g.out_channels;
  const __m256i zx = _mm256_set1_epi32(pc.input_zero_point);
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
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
    for (int64_t c = 0; c < C; c += 8) {
      const int nc = static_cast<int>(std::min<int64_t>(8, C - c));
      const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(nc), lanes);
      __m256i acc = _mm256_setzero_si256();
      for (int t = 0; t < nt; ++t) {
        __m128i b = _mm_setzero_si128();
        std::memcpy(&b, taps[t] + c, static_cast<size_t>(nc));
        const __m256i x = _mm256_sub_epi32(_mm256_cvtepu8_epi32(b), zx);
        acc = _mm256_add_epi32(
            acc, _mm256_madd_epi16(x, _mm256_maskload_epi32(pc.wdw.data() + tap_id[t] * C + c, m)));
      }
      epilogue8(acc, ep, load_channels(ep, c, nc), row);
    }
  }
}

}  // namespace detail

inline void conv(const PackedConv& pc, const ConvArgs& a) {
  qint::detail::check_conv_args(pc, a, "qint::avx2::conv");
  check(pc.isa == Isa::avx2, "qint::avx2::conv: weights packed for ", isa_name(pc.isa));
  check_isa(Isa::avx2, "qint::avx2::conv");
  if (pc.layout == PackedLayout::depthwise) {
    const ConvGeometry& g = pc.geometry;
    const int64_t P = a.batch * g.out_h(a.height) * g.out_w(a.width);
    const qint::detail::Epilogue ep = qint::detail::make_epilogue(pc, a);
    parallel_for(0, P, 32, a.threads,
                 [&](int64_t b, int64_t e) { detail::depthwise_rows(pc, a, b, e, ep); });
    return;
  }
  const bool split = pc.avx2_split;
  qint::detail::gemm_conv(
      pc, a, 4,
      [&](const uint8_t* const* ind, int taps, int nrows, const int8_t* B, int64_t k4t, int64_t c0,
          int nc, const qint::detail::Row* info, const qint::detail::Epilogue& ep) {
        if (split)
          detail::tile<true>(ind, taps, nrows, B, k4t, c0, nc, info, ep);
        else
          detail::tile<false>(ind, taps, nrows, B, k4t, c0, nc, info, ep);
      });
}

}  // namespace brecq::kernels::qint::avx2
