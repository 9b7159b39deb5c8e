#pragma once
// xsimd versions of kernels/ref/fake_quant.hpp, split over threads. The scale gradient sums
// float lanes over blocks of kBlock values, then the blocks in double.
#include <cstdint>
#include <vector>
#include <xsimd/xsimd.hpp>

#include "brecq/kernels/ref/fake_quant.hpp"
#include "brecq/tensor/parallel.hpp"

namespace brecq::kernels::simd {

namespace detail {
constexpr int64_t kFakeQuantGrain = 1 << 14;
}  // namespace detail

inline void fake_quant(const float* x, int64_t n, float s, float zp, float qmax, float* y) {
  using B = xsimd::batch<float>;
  constexpr int64_t L = B::size;
  parallel_for(0, n, detail::kFakeQuantGrain, [=](int64_t begin, int64_t end) {
    const B vs(s), vz(zp), top(qmax), zero(0.0f);
    int64_t i = begin;
    for (; i + L <= end; i += L) {
      const B q =
          xsimd::min(xsimd::max(xsimd::nearbyint(B::load_unaligned(x + i) / vs) + vz, zero), top);
      ((q - vz) * vs).store_unaligned(y + i);
    }
    ref::fake_quant(x + i, end - i, s, zp, qmax, y + i);
  });
}

inline double fake_quant_backward(const float* x, const float* g, int64_t n, float s, float zp,
                                  float qmax, float* dx) {
  using B = xsimd::batch<float>;
  constexpr int64_t L = B::size, kBlock = 256;
  std::vector<double> partial(static_cast<size_t>(num_threads()), 0.0);
  parallel_for(0, n, detail::kFakeQuantGrain, [&, x, g, dx](int64_t begin, int64_t end) {
    const B vs(s), vz(zp), top(qmax), zero(0.0f);
    double ds = 0.0;
    int64_t i = begin;
    while (i + L <= end) {
      B acc(0.0f);
      for (const int64_t stop = std::min(end, i + kBlock); i + L <= stop; i += L) {
        const B v = B::load_unaligned(x + i) / vs, r = xsimd::nearbyint(v), q = r + vz;
        const auto inside = (q >= zero) & (q <= top);
        const B gv = B::load_unaligned(g + i);
        if (dx) xsimd::select(inside, gv, zero).store_unaligned(dx + i);
        acc = xsimd::fma(
            gv, xsimd::select(inside, r - v, xsimd::min(xsimd::max(q, zero), top) - vz), acc);
      }
      ds += xsimd::hadd(acc);
    }
    ds += ref::fake_quant_backward(x + i, g + i, end - i, s, zp, qmax, dx ? dx + i : nullptr);
    partial[static_cast<size_t>(thread_index())] += ds;
  });
  double total = 0.0;
  for (double v : partial) total += v;
  return total;
}

}  // namespace brecq::kernels::simd
