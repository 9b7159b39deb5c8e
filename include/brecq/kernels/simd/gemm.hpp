#pragma once
// SIMD SGEMM with the contract of ref::sgemm: C = alpha * op(A) * op(B) + beta * C, row-major.
//
// Structure (Goto/BLIS): for each kNC-wide column block of op(B) and kKC-deep slice of K, op(B) is
// packed into kNR-wide micro-panels; for each kMC-high row block, op(A) is packed into kMR-high
// micro-panels (or, when its rows are contiguous along K, read in place through row pointers);
// a register-tile micro-kernel (kMR x kNR accumulators, xsimd FMAs) then sweeps the block: for a
// wide packed B block, by rows of tiles, reusing one A micro-panel from L1 across the B block
// (which streams from L2, prefetched); for a few panels, or B read in place (conv), by columns of
// tiles, reusing one B micro-panel from L1 while the A block streams from L2. Operands come from
// "sources" (MatrixA / MatrixB here; conv adds implicit-im2col ones).
// Edges are zero-padded in the packed panels; partial tiles use a narrower kernel instance and a
// scalar copy-out, so any M, N, K works. Threads split C into disjoint rectangles (and K, for
// small C with a long K). A * B^T with a skinny side uses dot-product tiles instead (no packing).
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <xsimd/xsimd.hpp>

#include "brecq/kernels/params.hpp"
#include "brecq/kernels/simd/transpose.hpp"
#include "brecq/kernels/workspace.hpp"
#include "brecq/tensor/parallel.hpp"

