#pragma once
// The only file with OpenMP pragmas. Work is split into [begin, end) ranges; the thread count
// follows OMP_NUM_THREADS (or set_num_threads).
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <utility>

namespace brecq {

inline int num_threads() { return omp_get_max_threads(); }
inline void set_num_threads(int n) { omp_set_num_threads(n < 1 ? 1 : n); }
inline int thread_index() { return omp_get_thread_num(); }
/// True inside a parallel region (where parallel_for runs serially).
inline bool in_parallel() { return omp_in_parallel() != 0; }

/// parallel_for with an explicit thread count (at most `threads` workers, serially when 1 or
/// inside a parallel region), for callers that own their thread budget (the integer runtime).
template <typename F>
inline void parallel_for(int64_t begin, int64_t end, int64_t grain, int threads, F&& f) {
  int64_t n = end - begin;
  if (n <= 0) return;
  int64_t max_chunks = std::max<int64_t>(1, n / std::max<int64_t>(1, grain));
  int t_used = static_cast<int>(std::min<int64_t>(threads, max_chunks));
  if (t_used <= 1 || omp_in_parallel()) {
    f(begin, end);
    return;
  }
#pragma omp parallel num_threads(t_used)
  {
    int t = omp_get_thread_num();
    int nt = omp_get_num_threads();
    int64_t b = begin + n * t / nt;
    int64_t e = begin + n * (t + 1) / nt;
    if (b < e) f(b, e);
  }
}

/// Calls f(b, e) on disjoint sub-ranges covering [begin, end), in parallel (OMP_NUM_THREADS
/// workers) when the range holds at least two grains of work. f must be safe to run
/// concurrently on disjoint ranges.
template <typename F>
inline void parallel_for(int64_t begin, int64_t end, int64_t grain, F&& f) {
  parallel_for(begin, end, grain, num_threads(), std::forward<F>(f));
}

}  // namespace brecq
