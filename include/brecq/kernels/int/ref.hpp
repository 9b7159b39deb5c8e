#pragma once
// Scalar ground truth of the integer conv: the definition, with no packing tricks,
//   v[n, oh, ow, c] = bias[c] + sum_{taps inside the image, ci} (wq - zw)[c, tap, ci] * (xq - zx)
// (padded taps hold zx and contribute 0), then the epilogue of requant.hpp. Every SIMD kernel
// must equal it bit for bit.
#include <algorithm>
#include <cstdint>

#include "brecq/kernels/int/conv_args.hpp"
#include "brecq/kernels/int/pack.hpp"
#include "brecq/tensor/parallel.hpp"

namespace brecq::kernels::qint {

namespace ref {

inline void conv(const PackedConv& pc, const ConvArgs& a) {
  detail::check_conv_args(pc, a, "qint::ref::conv");
  check(pc.layout == PackedLayout::ref, "qint::ref::conv: weights packed for ", isa_name(pc.isa),
        ", expected ref");
  const ConvGeometry& g = pc.geometry;
  const int64_t OH = g.out_h(a.height), OW = g.out_w(a.width), C = g.out_channels;
  const int64_t cin_g = g.cin_g(), cout_g = g.cout_g(), K = pc.k, H = a.height, W = a.width;
  const int32_t zx = pc.input_zero_point;
  parallel_for(0, a.batch * OH * OW, 16, a.threads, [&](int64_t b, int64_t e) {
    for (int64_t pix = b; pix < e; ++pix) {
      const int64_t n = pix / (OH * OW), oh = pix / OW % OH, ow = pix % OW;
      for (int64_t c = 0; c < C; ++c) {
        const int64_t grp = c / cout_g;
        const int32_t* wr = pc.wref.data() + c * K;
        int64_t acc = pc.channel_offset[static_cast<size_t>(c)];
        for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
          const int64_t ih = oh * g.stride - g.padding + kh * g.dilation;
          if (ih < 0 || ih >= H) continue;
          for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
            const int64_t iw = ow * g.stride - g.padding + kw * g.dilation;
            if (iw < 0 || iw >= W) continue;
            const uint8_t* x = a.input + ((n * H + ih) * W + iw) * g.in_channels + grp * cin_g;
            const int32_t* wt = wr + (kh * g.kernel_w + kw) * cin_g;
            for (int64_t ci = 0; ci < cin_g; ++ci)
              acc += static_cast<int64_t>(wt[ci]) * (static_cast<int32_t>(x[ci]) - zx);
          }
        }
        if (a.out_s32) {
          a.out_s32[pix * C + c] = static_cast<int32_t>(acc);
          continue;
        }
        const int64_t t = detail::residual_term(a.residual, n, oh, ow, c, OH, OW, C);
        a.out_u8[pix * C + c] = requantize(acc, t, *a.requant, c);
      }
    }
  });
}

}  // namespace ref
}  // namespace brecq::kernels::qint
