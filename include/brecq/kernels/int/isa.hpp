#pragma once
// Instruction sets of the integer kernels, detected at run time and selectable explicitly, so
// that tests run every path the CPU supports and benchmarks can time each one.
//
//   ref          scalar C++ ground truth (kernels/int/ref.hpp), every CPU
//   avx2         vpmaddubsw + vpmaddwd GEMM (kernels/int/avx2.hpp)
//   avx512_vnni  vpdpbusd GEMM, vpdpwssd depthwise (kernels/int/avx512.hpp)
//
// The SIMD functions carry __attribute__((target(...))), so they compile without -march flags
// and are only called after isa_supported() said yes.
#include <string>

#include "brecq/config.hpp"

namespace brecq::kernels::qint {

enum class Isa { ref, avx2, avx512_vnni };

inline const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::ref:
      return "ref";
    case Isa::avx2:
      return "avx2";
    case Isa::avx512_vnni:
      return "avx512_vnni";
  }
  return "?";
}

inline Isa parse_isa(const std::string& s) {
  if (s == "ref") return Isa::ref;
  if (s == "avx2") return Isa::avx2;
  if (s == "avx512_vnni" || s == "vnni") return Isa::avx512_vnni;
  fail("integer kernel ISA: expected ref, avx2 or avx512_vnni, got '", s, "'");
}

inline bool isa_supported(Isa isa) {
  switch (isa) {
    case Isa::ref:
      return true;
    case Isa::avx2:
      return __builtin_cpu_supports("avx2") != 0;
    case Isa::avx512_vnni:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  }
  return false;
}

/// The fastest ISA this CPU runs.
inline Isa best_isa() {
  if (isa_supported(Isa::avx512_vnni)) return Isa::avx512_vnni;
  if (isa_supported(Isa::avx2)) return Isa::avx2;
  return Isa::ref;
}

inline void check_isa(Isa isa, const char* what) {
  check(isa_supported(isa), what, ": ISA ", isa_name(isa),
        " is not supported by this CPU (best: ", isa_name(best_isa()), ")");
}

}  // namespace brecq::kernels::qint