namespace brecq::kernels::simd {

namespace detail {

using Vec = xsimd::batch<float>;
inline constexpr int kVec = static_cast<int>(Vec::size);
/// SIMD registers of the target: 32 with AVX-512 and AArch64 NEON, 16 with AVX2/SSE. The register
/// tiles are sized to fit (accumulators + operand vectors + a broadcast), as a spilled accumulator
/// halves the FMA rate.
inline constexpr int kVecRegisters = std::is_base_of_v<xsimd::avx512f, xsimd::default_arch> ||
                                             std::is_base_of_v<xsimd::neon64, xsimd::default_arch>
                                         ? 32
                                         : 16;
inline constexpr int kMR = kVecRegisters >= 32 ? 8 : 6;  // rows of C per register tile
inline constexpr int kNV = 2;                            // SIMD vectors per register-tile row
inline constexpr int kNR = kNV * kVec;                   // columns of C per register tile
inline constexpr int64_t kKC = 256;   // depth of a packed slice (micro-panels of it in L1)
inline constexpr int64_t kMC = 192;   // rows of a packed A block (kMC x kKC in L2)
inline constexpr int64_t kNC = 1024;  // columns of a packed B block (kKC x kNC, 1 MiB, in L2)
inline constexpr int kPrefetchK = 8;  // k steps ahead that the micro-kernel prefetches packed B
inline constexpr int64_t kShallowKC = 64;      // slices up to this deep sweep C by rows of tiles,
inline constexpr int64_t kRowSweepPanels = 4;  // as do B blocks this many panels wide or more
inline constexpr int64_t kRowSweepAFloats = 8192;  // by A blocks above this (32 KiB, not in L1)

inline constexpr int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/// A strided matrix operand: element (r, c) is p[r * rs + c * cs].
struct Operand {
  const float* p;
  int64_t rs, cs;
  const float* at(int64_t r, int64_t c) const { return p + r * rs + c * cs; }
};

/// Packs an n x kc operand (element (x, k) at src[x * sx + k * sk]) into W-wide panels:
/// dst[(x / W) * kc * W + k * W + x % W], zero-filling x up to a multiple of W. Used for both
/// op(A) (x = row of C, W = kMR) and op(B) (x = column of C, W = kNR), either transpose.
template <int W>
inline void pack_panels(const float* src, int64_t sx, int64_t sk, int64_t n, int64_t kc,
                        float* dst) {
  for (int64_t x0 = 0; x0 < n; x0 += W, dst += kc * W) {
    const int64_t w = std::min<int64_t>(W, n - x0);
    const float* s = src + x0 * sx;
    if (sx == 1 && w == W && W % kVec == 0) {
      // Contiguous along x: each k is W consecutive floats.  dst panel: [kc][W]
      for (int64_t k = 0; k < kc; ++k)
        for (int v = 0; v < W; v += kVec)
          Vec::load_unaligned(s + k * sk + v).store_aligned(dst + k * W + v);
    } else if (sx == 1 && w == W) {
      // Contiguous along x, W not a whole number of vectors: one W-float copy per k.
      for (int64_t k = 0; k < kc; ++k) std::memcpy(dst + k * W, s + k * sk, sizeof(float) * W);
    } else if (sx == 1) {
      for (int64_t k = 0; k < kc; ++k) {  // ... a partial panel: w floats, then zeros
        std::memcpy(dst + k * W, s + k * sk, sizeof(float) * static_cast<size_t>(w));
        std::fill(dst + k * W + w, dst + (k + 1) * W, 0.0f);
      }
    } else if (sk == 1) {
      // Contiguous along k (transposed operand): transpose kVec-deep strips so that each source
      // row is read in short contiguous runs while the written lines stay in L1; whole
      // kVec x kVec squares in registers.
      int64_t k0 = 0;
      if (w == W && W % kVec == 0)
        for (; k0 + kVec <= kc; k0 += kVec)
          for (int64_t xv = 0; xv < W; xv += kVec) {
            Vec r[kVec];  // r[x]: x-th row, kVec values of k -> r[k]: kVec values of x
            for (int64_t x = 0; x < kVec; ++x) r[x] = Vec::load_unaligned(s + (xv + x) * sx + k0);
            transpose_square(r);
            for (int64_t k = 0; k < kVec; ++k) r[k].store_aligned(dst + (k0 + k) * W + xv);
          }
      for (; k0 < kc; k0 += kVec) {
        const int64_t kb = std::min<int64_t>(kVec, kc - k0);
        for (int64_t x = 0; x < w; ++x)
          for (int64_t k = 0; k < kb; ++k) dst[(k0 + k) * W + x] = s[x * sx + k0 + k];
        for (int64_t x = w; x < W; ++x)
          for (int64_t k = 0; k < kb; ++k) dst[(k0 + k) * W + x] = 0.0f;
      }
    } else {
      for (int64_t k = 0; k < kc; ++k) {
        for (int64_t x = 0; x < w; ++x) dst[k * W + x] = s[x * sx + k * sk];
        for (int64_t x = w; x < W; ++x) dst[k * W + x] = 0.0f;
      }
    }
  }
}

/// Makes the compiler hold v in a register: otherwise GCC folds each use of a loaded B vector
/// into a memory-operand FMA, re-reading it once per row of the tile, and a 3- or 4-row AVX2
/// tile becomes load-bound.
inline void keep_in_register([[maybe_unused]] Vec& v) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  asm("" : "+x"(v.data));
#elif defined(__GNUC__) && defined(__aarch64__)
  asm("" : "+w"(v.data));
#endif
}

/// C[0:M, 0:n] = alpha * A * B + beta * C for one register tile. A is either a kMR-high packed
/// micro-panel a (AInPlace false: A(i, k) = a[k * kMR + i]) or M row pointers (AInPlace true:
/// A(i, k) = rows[i][k]); only its first M rows are used. B is either a kNR-wide packed
/// micro-panel b (BInPlace false: B(k, j) = b[k * kNR + j]) or read in place (BInPlace true:
/// B(k, j) = b[boffs[k] + j]); its first NV vectors are used. n <= NV * kVec are the valid
/// columns. beta == 0 never reads C.
template <int M, int NV, bool AInPlace, bool BInPlace>
inline void micro_tile(int64_t kc, const float* a, const float* const* rows, const float* b,
                       const int64_t* boffs, float* c, int64_t ldc, float alpha, float beta,
                       int64_t n) {
  // The tile of C is touched once, after kc steps: fetch its lines now, as once C outgrows L2
  // its rows (a page apart) miss to L3 at the end of every tile.
  for (int i = 0; i < M; ++i) {
    __builtin_prefetch(c + i * ldc, 1);
    __builtin_prefetch(c + i * ldc + NV * kVec - 1, 1);
  }
  Vec acc[M][NV];
  for (int i = 0; i < M; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = Vec(0.0f);
  for (int64_t k = 0; k < kc; ++k) {
    // A packed B panel streams from L2 in a row sweep; the L2 prefetcher alone lags behind. (A
    // prefetch past the panel's end is harmless; edge tiles of few FMAs per step go without.)
    if constexpr (!BInPlace && 2 * M * NV > kMR * kNV)
      for (int v = 0; v < NV * kVec; v += 64 / static_cast<int>(sizeof(float)))
        __builtin_prefetch(b + (k + kPrefetchK) * kNR + v);
    Vec bv[NV];
    for (int v = 0; v < NV; ++v) {
      bv[v] = BInPlace ? Vec::load_unaligned(b + boffs[k] + v * kVec)
                       : Vec::load_aligned(b + k * kNR + v * kVec);
      keep_in_register(bv[v]);
    }
    for (int i = 0; i < M; ++i) {
      const Vec ai(AInPlace ? rows[i][k] : a[k * kMR + i]);
      for (int v = 0; v < NV; ++v) acc[i][v] = xsimd::fma(ai, bv[v], acc[i][v]);
    }
  }
  const Vec va(alpha), vb(beta);
  if (n == NV * kVec) {
    for (int i = 0; i < M; ++i)
      for (int v = 0; v < NV; ++v) {
        float* ci = c + i * ldc + v * kVec;
        Vec r = acc[i][v] * va;
        if (beta != 0.0f) r = xsimd::fma(vb, Vec::load_unaligned(ci), r);
        r.store_unaligned(ci);
      }
    return;
  }
  alignas(64) float tile[M][NV * kVec];  // partial tile: spill, then copy the valid columns
  for (int i = 0; i < M; ++i)
    for (int v = 0; v < NV; ++v) (acc[i][v] * va).store_aligned(&tile[i][v * kVec]);
  for (int i = 0; i < M; ++i)
    for (int64_t j = 0; j < n; ++j)
      c[i * ldc + j] = beta != 0.0f ? tile[i][j] + beta * c[i * ldc + j] : tile[i][j];
}

using TileFn = void (*)(int64_t, const float*, const float* const*, const float*, const int64_t*,
                        float*, int64_t, float, float, int64_t);

template <bool AInPlace, bool BInPlace, int... Ms, int... Vs>
constexpr auto make_tile_table(std::integer_sequence<int, Ms...>,
                               std::integer_sequence<int, Vs...>) {
  // table[m - 1][nv - 1] computes an m-row, nv-vector tile.
  std::array<std::array<TileFn, sizeof...(Vs)>, sizeof...(Ms)> t{};
  (
      [&]<int M>() {
        ((t[M][Vs] = &micro_tile<M + 1, Vs + 1, AInPlace, BInPlace>), ...);
      }.template operator()<Ms>(),
      ...);
  return t;
}

template <bool AInPlace, bool BInPlace>
inline constexpr auto kTiles = make_tile_table<AInPlace, BInPlace>(
    std::make_integer_sequence<int, kMR>{}, std::make_integer_sequence<int, kNV>{});

// ---- Operand sources. Coordinates are absolute within op(A) (M x K) and op(B) (K x N). -------
// An A source either packs: in_place() false and pack(i0, mc, k0, kc, dst) writes
// op(A)[i0:i0+mc, k0:k0+kc] as kMR-high micro-panels dst: [mc/kMR][kc][kMR]; or is read in place:
// in_place() true and row(i) points at op(A)(i, 0), contiguous along k (rows need not be evenly
// spaced). A B source is a callable packer: b(k0, kc, j0, n, dst) writes op(B)[k0:k0+kc, j0:j0+n]
// (n <= kNR) as one micro-panel dst: [kc][kNR], zero-filling columns n..kNR. It may also expose its
// rows in place, as base() and row_offset(k) with op(B)(k, j) = base()[row_offset(k) + j] (readable
// for whole kNR-column panels); then, when A is read in place too, full panels are not packed at
// all. conv supplies sources that read im2col rows and columns straight from the image.

template <class B, class = void>
struct HasRowsInPlace : std::false_type {};
template <class B>
struct HasRowsInPlace<B, std::void_t<decltype(std::declval<const B&>().row_offset(int64_t{})),
                                     decltype(std::declval<const B&>().base())>> : std::true_type {
};

/// op(A) from a strided matrix, packed, or read in place when asked and contiguous along k.
struct MatrixA {
  Operand a;
  bool read_in_place = false;
  bool in_place() const { return read_in_place && a.cs == 1; }
  const float* row(int64_t i) const { return a.at(i, 0); }
  void pack(int64_t i0, int64_t mc, int64_t k0, int64_t kc, float* dst) const {
    // op(A)[i0:i0+mc, k0:k0+kc] -> dst: [mc/kMR][kc][kMR]
    pack_panels<kMR>(a.at(i0, k0), a.rs, a.cs, mc, kc, dst);
  }
};

/// op(B) from a strided matrix.
struct MatrixB {
  Operand b;
  void operator()(int64_t k0, int64_t kc, int64_t j0, int64_t n, float* dst) const {
    // op(B)[k0:k0+kc, j0:j0+n] -> dst: [kc][kNR]
    pack_panels<kNR>(b.at(k0, j0), b.cs, b.rs, n, kc, dst);
  }
  /// Whether pack_block reads rows of op(B) in one sequential pass.
  bool rows_contiguous() const { return b.cs == 1; }
  /// Whether each row of op(B) lies on a page of its own (4 KiB or more apart), so that packing
  /// a kNR-wide panel touches kc pages.
  bool rows_pages_apart() const { return b.rs >= 1024; }
  /// op(B)[k0:k0+kc, j0:j0+nc] -> dst: [ceil(nc/kNR)][kc][kNR], kRowGroup rows at a time: a few
  /// sequential read streams, where panel-by-panel packing reads kc rows at once (each on its own
  /// page, when rows are long), which the prefetchers cannot follow. Each group writes kRowGroup
  /// whole lines per panel: one row at a time wrote a single line per panel, nc / kNR streams
  /// kc * kNR floats apart, which bounds small-M products by the stores. Groups of 3 to 6 rows do
  /// about equally well; 16 is as bad as 1.
  void pack_block(int64_t k0, int64_t kc, int64_t j0, int64_t nc, float* dst) const {
    constexpr int64_t kRowGroup = 4;
    const int64_t full = nc / kNR * kNR;
    for (int64_t kg = 0; kg < kc; kg += kRowGroup) {
      const int64_t kg_end = std::min(kc, kg + kRowGroup);
      for (int64_t j = 0; j < full; j += kNR)
        for (int64_t k = kg; k < kg_end; ++k) {
          const float* src = b.at(k0 + k, j0 + j);
          float* panel_row = dst + (j / kNR * kc + k) * kNR;
          for (int v = 0; v < kNR; v += kVec)
            Vec::load_unaligned(src + v).store_aligned(panel_row + v);
        }
    }
    if (full < nc) (*this)(k0, kc, j0 + full, nc - full, dst + full / kNR * kc * kNR);
  }
};

template <class B, class = void>
struct HasPackBlock : std::false_type {};
template <class B>
struct HasPackBlock<B, std::void_t<decltype(std::declval<const B&>().rows_contiguous())>>
    : std::true_type {};

/// op(B) packed ahead of time by pack_b_panels, for a B that many products share (Winograd's
/// transformed weights): panels [ceil(N / kNR)][K][kNR], K the full depth.
struct PackedB {
  float* panels;
  int64_t K;
};

/// Floats pack_b_panels writes for a K x N op(B).
inline int64_t packed_b_floats(int64_t K, int64_t N) { return round_up(N, kNR) * K; }

/// dst: [ceil(N / kNR)][K][kNR] = op(B) (K x N) in micro-panels, zero-padded past column N.
inline void pack_b_panels(Operand b, int64_t K, int64_t N, float* dst) {
  pack_panels<kNR>(b.p, b.cs, b.rs, N, K, dst);
}

/// Calls f(i, m) for the register-tile rows [i, i + m) of an mc-row block, in order: kMR rows
/// each, except that a last tile of at most kMR / 2 rows shares rows with the one before it
/// (8 = 4 + 4, not 6 + 2), as a tile of few rows has too few accumulators to cover the FMA
/// latency. Packed A holds one kMR-high micro-panel per tile.
template <class F>
inline void for_row_tiles(int64_t mc, F&& f) {
  const int64_t rem = mc % kMR;
  const bool balance = rem != 0 && rem <= kMR / 2 && mc > kMR;
  const int64_t last = balance ? mc - rem - kMR : mc;  // tiles from here on are balanced
  int64_t i = 0;
  for (; i < last; i += kMR) f(i, std::min<int64_t>(kMR, mc - i));
  if (balance) {
    const int64_t first = (kMR + rem + 1) / 2;
    f(i, first);
    f(i + first, kMR + rem - first);
  }
}

/// Multiplies an mc x kc block of A (rows from i0, depth from k0) by a kc x nc block of B
/// (columns from j0) into C (mc x nc). A comes packed in pa (micro-panels as for_row_tiles
/// splits the rows), or in place from a_src. B comes in place when b_rows
/// (base()[b_offs[k] + j]) is given, A is in place and the panel is full;
/// otherwise packed in pb (panel p at pb + p * pb_stride): already (pack_b null), or each
/// micro-panel by pack_b just before its use, so that the first pass finds its panel in L1.
/// by_rows: sweep C by rows of tiles (B packed already), else by columns of tiles.
template <class ASrc, class PackB>
inline void macro_kernel(int64_t mc, int64_t nc, int64_t kc, const ASrc& a_src, const float* pa,
                         int64_t i0, float* pb, int64_t pb_stride, const PackB* pack_b,
                         const float* b_rows, const int64_t* b_offs, int64_t k0, int64_t j0,
                         float* c, int64_t ldc, float alpha, float beta, bool by_rows) {
  const bool a_in_place = a_src.in_place();
  const auto b_in_place = [&](int64_t j) { return a_in_place && b_rows && nc - j >= kNR; };
  const auto pack = [&](int64_t j) {  // -> panel j / kNR: [kc][kNR]
    if constexpr (!std::is_same_v<PackB, PackedB>)
      if (pack_b && !b_in_place(j))
        (*pack_b)(k0, kc, j0 + j, std::min<int64_t>(kNR, nc - j), pb + j / kNR * pb_stride);
  };
  // C[i : i + m, j : j + kNR], the t-th row tile
  const auto tile = [&](int64_t t, int64_t i, int64_t m, int64_t j) {
    const int64_t n = std::min<int64_t>(kNR, nc - j);
    const int64_t nv = (n + kVec - 1) / kVec;
    const float* panel = pb + j / kNR * pb_stride;
    float* ct = c + i * ldc + j;
    if (!a_in_place) {
      kTiles<false, false>[m - 1][nv - 1](kc, pa + t * kc * kMR, nullptr, panel, nullptr, ct, ldc,
                                          alpha, beta, n);
      return;
    }
    const float* rows[kMR] = {};
    for (int64_t r = 0; r < m; ++r) rows[r] = a_src.row(i0 + i + r) + k0;
    if (b_in_place(j)) {
      kTiles<true, true>[m - 1][nv - 1](kc, nullptr, rows, b_rows + j0 + j, b_offs, ct, ldc, alpha,
                                        beta, n);
    } else {
      kTiles<true, false>[m - 1][nv - 1](kc, nullptr, rows, panel, nullptr, ct, ldc, alpha, beta,
                                         n);
    }
  };
  if (by_rows) {
    int64_t t = 0;
    for_row_tiles(mc, [&](int64_t i, int64_t m) {
      for (int64_t j = 0; j < nc; j += kNR) tile(t, i, m, j);
      ++t;
    });
    return;
  }
  for (int64_t j = 0; j < nc; j += kNR) {  // one B panel stays in L1 while the A block streams
    pack(j);
    int64_t t = 0;
    for_row_tiles(mc, [&](int64_t i, int64_t m) { tile(t++, i, m, j); });
  }
}

/// Single-threaded blocked GEMM of the block rows [m0, m0 + M) x columns [n0, n0 + N) x depth
/// [k0, k0 + K) of op(A) * op(B), into c (its top-left element).
template <class ASrc, class PackB>
inline void gemm_serial(int64_t M, int64_t N, int64_t K, const ASrc& a_src, const PackB& pack_b,
                        int64_t m0, int64_t n0, int64_t k0, float* c, int64_t ldc, float alpha,
                        float beta) {
  constexpr bool prepacked = std::is_same_v<PackB, PackedB>;
  const int64_t kc_max = std::min(K, kKC);
  float* pb = prepacked ? nullptr
                        : workspace(Scratch::gemm_b,
                                    static_cast<size_t>(kc_max * round_up(std::min(N, kNC), kNR)));
  float* pa = a_src.in_place()
                  ? nullptr
                  : workspace(Scratch::gemm_a,
                              static_cast<size_t>(kc_max * round_up(std::min(M, kMC), kMR)));
  for (int64_t jc = 0; jc < N; jc += kNC) {
    const int64_t nc = std::min(kNC, N - jc);
    for (int64_t pc = 0; pc < K; pc += kKC) {
      const int64_t kc = std::min(kKC, K - pc);
      const float beta_pc = pc == 0 ? beta : 1.0f;
      int64_t b_offs[kKC];  // B rows read in place: op(B)(pc + k, j) = b_rows[b_offs[k] + j]
      const float* b_rows = nullptr;
      if constexpr (HasRowsInPlace<PackB>::value) {
        b_rows = pack_b.base();
        for (int64_t k = 0; k < kc; ++k) b_offs[k] = pack_b.row_offset(k0 + pc + k);
      }
      for (int64_t ic = 0; ic < M; ic += kMC) {
        const int64_t mc = std::min(kMC, M - ic);
        // op(A)[ic:ic+mc, pc:pc+kc] -> pa: [tiles][kc][kMR] (unless read in place)
        if (pa) {
          float* panel = pa;
          for_row_tiles(mc, [&](int64_t i, int64_t m) {
            a_src.pack(m0 + ic + i, m, k0 + pc, kc, panel);
            panel += kc * kMR;
          });
        }
        if constexpr (prepacked) {  // panels of columns n0 + jc.., rows k0 + pc..
          macro_kernel(mc, nc, kc, a_src, pa, m0 + ic,
                       pack_b.panels + ((n0 + jc) / kNR * pack_b.K + k0 + pc) * kNR, pack_b.K * kNR,
                       &pack_b, nullptr, nullptr, k0 + pc, n0 + jc, c + ic * ldc + jc, ldc, alpha,
                       beta_pc, false);
        } else {
          // op(B)[pc:pc+kc, jc:jc+nc] -> pb: [nc/kNR][kc][kNR], packed in the ic == 0 pass (full
          // panels read in place through b_offs are not packed): whole and row by row first for
          // a few rows of C, as then each panel is used by few tiles and the read pattern
          // decides, and for rows a page apart, which panel by panel no prefetcher follows;
          // whole and panel by panel first for a wide block (below); otherwise panel by panel,
          // each just before its first use.
          bool packed = false;
          if constexpr (HasPackBlock<PackB>::value)
            if (ic == 0 && (M <= 4 * kMR || pack_b.rows_pages_apart()) &&
                pack_b.rows_contiguous()) {
              pack_b.pack_block(k0 + pc, kc, n0 + jc, nc, pb);
              packed = true;
            }
          // A wide B block (not read in place) against an A block larger than L1 is packed whole
          // and C swept by rows of tiles: kMR sequential write streams, one A micro-panel in L1
          // across the B block (in L2), where a column of tiles touches mc rows, each a page
          // apart, whose lines evict the B panel from L1 when C's rows are a multiple of 4 KiB
          // long. For a few panels, or an A block in L1, a B panel in L1 across the A block does
          // better, packed on the fly. A shallow slice, whose C writes outweigh the FMAs, is
          // swept by rows whenever B is packed.
          const bool b_in_place = b_rows && a_src.in_place();
          const bool wide = !b_in_place && kc > kShallowKC && nc >= kRowSweepPanels * kNR &&
                            std::min(M, kMC) * kc > kRowSweepAFloats;
          if (ic == 0 && !packed && wide) {
            for (int64_t j = 0; j < nc; j += kNR)  // -> panel j / kNR: [kc][kNR]
              pack_b(k0 + pc, kc, n0 + jc + j, std::min<int64_t>(kNR, nc - j),
                     pb + j / kNR * kc * kNR);
            packed = true;
          }
          const bool by_rows = (ic > 0 || packed) && (wide || kc <= kShallowKC);
          macro_kernel(mc, nc, kc, a_src, pa, m0 + ic, pb, kc * kNR,
                       ic == 0 && !packed ? &pack_b : nullptr, b_rows, b_offs, k0 + pc, n0 + jc,
                       c + ic * ldc + jc, ldc, alpha, beta_pc, by_rows);
        }
      }
    }
  }
}

// ---- A * B^T with both operands contiguous along K: dot-product tiles, no packing. ----------
// When op(A) rows and op(B) columns are both contiguous along K, packing them for the broadcast
// kernel would be a transpose costing about as much as the multiply for skinny shapes (e.g. the
// weight gradient dW = dY * col^T). Instead a kDM x kDN tile of C keeps one SIMD accumulator per
// element, streams kVec-wide slices of K from kDM rows of A and kDN rows of B, and reduces the
// accumulators horizontally once per kKCDot slice.
inline constexpr int kDM = kVecRegisters >= 32 ? 4 : 3;  // rows of A per dot tile
inline constexpr int kDN = kVecRegisters >= 32 ? 6 : 4;  // rows of B (columns of C) per dot tile
inline constexpr int64_t kKCDot = 2048;                  // K slice between horizontal reductions

/// Loads n < kVec floats from p, zero-filling the rest of the vector.
inline Vec load_partial(const float* p, int64_t n) {
  alignas(64) float tmp[kVec] = {};
  for (int64_t i = 0; i < n; ++i) tmp[i] = p[i];
  return Vec::load_aligned(tmp);
}

/// C[0:M, 0:N] = alpha * A[0:M, 0:K] * B[0:N, 0:K]^T + beta * C (A, B rows contiguous in K).
template <int M, int N>
inline void dot_tile(int64_t K, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
                     int64_t ldc, float alpha, float beta) {
  Vec acc[M][N];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) acc[i][j] = Vec(0.0f);
  const auto step = [&](int64_t k, auto load) {
    Vec av[M];
    for (int i = 0; i < M; ++i) av[i] = load(a + i * lda + k);
    for (int j = 0; j < N; ++j) {
      const Vec bj = load(b + j * ldb + k);
      for (int i = 0; i < M; ++i) acc[i][j] = xsimd::fma(av[i], bj, acc[i][j]);
    }
  };
  int64_t k = 0;
  for (; k + kVec <= K; k += kVec) step(k, [](const float* p) { return Vec::load_unaligned(p); });
  if (k < K) step(k, [rem = K - k](const float* p) { return load_partial(p, rem); });
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      float& cij = c[i * ldc + j];
      const float r = alpha * xsimd::hadd(acc[i][j]);
      cij = beta != 0.0f ? r + beta * cij : r;
    }
}

