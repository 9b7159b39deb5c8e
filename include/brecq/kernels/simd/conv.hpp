#pragma once
// SIMD 2-D convolution with the contracts of ref::conv2d_*: NCHW input, (C_out, C_in/groups, KH,
// KW) weights. 3x3 stride-1 layers go to simd/winograd.hpp (all three passes: the input gradient
// is a stride-1 forward), depthwise ones to simd/depthwise.hpp; every other layer is one GEMM per
// image and group over the im2col matrix col [K][P] (K = cig * KH * KW, P = OH * OW):
//   forward          y_g  [cog][P]  = w_g [cog][K] * col [K][P]
//   input gradient   dcol [K][P]    = w_g^T [K][cog] * dy_g [cog][P], then dx_g = col2im(dcol);
//                    with stride 1, instead the forward of dy with flipped, transposed weights
//   weight gradient  dw_g^T [K][cog] += col [K][P] * dy_g^T [P][cog]
// col is never materialised: for 1x1 stride-1 unpadded layers the input plane is col, and
// otherwise the GEMMs run on the wide grid of simd/im2col.hpp, where row r of col is a contiguous
// slice of the padded input, read in place by the micro-kernel (forward B operand; weight-gradient
// A operand, which then needs no transposing pack) or packed with vector copies. Only the strided
// input gradient materialises dcol (on the wide grid, so col2im is plain vector adds). Images are
// spread over threads when there are enough of them; otherwise each image's GEMMs and copies use
// the threads.
#include <algorithm>
#include <cstdint>

#include "brecq/kernels/params.hpp"
#include "brecq/kernels/simd/depthwise.hpp"
#include "brecq/kernels/simd/gemm.hpp"
#include "brecq/kernels/simd/im2col.hpp"
#include "brecq/kernels/simd/winograd.hpp"
#include "brecq/kernels/workspace.hpp"
#include "brecq/tensor/parallel.hpp"

namespace brecq::kernels::simd {

namespace detail {

/// Sizes of the per-group GEMMs of a convolution.
struct ConvGemm {
  int64_t cig, cog, K, P, HW;
  bool direct;  // 1x1, stride 1, no padding: the input plane is the column matrix

  explicit ConvGemm(const Conv2dGeometry& g)
      : cig(g.in_per_group()),
        cog(g.out_per_group()),
        K(g.in_per_group() * g.kernel_h * g.kernel_w),
        P(g.out_h() * g.out_w()),
        HW(g.in_h * g.in_w),
        direct(g.kernel_h == 1 && g.kernel_w == 1 && g.stride_h == 1 && g.stride_w == 1 &&
               g.pad_h == 0 && g.pad_w == 0) {}
};

/// Whether to give each thread whole images (balanced enough) rather than splitting each image.
inline bool images_in_parallel(int64_t batch) {
  const int64_t t = num_threads();
  return t > 1 && !in_parallel() && batch >= t && (batch % t == 0 || batch >= 4 * t);
}

/// Runs image(n) for every n, across threads if images_in_parallel.
template <class F>
inline void for_each_image(int64_t batch, F&& image) {
  if (images_in_parallel(batch)) {
    parallel_for(0, batch, 1, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) image(n);
    });
  } else {
    for (int64_t n = 0; n < batch; ++n) image(n);
  }
}

/// x_g ([cig][H][W]) -> xp: cig padded planes (channels split over threads).
inline void pad_group(const WideGrid& wg, int64_t cig, const float* xg, float* xp) {
  parallel_for(0, cig, std::max<int64_t>(1, 16384 / wg.plane),
               [&](int64_t c0, int64_t c1) { wg.transfer<true>(c0, c1, xg, xp); });
  wg.zero_slack(cig, xp);
}

/// B source: the wide column matrix [K][NW] over padded planes xp, read in place (row r is
/// xp + row_offset(r)) or packed with vector copies.
struct WideColumns {
  const WideGrid& wg;
  const float* xp;
  const float* base() const { return xp; }
  int64_t row_offset(int64_t r) const { return wg.row_offset(r); }
  void operator()(int64_t k0, int64_t kc, int64_t j0, int64_t n, float* dst) const {
    const int64_t taps = wg.KH * wg.KW;
    int64_t c = k0 / taps, t = k0 - c * taps;
    for (int64_t k = 0; k < kc; ++k, dst += kNR) {
      // col[k0 + k][j0:j0+n] -> dst: [kNR]
      const float* src = xp + c * wg.plane + wg.tap(t) + j0;
      if (++t == taps) t = 0, ++c;
      if (n == kNR) {
        for (int v = 0; v < kNR; v += kVec) Vec::load_unaligned(src + v).store_aligned(dst + v);
      } else {
        std::copy_n(src, n, dst);
        std::fill(dst + n, dst + kNR, 0.0f);
      }
    }
  }
};

