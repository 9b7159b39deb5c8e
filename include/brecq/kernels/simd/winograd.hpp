#pragma once
// Winograd F(4x4, 3x3) convolution (Lavin & Gray 2016; interpolation points 0, +-1, +-2, inf)
// for 3x3, stride-1, dilation-1, ungrouped layers: 36 multiplies per 4x4 output tile and channel
// pair instead of 144. The same contract as ref::conv2d_forward / ref::conv2d_backward_weight;
// the input gradient of such a layer is itself one (flipped weights), so all three passes of a
// ResNet 3x3 convolution run here. Per tile t and position p of the 6x6 transformed tile:
//   forward  V[p][t][c] = (B^T d_t B)[p]   U[p][c][k] = (G w_kc G^T)[p]
//            M[p][t][k] = sum_c V[p][t][c] U[p][c][k]        (36 GEMMs [tiles][C] x [C][K])
//            y_t = A^T M[.][t] A
//   weights  dM[p][t][k] = (A dy_t A^T)[p]
//            dU[p][c][k] = sum_t V[p][t][c] dM[p][t][k]      (36 GEMMs [C][tiles] x [tiles][K])
//            dw_kc = G^T dU[.][c][k] G
// Transforms run on vectors of kV channels: input and output are first converted to a blocked
// layout [N][C/kV][rows][cols][kV] (kV x kV register transposes), where a tile's pixels are plain
// vector loads. Tiles (n, th, tw) are processed in chunks, one chunk's V and M in a thread's
// scratch, so that the GEMM operands stay in cache.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <xsimd/xsimd.hpp>

#include "brecq/kernels/params.hpp"
#include "brecq/kernels/simd/gemm.hpp"
#include "brecq/kernels/simd/transpose.hpp"
#include "brecq/kernels/workspace.hpp"
#include "brecq/tensor/parallel.hpp"

namespace brecq::kernels::simd::winograd {

using Vec = xsimd::batch<float>;
inline constexpr int64_t kV = static_cast<int64_t>(Vec::size);
inline constexpr int64_t kOut = 4;   // output tile side
inline constexpr int64_t kIn = 6;    // input tile side: kOut + 3 - 1
inline constexpr int64_t kPos = 36;  // positions of a transformed tile

/// f(0), f(1), ..., f(N - 1) with compile-time indices (loops over tile positions, unrolled so
/// that every offset is a constant).
template <int64_t N, class F>
inline void unrolled(F&& f) {
  [&]<int64_t... I>(std::integer_sequence<int64_t, I...>) {
    (f(std::integral_constant<int64_t, I>{}), ...);
  }
  (std::make_integer_sequence<int64_t, N>{});
}

/// Whether a convolution runs here: 3x3, stride 1, no dilation, one group, and enough channels
/// and output pixels for the transforms to pay.
inline bool applies(const Conv2dGeometry& g) {
  return g.kernel_h == 3 && g.kernel_w == 3 && g.stride_h == 1 && g.stride_w == 1 &&
         g.dilation_h == 1 && g.dilation_w == 1 && g.groups == 1 && g.in_channels >= 8 &&
         g.out_channels >= 8 && g.out_h() >= kOut && g.out_w() >= kOut;
}

/// Sizes of one convolution's tiles, blocked planes and chunks.
struct Plan {
  int64_t N, C, K, H, W, OH, OW, ph, pw;
  int64_t TH, TW, tiles;  // tile grid of an image; tiles in the batch
  int64_t Cp, Kp;         // channels rounded up to whole vectors
  int64_t HB, WB;         // blocked input plane: every tile's 6x6 window, zero-padded
  int64_t OHB, OWB;       // blocked output plane: whole tiles
  int64_t slots;          // threads at work: each takes an equal share of the tiles
  int64_t chunk;          // tiles per chunk at most (a whole number of GEMM register tiles)
  int64_t sv, sm;         // floats between positions in a chunk's V and M