using DotFn = void (*)(int64_t, const float*, int64_t, const float*, int64_t, float*, int64_t,
                       float, float);

template <int... Ms, int... Ns>
constexpr auto make_dot_table(std::integer_sequence<int, Ms...>,
                              std::integer_sequence<int, Ns...>) {
  // table[m - 1][n - 1] computes an m x n tile.
  std::array<std::array<DotFn, sizeof...(Ns)>, sizeof...(Ms)> t{};
  ([&]<int M>() { ((t[M][Ns] = &dot_tile<M + 1, Ns + 1>), ...); }.template operator()<Ms>(), ...);
  return t;
}

inline constexpr auto kDotTiles =
    make_dot_table(std::make_integer_sequence<int, kDM>{}, std::make_integer_sequence<int, kDN>{});

/// Single-threaded C = alpha * A * B^T + beta * C over M x N x K; a(i, k) and b(k, j) must be
/// contiguous along k (a.cs == 1, b.rs == 1).
inline void dot_serial(int64_t M, int64_t N, int64_t K, Operand a, Operand b, float* c, int64_t ldc,
                       float alpha, float beta) {
  for (int64_t pc = 0; pc < K; pc += kKCDot) {
    const int64_t kc = std::min(kKCDot, K - pc);
    const float beta_pc = pc == 0 ? beta : 1.0f;
    for (int64_t j = 0; j < N; j += kDN) {  // kDN rows of B stay in L1 across the i loop
      const int64_t n = std::min<int64_t>(kDN, N - j);
      for (int64_t i = 0; i < M; i += kDM) {
        const int64_t m = std::min<int64_t>(kDM, M - i);
        kDotTiles[m - 1][n - 1](kc, a.at(i, pc), a.rs, b.at(pc, j), b.cs, c + i * ldc + j, ldc,
                                alpha, beta_pc);
      }
    }
  }
}

