#pragma once
// In-register transpose of a square block of SIMD vectors, shared by the GEMM packing and the
// Winograd layout conversions.
#include <cstdint>
#include <xsimd/xsimd.hpp>
#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace brecq::kernels::simd {

using Square = xsimd::batch<float>[xsimd::batch<float>::size];

/// Transposes a square of vectors in place: r[i][j] <- r[j][i]. With 8-float AVX vectors, the
/// classic unpack / shuffle / cross-lane permute sequence in registers (xsimd 8's zip_lo and
/// zip_hi work within 128-bit lanes there, so they cannot express it); otherwise through a small
/// buffer.
inline void transpose_square(Square& r) {
  using Vec = xsimd::batch<float>;
  constexpr int64_t kW = static_cast<int64_t>(Vec::size);
#if defined(__AVX__) && !defined(__AVX512F__)
  if constexpr (kW == 8) {
    __m256 t[8], s[8];
    for (int i = 0; i < 4; ++i) {
      t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; ++i) {
      s[4 * i + 0] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
      s[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
      s[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
      s[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int i = 0; i < 4; ++i) {
      r[i] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x20);
      r[i + 4] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x31);
    }
    return;
  }
#endif
  alignas(64) float buf[kW][kW];
  for (int64_t i = 0; i < kW; ++i) r[i].store_aligned(buf[i]);
  for (int64_t i = 0; i < kW; ++i) {
    alignas(64) float col[kW];
    for (int64_t j = 0; j < kW; ++j) col[j] = buf[j][i];
    r[i] = Vec::load_aligned(col);
  }
}

}  // namespace brecq::kernels::simd