  explicit Plan(const Conv2dGeometry& g)
      : N(g.batch),
        C(g.in_channels),
        K(g.out_channels),
        H(g.in_h),
        W(g.in_w),
        OH(g.out_h()),
        OW(g.out_w()),
        ph(g.pad_h),
        pw(g.pad_w) {
    TH = (OH + kOut - 1) / kOut, TW = (OW + kOut - 1) / kOut, tiles = N * TH * TW;
    Cp = (C + kV - 1) / kV * kV, Kp = (K + kV - 1) / kV * kV;
    HB = TH * kOut + 2, WB = TW * kOut + 2, OHB = TH * kOut, OWB = TW * kOut;
    // A chunk's V and M take 36 * 4 * (Cp + Kp) bytes per tile: keep them near 1 MiB (L2 / L3),
    // with at least 24 tiles for the GEMMs' rows (or depth); a thread's share of the tiles is
    // cut into equal chunks.
    slots = std::max<int64_t>(1, std::min<int64_t>(num_threads(), tiles / 12));
    const int64_t cap = std::max<int64_t>(24, (1 << 20) / (kPos * 4 * (Cp + Kp)));
    const int64_t share = (tiles + slots - 1) / slots, pieces = (share + cap - 1) / cap;
    chunk = detail::round_up((share + pieces - 1) / pieces, detail::kMR);
    // + one cache line, so that the 36 positions of a tile do not share 4 KiB-aliased L1 sets.
    sv = chunk * Cp + 16, sm = chunk * Kp + 16;
  }
  int64_t input_floats() const { return N * Cp * HB * WB; }
  int64_t output_floats() const { return N * Kp * OHB * OWB; }
  /// Transformed weights: per position, [C][K] packed as GEMM micro-panels [K / kNR][C][kNR].
  int64_t u_stride() const { return detail::packed_b_floats(C, K); }
  int64_t u_floats() const { return kPos * u_stride(); }
  /// Weight gradients of one thread: per position, [C][Kp].
  int64_t du_floats() const { return kPos * C * Kp; }
};

/// src: [N][C][h][w] -> dst: [N][Cp/kV][hb][wb][kV] with pixel (i, j) at (i + oy, j + ox) and
/// zeros everywhere else (borders, channels C..Cp).
inline void to_blocked(const float* src, int64_t N, int64_t C, int64_t h, int64_t w, float* dst,
                       int64_t hb, int64_t wb, int64_t oy, int64_t ox) {
  const int64_t CB = (C + kV - 1) / kV, hw = h * w;
  parallel_for(0, N * CB, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t n = b / CB, c0 = b % CB * kV, nc = std::min(kV, C - c0);
      const float* s = src + (n * C + c0) * hw;  // [nc][h][w]
      float* plane = dst + b * hb * wb * kV;     // [hb][wb][kV]
      std::fill_n(plane, oy * wb * kV, 0.0f);
      std::fill(plane + (oy + h) * wb * kV, plane + hb * wb * kV, 0.0f);
      for (int64_t i = 0; i < h; ++i) {
        float* row = plane + (i + oy) * wb * kV;
        std::fill_n(row, ox * kV, 0.0f);
        std::fill(row + (ox + w) * kV, row + wb * kV, 0.0f);
        row += ox * kV;
        const float* sr = s + i * w;
        int64_t j = 0;
        for (; j + kV <= w; j += kV) {
          Vec r[kV];  // r[l]: channel l, pixels j..j+kV -> r[p]: pixel j + p, kV channels
          if (nc == kV) {
            unrolled<kV>([&](auto l) { r[l] = Vec::load_unaligned(sr + l * hw + j); });
          } else {
            for (int64_t l = 0; l < kV; ++l)
              r[l] = l < nc ? Vec::load_unaligned(sr + l * hw + j) : Vec(0.0f);
          }
          transpose_square(r);
          unrolled<kV>([&](auto p) { r[p].store_aligned(row + (j + p) * kV); });
        }
        for (; j < w; ++j)
          for (int64_t l = 0; l < kV; ++l) row[j * kV + l] = l < nc ? sr[l * hw + j] : 0.0f;
      }
    }
  });
}