/// A source: the wide column matrix [K][NW] over padded planes xp, rows read in place.
struct WideRows {
  const WideGrid& wg;
  const float* xp;
  bool in_place() const { return true; }
  const float* row(int64_t r) const { return xp + wg.row_offset(r); }
  void pack(int64_t, int64_t, int64_t, int64_t, float*) const {}
};

/// Forward of a non-depthwise convolution: y_g = w_g * col per image and group, plus bias.
inline void forward_gemm(const Conv2dGeometry& g, const float* x, const float* w, const float* bias,
                         float* y) {
  const ConvGemm s(g);
  const WideGrid wg(g);
  if (s.P <= 0) return;
  for_each_image(g.batch, [&](int64_t n) {
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      const float* xg = x + (n * g.in_channels + grp * s.cig) * s.HW;  // [cig][H][W]
      const MatrixA wgt{{w + grp * s.cog * s.K, s.K, 1}, true};        // [cog][K], in place
      float* yg = y + (n * g.out_channels + grp * s.cog) * s.P;        // [cog][P]
      if (s.direct) {
        // y_g [cog][P] = w_g [cog][K] * x_g [K][P]
        gemm_packed(s.cog, s.P, s.K, wgt, MatrixB{{xg, s.P, 1}}, yg, s.P, 1.0f, 0.0f);
      } else {
        float* xp =
            workspace(Scratch::col, static_cast<size_t>(wg.padded_floats(s.cig) + s.cog * wg.NW));
        float* yw = xp + wg.padded_floats(s.cig);  // wide output: [cog][OH][WQ]
        pad_group(wg, s.cig, xg, xp);              // x_g: [cig][H][W] -> xp: [cig][plane]
        // yw [cog][NW] = w_g [cog][K] * wide col [K][NW]
        gemm_packed(s.cog, wg.NW, s.K, wgt, WideColumns{wg, xp}, yw, wg.NW, 1.0f, 0.0f);
        wg.reshape_rows<false>(s.cog, yg, yw, wg.NW);  // yw: [cog][OH][WQ] -> y_g: [cog][OH][OW]
      }
      if (bias)
        for (int64_t co = 0; co < s.cog; ++co) {
          const float b = bias[grp * s.cog + co];
          float* row = yg + co * s.P;
          for (int64_t p = 0; p < s.P; ++p) row[p] += b;
        }
    }
  });
}

/// With stride 1, the input gradient is itself a stride-1 convolution of dy: padding
/// d * (k - 1) - p, the kernel flipped in space and in/out channels swapped within each group.
inline bool input_grad_is_conv(const Conv2dGeometry& g) {
  return g.stride_h == 1 && g.stride_w == 1 && g.pad_h <= g.dilation_h * (g.kernel_h - 1) &&
         g.pad_w <= g.dilation_w * (g.kernel_w - 1) && g.kernel_h * g.kernel_w > 1;
}

inline Conv2dGeometry input_grad_geometry(const Conv2dGeometry& g) {
  Conv2dGeometry t = g;
  t.in_channels = g.out_channels, t.in_h = g.out_h(), t.in_w = g.out_w();
  t.out_channels = g.in_channels;
  t.pad_h = g.dilation_h * (g.kernel_h - 1) - g.pad_h;
  t.pad_w = g.dilation_w * (g.kernel_w - 1) - g.pad_w;
  return t;
}

/// wt[grp * cig + ci][co][kh][kw] = w[grp * cog + co][ci][KH - 1 - kh][KW - 1 - kw].
/// Output channels are taken kBlock at a time, so that reads and writes both run along lines.
inline void flip_weights(const Conv2dGeometry& g, const float* w, float* wt) {
  const int64_t cig = g.in_per_group(), cog = g.out_per_group(), taps = g.kernel_h * g.kernel_w;
  constexpr int64_t kBlock = 16;
  // Rows (grp, ci) of wt are independent: split them over threads.
  parallel_for(
      0, g.groups * cig, std::max<int64_t>(1, 8192 / (cog * taps)), [&](int64_t r0, int64_t r1) {
        for (int64_t co0 = 0; co0 < cog; co0 += kBlock)
          for (int64_t r = r0; r < r1; ++r) {
            const int64_t grp = r / cig, ci = r % cig;
            for (int64_t co = co0; co < std::min(cog, co0 + kBlock); ++co) {
              const float* src = w + ((grp * cog + co) * cig + ci) * taps;  // w[co][ci]: [KH][KW]
              float* dst = wt + (r * cog + co) * taps;                      // wt[ci][co]: [KH][KW]
              for (int64_t t = 0; t < taps; ++t) dst[t] = src[taps - 1 - t];  // flip both axes
            }
          }
      });
}

