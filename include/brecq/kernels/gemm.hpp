#pragma once
// Dispatch point used by ops: the fast path for every call.
#include "brecq/kernels/simd/gemm.hpp"

namespace brecq::kernels {

inline void sgemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                  int64_t ldb, float* C, int64_t ldc, const GemmParams& p = {}) {
  simd::sgemm(M, N, K, A, lda, B, ldb, C, ldc, p);
}

}  // namespace brecq::kernels