/// src: [N][Kp/kV][hb][wb][kV] -> dst: [N][K][h][w] (pixels (i, j), i < h <= hb, j < w <= wb),
/// plus bias[k] when bias is not null.
inline void from_blocked(const float* src, int64_t N, int64_t K, int64_t h, int64_t w, int64_t hb,
                         int64_t wb, const float* bias, float* dst) {
  const int64_t KB = (K + kV - 1) / kV, hw = h * w;
  parallel_for(0, N * KB, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t n = b / KB, k0 = b % KB * kV, nk = std::min(kV, K - k0);
      const float* plane = src + b * hb * wb * kV;
      float* d = dst + (n * K + k0) * hw;  // [nk][h][w]
      float bl[kV] = {};
      if (bias)
        for (int64_t l = 0; l < nk; ++l) bl[l] = bias[k0 + l];
      for (int64_t i = 0; i < h; ++i) {
        const float* row = plane + i * wb * kV;
        float* dr = d + i * w;
        int64_t j = 0;
        for (; j + kV <= w; j += kV) {
          Vec r[kV];  // r[p]: pixel j + p -> r[l]: channel l, pixels j..j+kV
          unrolled<kV>([&](auto p) { r[p] = Vec::load_aligned(row + (j + p) * kV); });
          transpose_square(r);
          if (nk == kV) {
            unrolled<kV>([&](auto l) { (r[l] + Vec(bl[l])).store_unaligned(dr + l * hw + j); });
          } else {
            for (int64_t l = 0; l < nk; ++l) (r[l] + Vec(bl[l])).store_unaligned(dr + l * hw + j);
          }
        }
        for (; j < w; ++j)
          for (int64_t l = 0; l < nk; ++l) dr[l * hw + j] = row[j * kV + l] + bl[l];
      }
    }
  });
}

// ---- 1-D transforms on vectors (each applied to the columns, then the rows of a tile; forced
// inline: GCC keeps the input one out of line, which costs a third of the transform) ----------

/// o = B^T d (6 -> 6).
[[gnu::always_inline]] inline void input_1d(const Vec (&d)[kIn], Vec (&o)[kIn]) {
  const Vec four(4.0f), five(5.0f), two(2.0f);
  o[0] = xsimd::fma(four, d[0], xsimd::fnma(five, d[2], d[4]));
  o[1] = xsimd::fnma(four, d[1] + d[2], d[3] + d[4]);
  o[2] = xsimd::fma(four, d[1] - d[2], d[4] - d[3]);
  o[3] = xsimd::fma(two, d[3] - d[1], d[4] - d[2]);
  o[4] = xsimd::fnma(two, d[3] - d[1], d[4] - d[2]);
  o[5] = xsimd::fma(four, d[1], xsimd::fnma(five, d[3], d[5]));
}

/// o = A^T m (6 -> 4).
[[gnu::always_inline]] inline void output_1d(const Vec (&m)[kIn], Vec (&o)[kOut]) {
  const Vec s12 = m[1] + m[2], d12 = m[1] - m[2], s34 = m[3] + m[4], d34 = m[3] - m[4];
  o[0] = m[0] + s12 + s34;
  o[1] = xsimd::fma(Vec(2.0f), d34, d12);
  o[2] = xsimd::fma(Vec(4.0f), s34, s12);
  o[3] = xsimd::fma(Vec(8.0f), d34, d12) + m[5];
}

/// m = A o, the adjoint of output_1d (4 -> 6).
[[gnu::always_inline]] inline void output_adjoint_1d(const Vec (&o)[kOut], Vec (&m)[kIn]) {
  const Vec s02 = o[0] + o[2], s13 = o[1] + o[3];
  const Vec p = xsimd::fma(Vec(4.0f), o[2], o[0]), q = xsimd::fma(Vec(8.0f), o[3], o[1] + o[1]);
  m[0] = o[0];
  m[1] = s02 + s13;
  m[2] = s02 - s13;
  m[3] = p + q;
  m[4] = p - q;
  m[5] = o[3];
}