/// dwt: [groups][K][cog] = the transposed weight gradient summed over images [n0, n1):
///   dw_g^T [K][cog] += col [K][P] * dy_g^T [P][cog]
/// with col as the in-place A operand (x_g rows when direct, else wide rows with dy widened to
/// match), so that the only packing is the small transposing one of dy.
inline void weight_grad_images(const Conv2dGeometry& g, const ConvGemm& s, const WideGrid& wg,
                               const float* x, const float* dy, int64_t n0, int64_t n1,
                               float* dwt) {
  if (n0 >= n1) std::fill_n(dwt, g.groups * s.K * s.cog, 0.0f);
  const int64_t ld = wg.wide_floats();
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      const float* xg = x + (n * g.in_channels + grp * s.cig) * s.HW;    // [cig][H][W]
      const float* dyg = dy + (n * g.out_channels + grp * s.cog) * s.P;  // [cog][P]
      float* dwt_g = dwt + grp * s.K * s.cog;                            // [K][cog]
      const float beta = n > n0 ? 1.0f : 0.0f;
      if (s.direct) {
        // dw_g^T [K][cog] (+)= x_g [K][P] * dy_g^T [P][cog]
        gemm_packed(s.K, s.cog, s.P, MatrixA{{xg, s.P, 1}, true}, MatrixB{{dyg, 1, s.P}}, dwt_g,
                    s.cog, 1.0f, beta);
        continue;
      }
      float* xp =
          workspace(Scratch::col, static_cast<size_t>(wg.padded_floats(s.cig) + s.cog * ld));
      float* dyw = xp + wg.padded_floats(s.cig);   // widened dy: [cog][ld], zero past OW
      pad_group(wg, s.cig, xg, xp);                // x_g: [cig][H][W] -> xp: [cig][plane]
      wg.reshape_rows<true>(s.cog, dyg, dyw, ld);  // dy_g: [cog][OH][OW] -> dyw: [cog][OH][WQ]
      // dw_g^T [K][cog] (+)= wide col [K][NW] * dyw^T [NW][cog]
      gemm_packed(s.K, s.cog, wg.NW, WideRows{wg, xp}, MatrixB{{dyw, 1, ld}}, dwt_g, s.cog, 1.0f,
                  beta);
    }
}

}  // namespace detail

/// y[n, co, oh, ow] = bias[co] + sum x[n, ci, ih, iw] * w[co, ci_g, kh, kw]; bias may be null.
inline void conv2d_forward(const Conv2dGeometry& g, const float* x, const float* w,
                           const float* bias, float* y) {
  if (winograd::applies(g)) return winograd::forward(g, x, w, bias, y);
  if (g.is_depthwise()) return depthwise_forward(g, x, w, bias, y);
  detail::forward_gemm(g, x, w, bias, y);
}

