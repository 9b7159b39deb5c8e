#pragma once
// Scalar ground truth for 2-D convolution (direct loops), forward and both backward passes.
#include <cstdint>
#include <cstring>

#include "brecq/kernels/params.hpp"

namespace brecq::kernels::ref {

/// y[n, co, oh, ow] = bias[co] + sum x[n, ci, ih, iw] * w[co, ci_g, kh, kw]; bias may be null.
inline void conv2d_forward(const Conv2dGeometry& g, const float* x, const float* w,
                           const float* bias, float* y) {
  const int64_t OH = g.out_h(), OW = g.out_w(), cig = g.in_per_group(), cog = g.out_per_group();
  for (int64_t n = 0; n < g.batch; ++n)
    for (int64_t co = 0; co < g.out_channels; ++co) {
      const int64_t grp = co / cog;
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          double acc = bias ? bias[co] : 0.0;
          for (int64_t c = 0; c < cig; ++c) {
            const int64_t ci = grp * cig + c;
            for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
              const int64_t ih = oh * g.stride_h - g.pad_h + kh * g.dilation_h;
              if (ih < 0 || ih >= g.in_h) continue;
              for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
                const int64_t iw = ow * g.stride_w - g.pad_w + kw * g.dilation_w;
                if (iw < 0 || iw >= g.in_w) continue;
                acc +=
                    static_cast<double>(x[((n * g.in_channels + ci) * g.in_h + ih) * g.in_w + iw]) *
                    w[((co * cig + c) * g.kernel_h + kh) * g.kernel_w + kw];
              }
            }
          }
          y[((n * g.out_channels + co) * OH + oh) * OW + ow] = static_cast<float>(acc);
        }
    }
}

/// dx = d(loss)/dx given dy (overwrites dx).
inline void conv2d_backward_input(const Conv2dGeometry& g, const float* dy, const float* w,
                                  float* dx) {
  const int64_t OH = g.out_h(), OW = g.out_w(), cig = g.in_per_group(), cog = g.out_per_group();
  std::memset(dx, 0,
              sizeof(float) * static_cast<size_t>(g.batch * g.in_channels * g.in_h * g.in_w));
  for (int64_t n = 0; n < g.batch; ++n)
    for (int64_t co = 0; co < g.out_channels; ++co) {
      const int64_t grp = co / cog;
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          const float d = dy[((n * g.out_channels + co) * OH + oh) * OW + ow];
          for (int64_t c = 0; c < cig; ++c) {
            const int64_t ci = grp * cig + c;
            for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
              const int64_t ih = oh * g.stride_h - g.pad_h + kh * g.dilation_h;
              if (ih < 0 || ih >= g.in_h) continue;
              for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
                const int64_t iw = ow * g.stride_w - g.pad_w + kw * g.dilation_w;
                if (iw < 0 || iw >= g.in_w) continue;
                dx[((n * g.in_channels + ci) * g.in_h + ih) * g.in_w + iw] +=
                    d * w[((co * cig + c) * g.kernel_h + kh) * g.kernel_w + kw];
              }
            }
          }
        }
    }
}

/// dw = d(loss)/dw and, if dbias is not null, dbias (both overwritten).
inline void conv2d_backward_weight(const Conv2dGeometry& g, const float* x, const float* dy,
                                   float* dw, float* dbias) {
  const int64_t OH = g.out_h(), OW = g.out_w(), cig = g.in_per_group(), cog = g.out_per_group();
  for (int64_t co = 0; co < g.out_channels; ++co) {
    const int64_t grp = co / cog;
    if (dbias) {
      double acc = 0.0;
      for (int64_t n = 0; n < g.batch; ++n)
        for (int64_t o = 0; o < OH * OW; ++o) acc += dy[(n * g.out_channels + co) * OH * OW + o];
      dbias[co] = static_cast<float>(acc);
    }
    for (int64_t c = 0; c < cig; ++c) {
      const int64_t ci = grp * cig + c;
      for (int64_t kh = 0; kh < g.kernel_h; ++kh)
        for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
          double acc = 0.0;
          for (int64_t n = 0; n < g.batch; ++n)
            for (int64_t oh = 0; oh < OH; ++oh) {
              const int64_t ih = oh * g.stride_h - g.pad_h + kh * g.dilation_h;
              if (ih < 0 || ih >= g.in_h) continue;
              for (int64_t ow = 0; ow < OW; ++ow) {
                const int64_t iw = ow * g.stride_w - g.pad_w + kw * g.dilation_w;
                if (iw < 0 || iw >= g.in_w) continue;
                acc += static_cast<double>(dy[((n * g.out_channels + co) * OH + oh) * OW + ow]) *
                       x[((n * g.in_channels + ci) * g.in_h + ih) * g.in_w + iw];
              }
            }
          dw[((co * cig + c) * g.kernel_h + kh) * g.kernel_w + kw] = static_cast<float>(acc);
        }
    }
  }
}

}  // namespace brecq::kernels::ref