/// u = G g (3 -> 6).
[[gnu::always_inline]] inline void weight_1d(const Vec (&g)[3], Vec (&u)[kIn]) {
  const Vec s02 = g[0] + g[2];
  const Vec a = xsimd::fma(Vec(1.0f / 24.0f), g[0], g[2] * Vec(1.0f / 6.0f));
  const Vec b = g[1] * Vec(1.0f / 12.0f);
  u[0] = g[0] * Vec(0.25f);
  u[1] = (s02 + g[1]) * Vec(-1.0f / 6.0f);
  u[2] = (s02 - g[1]) * Vec(-1.0f / 6.0f);
  u[3] = a + b;
  u[4] = a - b;
  u[5] = g[2];
}

/// g = G^T u, the adjoint of weight_1d (6 -> 3).
[[gnu::always_inline]] inline void weight_adjoint_1d(const Vec (&u)[kIn], Vec (&g)[3]) {
  const Vec s12 = u[1] + u[2], s34 = u[3] + u[4];
  g[0] = xsimd::fma(Vec(0.25f), u[0], xsimd::fma(Vec(1.0f / 24.0f), s34, s12 * Vec(-1.0f / 6.0f)));
  g[1] = xsimd::fma(Vec(1.0f / 6.0f), u[2] - u[1], (u[3] - u[4]) * Vec(1.0f / 12.0f));
  g[2] = xsimd::fma(Vec(1.0f / 6.0f), s34 - s12, u[5]);
}

/// Applies the 1-D transform f to the columns, then the rows of an R x R tile of vectors, giving
/// a Q x Q tile: out(i, j) = sum T(i, a) in(a, b) T(j, b). f is a template argument so that the
/// calls are direct and inlined: GCC keeps a lambda argument out of line, with its arrays going
/// through memory, in the hottest loop of the input transform.
template <int64_t R, int64_t Q, auto f, class Load, class Store>
[[gnu::always_inline]] inline void transform_2d(Load&& load, Store&& store) {
  Vec t[Q][R];  // columns transformed
  unrolled<R>([&](auto b) {
    Vec col[R], out[Q];
    unrolled<R>([&](auto a) { col[a] = load(a, b); });
    f(col, out);
    unrolled<Q>([&](auto i) { t[i][b] = out[i]; });
  });
  unrolled<Q>([&](auto i) {
    Vec out[Q];
    f(t[i], out);
    unrolled<Q>([&](auto j) { store(i, j, out[j]); });
  });
}

/// V[p][t - t0][c] for the tiles [t0, t1) of the chunk: the transformed input.
inline void input_transform(const Plan& P, const float* xb, int64_t t0, int64_t t1, float* v) {
  const int64_t pitch = P.WB * kV, plane = P.HB * P.WB * kV, CB = P.Cp / kV, sv = P.sv;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t n = t / (P.TH * P.TW), th = t / P.TW % P.TH, tw = t % P.TW;
    const float* tile = xb + n * CB * plane + (th * kOut * P.WB + tw * kOut) * kV;
    for (int64_t cb = 0; cb < CB; ++cb) {
      const float* in = tile + cb * plane;
      float* out = v + (t - t0) * P.Cp + cb * kV;
      transform_2d<kIn, kIn, input_1d>(
          [&](int64_t a, int64_t b) { return Vec::load_aligned(in + a * pitch + b * kV); },
          [&](int64_t i, int64_t j, const Vec& x) { x.store_aligned(out + (i * kIn + j) * sv); });
    }
  }
}

