#pragma once
// xsimd versions of kernels/ref/lp.hpp: |d|^p as exp2(p log2 |d|), split over threads.
#include <xsimd/xsimd.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

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
  return xsimd::select(a == FloatBatch(0.0f), FloatBatch(0.0f), xsimd::exp2(FloatBatch(e) * xsimd::log2(a)));
}
}  // namespace detail

inline double lp_distance(const float* a, const float* b, const float* w, int64_t n, float p) {
  std::vector<double> partial(static_cast<size_t>(num_threads()), 0.0);
  parallel_for(0, n, detail::kLpGrain, [&](int64_t begin, int64_t end) {
    constexpr int64_t L = detail::FloatBatch::size;
    detail::FloatBatch acc(0.0f);
    int64_t i = begin;
    for (; i + L <= end; i += L) {
      const auto d = detail::FloatBatch::load_unaligned(a + i) - detail::FloatBatch::load_unaligned(b + i);
      auto t = detail::abs_pow(d, p);
      if (w) {
        const auto wv = detail::FloatBatch::load_unaligned(w + i);
        t = t * wv * wv;
      }
      acc += t;
    }
    double s = xsimd::hadd(acc);
    s += ref::lp_distance(a + i, b + i, w ? w + i : nullptr, end - i, p);
    partial[static_cast<size_t>(thread_index())] += s;
  });
  double total = 0.0;
  for (double v : partial) total += v;
  return total;
}

inline void lp_distance_grad(const float* a, const float* b, const float* w, int64_t n, float p,
                             float scale, float* out) {
  parallel_for(0, n, detail::kLpGrain, [&](int64_t begin, int64_t end) {
    constexpr int64_t L = detail::FloatBatch::size;
    int64_t i = begin;
    for (; i + L <= end; i += L) {
      const auto d = detail::FloatBatch::load_unaligned(a + i) - detail::FloatBatch::load_unaligned(b + i);
      auto g = detail::abs_pow(d, p - 1.0f) * xsimd::sign(d) * detail::FloatBatch(p * scale);
      if (w) {
        const auto wv = detail::FloatBatch::load_unaligned(w + i);
        g = g * wv * wv;
      }
      g.store_unaligned(out + i);
    }
    ref::lp_distance_grad(a + i, b + i, w ? w + i : nullptr, end - i, p, scale, out + i);
  });
}

}  // namespace brecq::kernels::simd
