#pragma once
// xsimd versions of kernels/ref/lp.hpp: |d|^p as exp2(p log2 |d|), split over threads. With the
// gradient, one pass: p |d|^(p-1) sign(d) = p |d|^p / d, so each element costs one exp2/log2.
#include <cmath>
#include <cstdint>
#include <vector>
#include <xsimd/xsimd.hpp>

#include "brecq/kernels/ref/lp.hpp"
#include "brecq/tensor/parallel.hpp"

namespace brecq::kernels::simd {

namespace detail {
using FloatBatch = xsimd::batch<float>;
constexpr int64_t kLpGrain = 1 << 14;

/// |d|^e for a batch, with 0^e = 0 for e > 0.
inline FloatBatch abs_pow(FloatBatch d, float e) {
  const FloatBatch a = xsimd::abs(d);
  if (e == 1.0f) return a;
  if (e == 2.0f) return a * a;
  return xsimd::select(a == FloatBatch(0.0f), FloatBatch(0.0f),
                       xsimd::exp2(FloatBatch(e) * xsimd::log2(a)));
}
}  // namespace detail

inline double lp_distance(const float* a, const float* b, const float* w, int64_t n, float p,
                          float* grad = nullptr) {
  using B = detail::FloatBatch;
  std::vector<double> partial(static_cast<size_t>(num_threads()), 0.0);
  parallel_for(0, n, detail::kLpGrain, [&, a, b, w, grad](int64_t begin, int64_t end) {
    constexpr int64_t L = B::size;
    const B vp(p), zero(0.0f);
    B acc(0.0f);
    int64_t i = begin;
    for (; i + L <= end; i += L) {
      const B d = B::load_unaligned(a + i) - B::load_unaligned(b + i);
      const B w2 = w ? B::load_unaligned(w + i) * B::load_unaligned(w + i) : B(1.0f);
      const B t = detail::abs_pow(d, p) * w2;
      acc += t;
      if (grad) xsimd::select(d == zero, zero, vp * t / d).store_unaligned(grad + i);
    }
    double s = xsimd::hadd(acc);
    s += ref::lp_distance(a + i, b + i, w ? w + i : nullptr, end - i, p, grad ? grad + i : nullptr);
    partial[static_cast<size_t>(thread_index())] += s;
  });
  double total = 0.0;
  for (double v : partial) total += v;
  return total;
}

}  // namespace brecq::kernels::simd