/// U[p] = the transformed w [K][C][3][3] as B micro-panels (see Plan::u_stride), kV output
/// channels at a time (zeros past K, to the panel's end).
inline void weight_transform(const Plan& P, const float* w, float* u) {
  using detail::kNR;
  static_assert(kNR % kV == 0, "a vector of output channels lies inside one micro-panel");
  const int64_t k_end = detail::round_up(P.K, kNR);
  parallel_for(0, P.C, 8, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c)
      for (int64_t k0 = 0; k0 < k_end; k0 += kV) {
        alignas(64) float g[9][kV] = {};  // g[tap][l] = w[k0 + l][c][tap]
        for (int64_t l = 0; l < std::clamp<int64_t>(P.K - k0, 0, kV); ++l)
          for (int64_t tap = 0; tap < 9; ++tap) g[tap][l] = w[((k0 + l) * P.C + c) * 9 + tap];
        transform_2d<3, kIn, weight_1d>(
            [&](int64_t a, int64_t b) { return Vec::load_aligned(g[a * 3 + b]); },
            [&](int64_t i, int64_t j, const Vec& x) {  // panel k0 / kNR, row c, lanes k0 % kNR..
              x.store_aligned(u + (i * kIn + j) * P.u_stride() + (k0 / kNR * P.C + c) * kNR +
                              k0 % kNR);
            });
      }
  });
}

/// Runs body(slot, t0, t1) over chunks [t0, t1) of the tiles, slot s (one per thread) taking
/// the chunks of tiles [tiles * s / slots, tiles * (s + 1) / slots) in order.
template <class F>
inline void for_chunks(const Plan& P, F&& body) {
  parallel_for(0, P.slots, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) {
      const int64_t end = P.tiles * (s + 1) / P.slots;
      for (int64_t t0 = P.tiles * s / P.slots; t0 < end; t0 += P.chunk)
        body(s, t0, std::min(end, t0 + P.chunk));
    }
  });
}

/// y = conv(x, w) + bias (bias may be null).
inline void forward(const Conv2dGeometry& g, const float* x, const float* w, const float* bias,
                    float* y) {
  const Plan P(g);
  float* xb = workspace(Scratch::winograd_in, static_cast<size_t>(P.input_floats()));
  float* yb = workspace(Scratch::winograd_out, static_cast<size_t>(P.output_floats()));
  float* u = workspace(Scratch::winograd_u, static_cast<size_t>(P.u_floats()));
  to_blocked(x, P.N, P.C, P.H, P.W, xb, P.HB, P.WB, P.ph, P.pw);  // x: [N][C][H][W] -> xb
  weight_transform(P, w, u);                                      // w -> u: [36][C][Kp]
  for_chunks(P, [&](int64_t, int64_t t0, int64_t t1) {
    float* v = workspace(Scratch::winograd_v, static_cast<size_t>(kPos * P.sv));
    float* m = workspace(Scratch::winograd_m, static_cast<size_t>(kPos * P.sm));
    // The GEMMs leave m's columns K..Kp alone: keep them zero, not stale scratch.
    if (P.K != P.Kp) std::fill_n(m, kPos * P.sm, 0.0f);
    input_transform(P, xb, t0, t1, v);  // -> v: [36][chunk][Cp]
    for (int64_t p = 0; p < kPos; ++p)  // m[p] [chunk][Kp] = v[p] [chunk][C] u[p] [C][K]
      detail::gemm_serial(t1 - t0, P.K, P.C, detail::MatrixA{{v + p * P.sv, P.Cp, 1}, true},
                          detail::PackedB{u + p * P.u_stride(), P.C}, 0, 0, 0, m + p * P.sm, P.Kp,
                          1.0f, 0.0f);
    const int64_t pitch = P.OWB * kV, sm = P.sm;
    for (int64_t t = t0; t < t1; ++t) {  // -> yb: [N][Kp/kV][OHB][OWB][kV]
      const int64_t n = t / (P.TH * P.TW), th = t / P.TW % P.TH, tw = t % P.TW;
      for (int64_t kb = 0; kb < P.Kp / kV; ++kb) {
        const float* in = m + (t - t0) * P.Kp + kb * kV;
        float* out = yb + (((n * (P.Kp / kV) + kb) * P.OHB + th * kOut) * P.OWB + tw * kOut) * kV;
        transform_2d<kIn, kOut, output_1d>(
            [&](int64_t a, int64_t b) { return Vec::load_aligned(in + (a * kIn + b) * sm); },
            [&](int64_t i, int64_t j, const Vec& val) {
              val.store_aligned(out + i * pitch + j * kV);
            });
      }
    }
  });
  from_blocked(yb, P.N, P.K, P.OH, P.OW, P.OHB, P.OWB, bias, y);  // yb -> y: [N][K][OH][OW]
}

