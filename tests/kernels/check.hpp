#pragma once
// Helpers shared by the kernel tests: seeded random buffers, a norm-relative comparison and a
// loop over thread counts.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "brecq/tensor/parallel.hpp"

namespace brecq::test {

inline std::vector<float> random_buffer(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(gen);
  return v;
}

/// ||got - want|| <= tol * max(||want||, 1e-30) and every element finite.
inline void check_close(const std::vector<float>& got, const std::vector<float>& want,
                        double tol = 1e-4) {
  REQUIRE(got.size() == want.size());
  double err = 0.0, norm = 0.0;
  bool finite = true;
  for (size_t i = 0; i < got.size(); ++i) {
    finite = finite && std::isfinite(got[i]);
    err += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
    norm += static_cast<double>(want[i]) * want[i];
  }
  CHECK(finite);
  CHECK(std::sqrt(err) <= tol * std::max(std::sqrt(norm), 1e-30));
}

/// Runs f() once with 1 thread and once with 2, restoring the thread count afterwards.
template <class F>
inline void for_thread_counts(F&& f) {
  const int saved = num_threads();
  for (int t : {1, 2}) {
    set_num_threads(t);
    CAPTURE(t);
    f();
  }
  set_num_threads(saved);
}

}  // namespace brecq::test
