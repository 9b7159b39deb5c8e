// simd::adam_update against the scalar reference over several steps: odd sizes, weight decay,
// 1 and 2 threads.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "brecq/kernels/adam.hpp"
#include "brecq/kernels/ref/adam.hpp"
#include "brecq/tensor/rng.hpp"

using namespace brecq;

TEST_CASE("simd Adam update matches the scalar reference") {
  Rng rng(31);
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (int64_t n : {1, 7, 9, 1000, 40001}) {
      std::vector<float> w(static_cast<size_t>(n)), g(w.size());
      for (size_t i = 0; i < w.size(); ++i) w[i] = rng.uniform(-1, 1);
      std::vector<float> wr = w, mr(w.size()), vr(w.size()), ws = w, ms(w.size()), vs(w.size());
      for (int t = 1; t <= 3; ++t) {
        for (float& x : g) x = rng.uniform(-1, 1);
        const kernels::AdamStep s{0.9f,
                                  0.999f,
                                  1e-8f,
                                  0.01f,
                                  static_cast<float>(1e-3 / (1 - std::pow(0.9, t))),
                                  static_cast<float>(std::sqrt(1 - std::pow(0.999, t)))};
        kernels::ref::adam_update(wr.data(), g.data(), mr.data(), vr.data(), n, s);
        kernels::adam_update(ws.data(), g.data(), ms.data(), vs.data(), n, s);
      }
      CAPTURE(threads);
      CAPTURE(n);
      for (size_t i = 0; i < w.size(); ++i) {
        REQUIRE(ws[i] == doctest::Approx(wr[i]).epsilon(1e-6));
        REQUIRE(ms[i] == doctest::Approx(mr[i]).epsilon(1e-6));
        REQUIRE(vs[i] == doctest::Approx(vr[i]).epsilon(1e-6));
      }
    }
  }
  set_num_threads(2);
}