/// dw = d(loss)/dw given x and dy (overwrites dw; the bias gradient is the caller's).
inline void backward_weight(const Conv2dGeometry& g, const float* x, const float* dy, float* dw) {
  const Plan P(g);
  float* xb = workspace(Scratch::winograd_in, static_cast<size_t>(P.input_floats()));
  float* dyb = workspace(Scratch::winograd_out, static_cast<size_t>(P.output_floats()));
  float* du = workspace(Scratch::winograd_u, static_cast<size_t>(P.slots * P.du_floats()));
  to_blocked(x, P.N, P.C, P.H, P.W, xb, P.HB, P.WB, P.ph, P.pw);  // x -> xb
  to_blocked(dy, P.N, P.K, P.OH, P.OW, dyb, P.OHB, P.OWB, 0, 0);  // dy -> dyb, zero past OH, OW
  // Slot s sums its chunks into du[s]: [36][C][Kp].
  for_chunks(P, [&](int64_t s, int64_t t0, int64_t t1) {
    float* v = workspace(Scratch::winograd_v, static_cast<size_t>(kPos * P.sv));
    float* m = workspace(Scratch::winograd_m, static_cast<size_t>(kPos * P.sm));
    float* dus = du + s * P.du_floats();
    const bool first = t0 == P.tiles * s / P.slots;
    const int64_t pitch = P.OWB * kV, sm = P.sm;
    input_transform(P, xb, t0, t1, v);   // -> v: [36][chunk][Cp]
    for (int64_t t = t0; t < t1; ++t) {  // -> m: [36][chunk][Kp], A dy_t A^T
      const int64_t n = t / (P.TH * P.TW), th = t / P.TW % P.TH, tw = t % P.TW;
      for (int64_t kb = 0; kb < P.Kp / kV; ++kb) {
        const float* in =
            dyb + (((n * (P.Kp / kV) + kb) * P.OHB + th * kOut) * P.OWB + tw * kOut) * kV;
        float* out = m + (t - t0) * P.Kp + kb * kV;
        transform_2d<kOut, kIn, output_adjoint_1d>(
            [&](int64_t a, int64_t b) { return Vec::load_aligned(in + a * pitch + b * kV); },
            [&](int64_t i, int64_t j, const Vec& val) {
              val.store_aligned(out + (i * kIn + j) * sm);
            });
      }
    }
    // dus[p] [C][Kp] (+)= v[p]^T [C][chunk] * m[p] [chunk][Kp]
    for (int64_t p = 0; p < kPos; ++p)
      detail::gemm_serial(P.C, P.K, t1 - t0, detail::MatrixA{{v + p * P.sv, 1, P.Cp}},
                          detail::MatrixB{{m + p * P.sm, P.Kp, 1}}, 0, 0, 0, dus + p * P.C * P.Kp,
                          P.Kp, 1.0f, first ? 0.0f : 1.0f);
  });
  // dw[k][c] = G^T (sum over slots of du[.][c][k]) G, kV output channels at a time.
  parallel_for(0, P.C, 8, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c)
      for (int64_t k0 = 0; k0 < P.Kp; k0 += kV) {
        alignas(64) float out[9][kV];
        transform_2d<kIn, 3, weight_adjoint_1d>(
            [&](int64_t a, int64_t b) {
              const float* src = du + ((a * kIn + b) * P.C + c) * P.Kp + k0;
              Vec sum = Vec::load_unaligned(src);
              for (int64_t s = 1; s < P.slots; ++s)
                sum += Vec::load_unaligned(src + s * P.du_floats());
              return sum;
            },
            [&](int64_t i, int64_t j, const Vec& val) { val.store_aligned(out[i * 3 + j]); });
        for (int64_t l = 0; l < std::min(kV, P.K - k0); ++l)
          for (int64_t tap = 0; tap < 9; ++tap) dw[((k0 + l) * P.C + c) * 9 + tap] = out[tap][l];
      }
  });
}

}  // namespace brecq::kernels::simd::winograd
