// simd::sgemm against ref::sgemm: every transpose combination, odd and blocking-crossing sizes,
// padded leading dimensions, alpha/beta, and 1 and 2 threads.
#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <vector>

#include "brecq/kernels/ref/gemm.hpp"
#include "brecq/kernels/simd/gemm.hpp"
#include "check.hpp"

namespace {

using brecq::kernels::GemmParams;

struct GemmCase {
  int64_t M, N, K;
  GemmParams p;
  int64_t pad = 0;  // extra columns in every leading dimension
};

void check_gemm(const GemmCase& c) {
  CAPTURE(c.M);
  CAPTURE(c.N);
  CAPTURE(c.K);
  CAPTURE(c.p.trans_a);
  CAPTURE(c.p.trans_b);
  CAPTURE(c.p.alpha);
  CAPTURE(c.p.beta);
  const int64_t lda = (c.p.trans_a ? c.M : c.K) + c.pad, ldb = (c.p.trans_b ? c.K : c.N) + c.pad;
  const int64_t ldc = c.N + c.pad;
  const auto a = brecq::test::random_buffer((c.p.trans_a ? c.K : c.M) * lda, 1);  // op(A): M x K
  const auto b = brecq::test::random_buffer((c.p.trans_b ? c.N : c.K) * ldb, 2);  // op(B): K x N
  auto want = brecq::test::random_buffer(c.M * ldc, 3);
  if (c.p.beta == 0.0f)  // beta == 0 must not read C
    for (float& x : want) x = std::numeric_limits<float>::quiet_NaN();
  auto got = want;
  brecq::kernels::ref::sgemm(c.M, c.N, c.K, a.data(), lda, b.data(), ldb, want.data(), ldc, c.p);
  brecq::test::for_thread_counts([&] {
    auto out = got;
    brecq::kernels::simd::sgemm(c.M, c.N, c.K, a.data(), lda, b.data(), ldb, out.data(), ldc, c.p);
    if (c.p.beta == 0.0f && c.pad > 0)  // untouched padding stays NaN in both
      for (int64_t i = 0; i < c.M; ++i)
        for (int64_t j = c.N; j < ldc; ++j) out[i * ldc + j] = want[i * ldc + j] = 0.0f;
    brecq::test::check_close(out, want);
  });
}

constexpr bool kTrans[2] = {false, true};

}  // namespace

TEST_CASE("simd::sgemm matches ref on odd sizes, all transposes") {
  for (bool ta : kTrans)
    for (bool tb : kTrans)
      for (int64_t m : {1, 3, 17, 63})
        for (int64_t n : {1, 3, 17, 63, 129})
          for (int64_t k : {1, 3, 17, 129})
            check_gemm({m, n, k, {.trans_a = ta, .trans_b = tb, .alpha = 1.0f, .beta = 0.0f}});
}

TEST_CASE("simd::sgemm alpha, beta and padded leading dimensions") {
  for (bool ta : kTrans)
    for (bool tb : kTrans)
      for (float beta : {0.0f, 1.0f, -0.5f})
        for (int64_t pad : {0, 5})
          check_gemm(
              {19, 35, 41, {.trans_a = ta, .trans_b = tb, .alpha = 1.5f, .beta = beta}, pad});
}

TEST_CASE("simd::sgemm across cache blocks and thread splits") {
  // > kMC rows, > kNC columns and > kKC depth: several packed blocks and beta = 1 after the first
  // K slice; 16 x N x large K takes the K split and the dot-product path for A * B^T.
  for (bool ta : kTrans)
    for (bool tb : kTrans) {
      check_gemm({197, 1043, 261, {.trans_a = ta, .trans_b = tb, .alpha = 1.0f, .beta = 0.5f}});
      check_gemm({16, 20, 5003, {.trans_a = ta, .trans_b = tb, .alpha = 1.0f, .beta = 0.0f}});
    }
  check_gemm({16, 144, 1030, {.trans_a = false, .trans_b = true}});
  check_gemm({20, 100, 1024, {}});  // 4 KiB rows of A: packed rather than read in place
  check_gemm({5, 7, 3000, {.trans_a = false, .trans_b = true, .alpha = 2.0f, .beta = 1.0f}});
  // few rows of C and long rows of B: B blocks packed row by row (kNC-wide blocks, a tail panel)
  check_gemm({16, 2071, 37, {.alpha = 1.0f, .beta = 0.5f}});
  check_gemm({3, 1100, 300, {}});
  // ... for many rows of C too when B's rows are a page apart; with a shallow K (a partial last
  // row group) C is then swept by rows of tiles
  check_gemm({40, 1100, 21, {.trans_a = true, .alpha = 1.0f, .beta = 1.0f}});
  // transposed B with whole vector squares along K, then a partial strip
  check_gemm({40, 48, 77, {.trans_a = true, .trans_b = true}});
  // C swept by rows of tiles over several row blocks, K slices and B blocks, with A read in place
  // (600-float rows) and packed (4 KiB rows), a partial last row tile and a partial last panel
  for (bool ta : kTrans)
    for (bool tb : kTrans)
      check_gemm({203, 1061, 600, {.trans_a = ta, .trans_b = tb, .alpha = 1.0f, .beta = 0.5f}});
  check_gemm({203, 77, 1024, {.alpha = -1.0f, .beta = 1.0f}});
}

TEST_CASE("simd::sgemm every row count of the last register tiles") {
  // 1 .. 33 rows: one partial tile, and the split of the last two tiles, for kMR up to 16
  for (int64_t m = 1; m <= 33; ++m) {
    check_gemm({m, 70, 300, {.alpha = 1.0f, .beta = 0.5f}});
    check_gemm({m, 70, 300, {.trans_a = true, .alpha = 1.0f, .beta = 0.0f}});
  }
}

TEST_CASE("simd::sgemm degenerate shapes") {
  // K == 0 or alpha == 0: C = beta * C.
  check_gemm({7, 9, 0, {.alpha = 1.0f, .beta = 0.5f}});
  check_gemm({7, 9, 0, {.alpha = 1.0f, .beta = 0.0f}});
  check_gemm({7, 9, 4, {.alpha = 0.0f, .beta = 2.0f}});
  // M == 0 or N == 0: nothing to do (must not touch the pointers).
  brecq::kernels::simd::sgemm(0, 5, 3, nullptr, 3, nullptr, 5, nullptr, 5);
  brecq::kernels::simd::sgemm(5, 0, 3, nullptr, 3, nullptr, 1, nullptr, 1);
}
