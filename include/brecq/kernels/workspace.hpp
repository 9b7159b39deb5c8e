#pragma once
// Reusable scratch memory for kernels: one 64-byte aligned buffer per (thread, slot), grown on
// demand and kept until the thread exits, so hot loops never allocate. A slot is owned by one
// kernel layer at a time and nested kernels use different slots: sgemm packs into gemm_a and
// gemm_b and keeps K-split partial sums in gemm_c; conv writes im2col columns (or padded planes)
// into col and per-thread partial weight gradients into reduce; Winograd keeps its blocked
// planes, transformed weights and per-chunk tiles in the winograd_* slots.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>

namespace brecq::kernels {

enum class Scratch : int {
  gemm_a = 0,
  gemm_b,
  gemm_c,
  col,
  reduce,
  winograd_in,
  winograd_out,
  winograd_u,
  winograd_v,
  winograd_m,  // simd/winograd.hpp
  count
};

namespace detail {

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};

struct ScratchBuffer {
  std::unique_ptr<float, FreeDeleter> data;
  std::size_t capacity = 0;  // in floats
};

}  // namespace detail

/// A thread-local, 64-byte aligned buffer of at least n floats for this slot. Its contents are
/// unspecified, and it stays valid until the same thread asks the same slot for more floats.
inline float* workspace(Scratch slot, std::size_t n) {
  thread_local std::array<detail::ScratchBuffer, static_cast<std::size_t>(Scratch::count)> buffers;
  detail::ScratchBuffer& buf = buffers[static_cast<std::size_t>(slot)];
  if (n > buf.capacity) {
    // Grow geometrically and round to whole cache lines so repeated slightly larger calls stay
    // cheap.
    std::size_t want = std::max(n, buf.capacity + buf.capacity / 2);
    std::size_t bytes = (want * sizeof(float) + 63) / 64 * 64;
    buf.data.reset();  // release first: the old contents are not kept
    buf.data.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
    if (!buf.data) throw std::bad_alloc();
    buf.capacity = bytes / sizeof(float);
  }
  return buf.data.get();
}

}  // namespace brecq::kernels
