#pragma once
// xsimd version of kernels/ref/adam.hpp, split over threads (a plain loop stays scalar: the
// errno branch of std::sqrt keeps the compiler from vectorising it).
#include <cstdint>
#include <xsimd/xsimd.hpp>

#include "brecq/kernels/ref/adam.hpp"
#include "brecq/tensor/parallel.hpp"

namespace brecq::kernels::simd {

inline void adam_update(float* w, const float* g, float* m, float* v, int64_t n,
                        const AdamStep& s) {
  using B = xsimd::batch<float>;
  constexpr int64_t L = B::size;
  parallel_for(0, n, 1 << 14, [=](int64_t begin, int64_t end) {
    const B b1(s.beta1), b2(s.beta2), c1(1 - s.beta1), c2(1 - s.beta2), wd(s.weight_decay);
    const B step(s.step), bc2(s.bc2_sqrt), eps(s.eps);
    int64_t i = begin;
    for (; i + L <= end; i += L) {
      const B wi = B::load_unaligned(w + i);
      const B d = xsimd::fma(wd, wi, B::load_unaligned(g + i));
      const B mi = b1 * B::load_unaligned(m + i) + c1 * d;
      const B vi = b2 * B::load_unaligned(v + i) + c2 * d * d;
      mi.store_unaligned(m + i);
      vi.store_unaligned(v + i);
      (wi - step * mi / (xsimd::sqrt(vi) / bc2 + eps)).store_unaligned(w + i);
    }
    ref::adam_update(w + i, g + i, m + i, v + i, end - i, s);
  });
}

}  // namespace brecq::kernels::simd