/// Whether to multiply by dot tiles rather than packed panels: only for A * B^T with a very skinny
/// side, where the transposing packs cost more than the multiply. Where that ends depends on the
/// register file: with 32 vector registers (AVX-512) dot tiles win up to M = 16, with 16 (AVX2)
/// up to M = 8 (results/kernel_design_measurements.md).
inline bool use_dot(int64_t M, int64_t N, Operand a, Operand b) {
  return a.cs == 1 && b.rs == 1 && std::min(M, N) <= (kVecRegisters >= 32 ? 16 : 8);
}

/// C = beta * C over an M x N block (beta == 0 writes zeros without reading C).
inline void scale_c(int64_t M, int64_t N, float* c, int64_t ldc, float beta) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
}

/// How sgemm splits its work among threads: C into a tm x tn grid of whole-tile rectangles and K
/// into tk slices (slices after the first write partial sums that are added to C afterwards).
struct ThreadGrid {
  int tm = 1, tn = 1, tk = 1;
};

/// Picks the grid with the least estimated per-thread time, in rough cycles: FMAs (kVec lanes on
/// two pipes), packing (about half a cycle per element), and the serial reduction of K slices.
inline ThreadGrid thread_grid(int64_t M, int64_t N, int64_t K, int threads, bool dot) {
  const int64_t mr = dot ? kDM : kMR, nr = dot ? kDN : kNR;
  const int64_t mt = (M + mr - 1) / mr, nt = (N + nr - 1) / nr;
  ThreadGrid best;
  double best_cost = -1.0;
  for (int tm = 1; tm <= threads; ++tm)
    for (int tn = 1; tm * tn <= threads; ++tn) {
      if (threads % (tm * tn) != 0) continue;
      const int tk = threads / (tm * tn);
      if (tm > mt || tn > nt || tk > K) continue;
      const double m = static_cast<double>((mt + tm - 1) / tm * mr);
      const double n = static_cast<double>((nt + tn - 1) / tn * nr);
      const double k = static_cast<double>((K + tk - 1) / tk);
      const double work = m * n * k / (2.0 * kVec);
      const double pack = dot ? 0.0 : 0.5 * k * (m + n);
      const double reduce = static_cast<double>(M) * static_cast<double>(N) * (tk - 1);
      const double cost = work + pack + reduce;
      if (best_cost < 0.0 || cost < best_cost) best = {tm, tn, tk}, best_cost = cost;
    }
  return best;
}

