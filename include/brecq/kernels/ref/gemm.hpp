#pragma once
// Scalar ground truth for SGEMM.
#include <cstdint>

#include "brecq/kernels/params.hpp"

namespace brecq::kernels::ref {

inline void sgemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                  int64_t ldb, float* C, int64_t ldc, const GemmParams& p = {}) {
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      double acc = 0.0;
      for (int64_t k = 0; k < K; ++k) {
        float a = p.trans_a ? A[k * lda + i] : A[i * lda + k];
        float b = p.trans_b ? B[j * ldb + k] : B[k * ldb + j];
        acc += static_cast<double>(a) * b;
      }
      float& c = C[i * ldc + j];
      c = static_cast<float>(p.alpha * acc + (p.beta == 0.0f ? 0.0f : p.beta * c));
    }
  }
}

}  // namespace brecq::kernels::ref
