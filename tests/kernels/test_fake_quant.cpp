// simd::fake_quant / fake_quant_backward against the scalar reference: odd sizes, values on
// rounding ties and outside the range, with and without an input gradient, 1 and 2 threads.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "brecq/kernels/fake_quant.hpp"
#include "brecq/kernels/ref/fake_quant.hpp"
#include "brecq/tensor/rng.hpp"

using namespace brecq;

TEST_CASE("simd fake quantization and its backward match the scalar reference") {
  Rng rng(23);
  const float s = 0.25f, zp = 3.0f, qmax = 15.0f;  // 4 bits: representable [-0.75, 3]
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (int64_t n : {1, 7, 8, 33, 1000, 70001}) {
      std::vector<float> x(static_cast<size_t>(n)), g(x.size());
      for (size_t i = 0; i < x.size(); ++i) {
        // a third exactly on half steps (ties round to even), some outside the range
        x[i] = i % 3 == 0 ? (static_cast<float>(static_cast<int>(i % 29)) - 6.5f) * s
                          : rng.uniform(-1.5f, 4.0f);
        g[i] = rng.uniform(-1, 1);
      }
      CAPTURE(threads);
      CAPTURE(n);
      std::vector<float> yr(x.size()), ys(x.size(), -9.0f), dr(x.size()), ds(x.size(), -9.0f);
      kernels::ref::fake_quant(x.data(), n, s, zp, qmax, yr.data());
      kernels::fake_quant(x.data(), n, s, zp, qmax, ys.data());
      CHECK(ys == yr);  // the same float operations, element by element
      const double ref =
          kernels::ref::fake_quant_backward(x.data(), g.data(), n, s, zp, qmax, dr.data());
      const double fast =
          kernels::fake_quant_backward(x.data(), g.data(), n, s, zp, qmax, ds.data());
      CHECK(ds == dr);
      CHECK(fast == doctest::Approx(ref).epsilon(1e-5));
      CHECK(kernels::fake_quant_backward(x.data(), g.data(), n, s, zp, qmax, nullptr) ==
            doctest::Approx(ref).epsilon(1e-5));
    }
  }
  set_num_threads(2);
}