/// Runs body(m0, m1, n0, n1, k0, k1, c, ldc, beta) over the blocks of an M x N x K product on a
/// thread grid (or once, on the whole, when the product is small or we already are in a parallel
/// region). Blocks of K slices after the first write into partial buffers with beta = 0, which are
/// then added to C. mr x nr is the register tile, used to align the split and estimate its cost.
template <class Body>
inline void run_threads(int64_t M, int64_t N, int64_t K, bool dot, float* C, int64_t ldc,
                        float beta, Body&& body) {
  // Below ~2 MFLOP (a few microseconds on one core) a fork/join saves little, and costs a lot
  // whenever a worker thread is not scheduled promptly.
  const double flops =
      2.0 * static_cast<double>(M) * static_cast<double>(N) * static_cast<double>(K);
  const int threads = flops < 2e6 || in_parallel() ? 1 : num_threads();
  if (threads <= 1) {
    body(0, M, 0, N, 0, K, C, ldc, beta);
    return;
  }
  const ThreadGrid g = thread_grid(M, N, K, threads, dot);
  const int64_t mr = dot ? kDM : kMR, nr = dot ? kDN : kNR;
  const int64_t mt = (M + mr - 1) / mr, nt = (N + nr - 1) / nr;
  // K slices 1..tk-1 accumulate into partial[tk - 1][M][N], summed into C below.
  float* partial =
      g.tk > 1 ? workspace(Scratch::gemm_c, static_cast<size_t>((g.tk - 1) * M * N)) : nullptr;
  parallel_for(0, g.tm * g.tn * g.tk, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t ti = t / (g.tn * g.tk), tj = t / g.tk % g.tn, tk = t % g.tk;
      const int64_t m0 = std::min(M, mt * ti / g.tm * mr),
                    m1 = std::min(M, mt * (ti + 1) / g.tm * mr);
      const int64_t n0 = std::min(N, nt * tj / g.tn * nr),
                    n1 = std::min(N, nt * (tj + 1) / g.tn * nr);
      const int64_t k0 = K * tk / g.tk, k1 = K * (tk + 1) / g.tk;
      if (m0 >= m1 || n0 >= n1 || k0 >= k1) continue;
      if (tk == 0) {
        body(m0, m1, n0, n1, k0, k1, C + m0 * ldc + n0, ldc, beta);
      } else {
        body(m0, m1, n0, n1, k0, k1, partial + ((tk - 1) * M + m0) * N + n0, N, 0.0f);
      }
    }
  });
  for (int64_t s = 0; s + 1 < g.tk; ++s)  // C += partial[s]
    for (int64_t i = 0; i < M; ++i) {
      float* ci = C + i * ldc;
      const float* pi = partial + (s * M + i) * N;
      int64_t j = 0;
      for (; j + kVec <= N; j += kVec)
        (Vec::load_unaligned(ci + j) + Vec::load_unaligned(pi + j)).store_unaligned(ci + j);
      for (; j < N; ++j) ci[j] += pi[j];
    }
}