/// dx = d(loss)/dx given dy (overwrites dx).
inline void conv2d_backward_input(const Conv2dGeometry& g, const float* dy, const float* w,
                                  float* dx) {
  using namespace detail;
  if (input_grad_is_conv(g)) {  // also for depthwise: gathers beat the scatter of the general path
    float* wt = workspace(Scratch::reduce, static_cast<size_t>(g.out_channels * g.in_per_group() *
                                                               g.kernel_h * g.kernel_w));
    flip_weights(g, w, wt);  // w: [C_out][cig][KH][KW] -> wt: [C_in][cog][KH][KW], flipped
    return conv2d_forward(input_grad_geometry(g), dy, wt, nullptr, dx);
  }
  if (g.is_depthwise()) return depthwise_backward_input(g, dy, w, dx);
  const ConvGemm s(g);
  const WideGrid wg(g);
  const int64_t ld = wg.wide_floats();
  for_each_image(g.batch, [&](int64_t n) {
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      const float* dyg = dy + (n * g.out_channels + grp * s.cog) * s.P;  // [cog][P]
      const float* wgt = w + grp * s.cog * s.K;                          // [cog][K]
      float* dxg = dx + (n * g.in_channels + grp * s.cig) * s.HW;        // [cig][H][W]
      if (s.direct) {
        // dx_g [cig][HW] = w_g^T [cig][cog] * dy_g [cog][HW]
        sgemm(s.cig, s.HW, s.cog, wgt, s.K, dyg, s.P, dxg, s.HW, {.trans_a = true});
        continue;
      }
      float* dxp = workspace(Scratch::col,
                             static_cast<size_t>(wg.padded_floats(s.cig) + (s.cog + s.K) * ld));
      float* dyw = dxp + wg.padded_floats(s.cig);  // widened dy: [cog][ld], zero past OW
      float* dcol = dyw + s.cog * ld;              // wide column gradient: [K][ld]
      wg.reshape_rows<true>(s.cog, dyg, dyw, ld);  // dy_g: [cog][OH][OW] -> dyw: [cog][OH][WQ]
      // dcol [K][NW] = w_g^T [K][cog] * dyw [cog][NW]
      gemm_packed(s.K, wg.NW, s.cog, MatrixA{{wgt, 1, s.K}}, MatrixB{{dyw, ld, 1}}, dcol, ld, 1.0f,
                  0.0f);
      // col2im on the wide grid, then dxp: [cig][plane] -> dx_g: [cig][H][W]; one channel per task
      parallel_for(0, s.cig, std::max<int64_t>(1, 16384 / (s.K / s.cig * wg.NW)),
                   [&](int64_t c0, int64_t c1) {
                     std::fill(dxp + c0 * wg.plane, dxp + c1 * wg.plane, 0.0f);
                     wide_col2im_add(wg, dcol, ld, c0, c1, dxp);
                     wg.transfer<false>(c0, c1, dxg, dxp);
                   });
    }
  });
}

/// dw = d(loss)/dw and, if dbias is not null, dbias (both overwritten).
inline void conv2d_backward_weight(const Conv2dGeometry& g, const float* x, const float* dy,
                                   float* dw, float* dbias) {
  using namespace detail;
  if (g.is_depthwise()) return depthwise_backward_weight(g, x, dy, dw, dbias);
  const ConvGemm s(g);
  const WideGrid wg(g);
  const int64_t CO = g.out_channels, P = s.P;
  if (dbias)
    parallel_for(0, CO, 16, [&](int64_t c0, int64_t c1) {
      for (int64_t co = c0; co < c1; ++co) {
        double acc = 0.0;
        for (int64_t n = 0; n < g.batch; ++n) {
          const float* d = dy + (n * CO + co) * P;
          float part = 0.0f;
          for (int64_t p = 0; p < P; ++p) part += d[p];
          acc += part;
        }
        dbias[co] = static_cast<float>(acc);
      }
    });
  if (winograd::applies(g)) return winograd::backward_weight(g, x, dy, dw);
  // Thread t sums images [batch * t / T, batch * (t + 1) / T) into its own transposed buffer,
  // dwt: [T][groups][K][cog]; then dw[grp * cog + co][r] = sum_t dwt[t][grp][r][co].
  const int64_t dw_size = CO * s.K, T = images_in_parallel(g.batch) ? num_threads() : 1;
  float* dwt = workspace(Scratch::reduce, static_cast<size_t>(T * dw_size));
  if (T == 1) {
    weight_grad_images(g, s, wg, x, dy, 0, g.batch, dwt);
  } else {
    parallel_for(0, T, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t)
        weight_grad_images(g, s, wg, x, dy, g.batch * t / T, g.batch * (t + 1) / T,
                           dwt + t * dw_size);
    });
  }
  // Transposed kTile rows r at a time, so that the reads of dwt stay in a few lines per cog.
  constexpr int64_t kTile = 16;
  const int64_t blocks = (s.K + kTile - 1) / kTile;
  parallel_for(0, g.groups * blocks, std::max<int64_t>(1, 4096 / (kTile * s.cog)),
               [&](int64_t b0, int64_t b1) {
                 for (int64_t b = b0; b < b1; ++b) {
                   const int64_t grp = b / blocks, r0 = b % blocks * kTile;
                   const int64_t r1 = std::min(s.K, r0 + kTile);
                   for (int64_t t = 0; t < T; ++t)
                     for (int64_t cg = 0; cg < s.cog; ++cg) {
                       const float* src = dwt + t * dw_size + grp * s.K * s.cog + cg;  // [K][cog]
                       float* dst = dw + (grp * s.cog + cg) * s.K;                     // [cog][K]
                       for (int64_t r = r0; r < r1; ++r)
                         dst[r] = (t == 0 ? 0.0f : dst[r]) + src[r * s.cog];
                     }
                 }
               });
}

}  // namespace brecq::kernels::simd
