#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "brecq/kernels/lp.hpp"
#include "brecq/kernels/ref/lp.hpp"
#include "brecq/tensor/rng.hpp"

using namespace brecq;

TEST_CASE("simd weighted L_p distance and its gradient match the scalar reference") {
  Rng rng(17);
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (int64_t n : {1, 7, 16, 33, 1000, 70001}) {
      std::vector<float> a(static_cast<size_t>(n)), b(a.size()), w(a.size());
      for (size_t i = 0; i < a.size(); ++i) {
        a[i] = rng.uniform(-2, 2);
        b[i] = i % 5 == 0 ? a[i] : rng.uniform(-2, 2);  // exact zeros of the difference too
        w[i] = rng.uniform(0.5f, 2.0f);
      }
      for (float p : {2.0f, 2.4f, 1.5f, 3.0f})
        for (const float* wp :
             {static_cast<const float*>(nullptr), static_cast<const float*>(w.data())}) {
          CAPTURE(threads);
          CAPTURE(n);
          CAPTURE(p);
          const double ref = kernels::ref::lp_distance(a.data(), b.data(), wp, n, p);
          CHECK(kernels::lp_distance(a.data(), b.data(), wp, n, p) ==
                doctest::Approx(ref).epsilon(1e-4));
          std::vector<float> gr(a.size()), gs(a.size(), -7.0f);
          CHECK(kernels::ref::lp_distance(a.data(), b.data(), wp, n, p, gr.data()) == ref);
          const double fast = kernels::lp_distance(a.data(), b.data(), wp, n, p, gs.data());
          CHECK(fast == doctest::Approx(ref).epsilon(1e-4));
          for (size_t i = 0; i < gr.size(); ++i)
            REQUIRE(std::fabs(gs[i] - gr[i]) <= 1e-4f * (1.0f + std::fabs(gr[i])));
        }
    }
  }
  set_num_threads(2);
}