/// C = alpha * op(A) * op(B) + beta * C through the register-tile kernel, op(A) (M x K) and op(B)
/// (K x N) coming from the sources a_src and pack_b (see MatrixA, MatrixB); threads as in
/// run_threads. K > 0 and alpha != 0.
template <class ASrc, class PackB>
inline void gemm_packed(int64_t M, int64_t N, int64_t K, const ASrc& a_src, const PackB& pack_b,
                        float* C, int64_t ldc, float alpha, float beta) {
  run_threads(M, N, K, false, C, ldc, beta,
              [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t k0, int64_t k1, float* c,
                  int64_t ldc_c, float beta_c) {
                gemm_serial(m1 - m0, n1 - n0, k1 - k0, a_src, pack_b, m0, n0, k0, c, ldc_c, alpha,
                            beta_c);
              });
}

}  // namespace detail

/// C = alpha * op(A) * op(B) + beta * C; op(A) is M x K, op(B) is K x N, all row-major.
inline void sgemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                  int64_t ldb, float* C, int64_t ldc, const GemmParams& p = {}) {
  using namespace detail;
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || p.alpha == 0.0f) {
    scale_c(M, N, C, ldc, p.beta);
    return;
  }
  const Operand a = p.trans_a ? Operand{A, 1, lda} : Operand{A, lda, 1};  // op(A)(i, k)
  const Operand b = p.trans_b ? Operand{B, 1, ldb} : Operand{B, ldb, 1};  // op(B)(k, j)
  if (!use_dot(M, N, a, b)) {
    // A row-major A is read in place (no pack), except when its rows are 4 KiB-aligned (they
    // would contend for the same L1 sets) and it is reused across many B panels.
    const bool in_place = a.rs % 1024 != 0 || N <= 2 * kNR;
    return gemm_packed(M, N, K, MatrixA{a, in_place}, MatrixB{b}, C, ldc, p.alpha, p.beta);
  }
  run_threads(M, N, K, true, C, ldc, p.beta,
              [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t k0, int64_t k1, float* c,
                  int64_t ldc_c, float beta_c) {
                dot_serial(m1 - m0, n1 - n0, k1 - k0, Operand{a.at(m0, k0), a.rs, a.cs},
                           Operand{b.at(k0, n0), b.rs, b.cs}, c, ldc_c, p.alpha, beta_c);
              });
}

}  // namespace brecq::kernels::simd
