#pragma once
// Dispatch point of the integer conv: runs a PackedConv with the ISA it was packed for.
//   qint::pack_conv(geometry, weights, {.isa = ..., .input_zero_point = zx, ...})
//   qint::conv(packed, {.input = x, .batch = n, .height = h, .width = w, .out_u8 = y, ...})
// Namespaces: qint::ref (scalar definition), qint::avx2, qint::avx512 (VNNI).
#include <cstdint>

#include "brecq/kernels/int/avx2.hpp"
#include "brecq/kernels/int/avx512.hpp"
#include "brecq/kernels/int/ref.hpp"

namespace brecq::kernels::qint {

/// Bytes of workspace conv(pc, ...) needs with `threads` threads (0 for ref and depthwise).
inline int64_t conv_workspace_bytes(const PackedConv& pc, int threads) {
  if (pc.layout != PackedLayout::gemm) return 0;
  return detail::chunk_bytes(pc) * threads;
}

inline void conv(const PackedConv& pc, const ConvArgs& a) {
  switch (pc.isa) {
    case Isa::ref:
      return ref::conv(pc, a);
    case Isa::avx2:
      return avx2::conv(pc, a);
    case Isa::avx512_vnni:
      return avx512::conv(pc, a);
  }
}

}  // namespace brecq::kernels::qint
