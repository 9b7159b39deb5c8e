#pragma once
// xsimd versions of kernels/ref/adaround.hpp, split over threads.
#include <algorithm>
#include <cstdint>
#include <vector>
#include <xsimd/xsimd.hpp>

#include "brecq/kernels/ref/adaround.hpp"
#include "brecq/tensor/parallel.hpp"

namespace brecq::kernels::simd {

namespace detail {
using AdaBatch = xsimd::batch<float>;
constexpr int64_t kAdaRoundGrain = 1 << 13;

/// h(alpha) and dh/dalpha for a batch.
inline void adaround_h(AdaBatch alpha, AdaBatch& h, AdaBatch& dh) {
  const AdaBatch one(1.0f), zero(0.0f), span(kAdaRoundZeta - kAdaRoundGamma);
  const AdaBatch sig = one / (one + xsimd::exp(-alpha));
  const AdaBatch raw = xsimd::fma(sig, span, AdaBatch(kAdaRoundGamma));
  h = xsimd::min(xsimd::max(raw, zero), one);
  dh = xsimd::select((raw >= zero) & (raw <= one), span * sig * (one - sig), zero);
}
}  // namespace detail

inline void adaround_soft_weight(const float* alpha, const float* floor_q, const float* scale,
                                 const float* zero_point, int64_t n, int64_t per_channel,
                                 float qmax, float* w, float* dw) {
  using B = detail::AdaBatch;
  constexpr int64_t L = B::size;
  const int64_t channels = n / per_channel;
  parallel_for(
      0, channels, std::max<int64_t>(1, detail::kAdaRoundGrain / per_channel),
      [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) {
          const int64_t begin = c * per_channel, end = begin + per_channel;
          const B s(scale[c]), zp(zero_point[c]), top(qmax), zero(0.0f);
          int64_t i = begin;
          for (; i + L <= end; i += L) {
            B h, dh;
            detail::adaround_h(B::load_unaligned(alpha + i), h, dh);
            const B v = B::load_unaligned(floor_q + i) + h + zp;
            ((xsimd::min(xsimd::max(v, zero), top) - zp) * s).store_unaligned(w + i);
            if (dw) xsimd::select((v >= zero) & (v <= top), s * dh, zero).store_unaligned(dw + i);
          }
          ref::adaround_soft_weight(alpha + i, floor_q + i, scale + c, zero_point + c, end - i,
                                    per_channel, qmax, w + i, dw ? dw + i : nullptr);
        }
      });
}

inline double adaround_regularizer(const float* alpha, int64_t n, float beta, float* d) {
  using B = detail::AdaBatch;
  std::vector<double> partial(static_cast<size_t>(num_threads()), 0.0);
  parallel_for(0, n, detail::kAdaRoundGrain, [&](int64_t begin, int64_t end) {
    constexpr int64_t L = B::size;
    const B zero(0.0f), one(1.0f), two(2.0f), b(beta), bm1(beta - 1.0f);
    B acc(0.0f);
    int64_t i = begin;
    for (; i + L <= end; i += L) {
      B h, dh;
      detail::adaround_h(B::load_unaligned(alpha + i), h, dh);
      const B t = xsimd::fma(two, h, -one), a = xsimd::abs(t), log_a = xsimd::log2(a);
      const auto is_zero = a == zero;
      acc += one - xsimd::select(is_zero, zero, xsimd::exp2(b * log_a));
      const B grad = -b * xsimd::exp2(bm1 * log_a) * xsimd::select(t > zero, two, -two) * dh;
      xsimd::select(is_zero, zero, grad).store_unaligned(d + i);
    }
    partial[static_cast<size_t>(thread_index())] +=
        xsimd::hadd(acc) + ref::adaround_regularizer(alpha + i, end - i, beta, d + i);
  });
  double total = 0.0;
  for (double v : partial) total += v;
  return total;
}

}  // namespace brecq::kernels::simd
