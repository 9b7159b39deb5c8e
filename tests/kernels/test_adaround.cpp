#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "brecq/kernels/adaround.hpp"
#include "brecq/kernels/ref/adaround.hpp"
#include "brecq/tensor/rng.hpp"

using namespace brecq;

TEST_CASE(
    "simd AdaRound soft weights, regulariser and their gradients match the scalar reference") {
  Rng rng(5);
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    // (channels, per channel): odd sizes, fewer elements than a vector, many channels
    for (auto [channels, per] :
         {std::pair<int64_t, int64_t>{1, 1}, {3, 7}, {5, 33}, {64, 576}, {1, 20011}}) {
      const int64_t n = channels * per;
      std::vector<float> alpha(static_cast<size_t>(n)), floor_q(alpha.size()),
          scale(static_cast<size_t>(channels)), zp(scale.size());
      for (size_t i = 0; i < alpha.size(); ++i) {
        alpha[i] =
            i % 7 == 0 ? rng.uniform(-12, 12) : rng.uniform(-3, 3);  // saturated h(alpha) too
        floor_q[i] = std::floor(rng.uniform(-3, 5));                 // some land outside [0, qmax]
      }
      for (size_t c = 0; c < scale.size(); ++c)
        scale[c] = rng.uniform(0.01f, 0.5f), zp[c] = 1.0f + c % 2;
      CAPTURE(threads);
      CAPTURE(n);
      std::vector<float> wr(alpha.size()), dwr(alpha.size()), ws(alpha.size()), dws(alpha.size());
      kernels::ref::adaround_soft_weight(alpha.data(), floor_q.data(), scale.data(), zp.data(), n,
                                         per, 3.0f, wr.data(), dwr.data());
      kernels::adaround_soft_weight(alpha.data(), floor_q.data(), scale.data(), zp.data(), n, per,
                                    3.0f, ws.data(), dws.data());
      for (size_t i = 0; i < wr.size(); ++i) {
        REQUIRE(std::fabs(ws[i] - wr[i]) <= 1e-5f * (1.0f + std::fabs(wr[i])));
        REQUIRE(std::fabs(dws[i] - dwr[i]) <= 1e-5f * (1.0f + std::fabs(dwr[i])));
      }
      for (float beta : {20.0f, 7.3f, 2.0f}) {
        CAPTURE(beta);
        std::vector<float> dr(alpha.size()), ds(alpha.size());
        const double ref = kernels::ref::adaround_regularizer(alpha.data(), n, beta, dr.data());
        const double fast = kernels::adaround_regularizer(alpha.data(), n, beta, ds.data());
        CHECK(fast == doctest::Approx(ref).epsilon(1e-4));
        for (size_t i = 0; i < dr.size(); ++i)
          REQUIRE(std::fabs(ds[i] - dr[i]) <= 1e-4f * (1.0f + std::fabs(dr[i])));
      }
    }
  }
  set_num_threads(2);
}
