#pragma once
// Integer pooling and the float-logit classifier of the runtime. Scalar: they touch each
// activation once (max pool, global sum) or run on [N, C] sums (classifier), a small share of a
// network's work; every ISA uses these same functions, so they are their own reference.
#include <algorithm>
#include <cstdint>

#include "brecq/config.hpp"
#include "brecq/kernels/int/buffer.hpp"
#include "brecq/kernels/int/pack.hpp"
#include "brecq/tensor/parallel.hpp"

namespace brecq::kernels::qint {

struct MaxPoolArgs {
  const uint8_t* input = nullptr;  ///< NHWC levels
  uint8_t* output = nullptr;       ///< [batch, oh, ow, channels]
  int64_t batch = 0, height = 0, width = 0, channels = 0;
  int64_t kernel = 3, stride = 2, padding = 1;
  int threads = 1;
};

/// Max pool on levels: quantization is monotone, so it commutes with max; padded taps are
/// skipped (PyTorch pads with -inf).
inline void max_pool(const MaxPoolArgs& a) {
  check(a.input && a.output && a.batch >= 1 && a.channels >= 1 && a.kernel >= 1 && a.stride >= 1 &&
            a.padding >= 0 && 2 * a.padding <= a.kernel,
        "qint::max_pool: invalid arguments (kernel ", a.kernel, ", stride ", a.stride, ", padding ",
        a.padding, ")");
  const int64_t OH = (a.height + 2 * a.padding - a.kernel) / a.stride + 1;
  const int64_t OW = (a.width + 2 * a.padding - a.kernel) / a.stride + 1, C = a.channels;
  check(OH >= 1 && OW >= 1, "qint::max_pool: input ", a.height, "x", a.width,
        " gives an empty output");
  parallel_for(0, a.batch * OH * OW, 64, a.threads, [&](int64_t b, int64_t e) {
    for (int64_t pix = b; pix < e; ++pix) {
      const int64_t n = pix / (OH * OW), oh = pix / OW % OH, ow = pix % OW;
      uint8_t* dst = a.output + pix * C;
      std::fill(dst, dst + C, uint8_t{0});
      for (int64_t kh = 0; kh < a.kernel; ++kh) {
        const int64_t ih = oh * a.stride - a.padding + kh;
        if (ih < 0 || ih >= a.height) continue;
        for (int64_t kw = 0; kw < a.kernel; ++kw) {
          const int64_t iw = ow * a.stride - a.padding + kw;
          if (iw < 0 || iw >= a.width) continue;
          const uint8_t* src = a.input + ((n * a.height + ih) * a.width + iw) * C;
          for (int64_t c = 0; c < C; ++c) dst[c] = std::max(dst[c], src[c]);
        }
      }
    }
  });
}

struct GlobalPoolArgs {
  const uint8_t* input = nullptr;  ///< NHWC levels [batch, hw, channels]
  int32_t* sums = nullptr;         ///< [batch, channels]
  int64_t batch = 0, hw = 0, channels = 0;
  int threads = 1;
};

/// sums[n, c] = sum over h, w of x[n, h, w, c] (NHWC levels), exact in int32.
inline void global_sum_pool(const GlobalPoolArgs& a) {
  const uint8_t* x = a.input;
  int32_t* sums = a.sums;
  const int64_t batch = a.batch, hw = a.hw, channels = a.channels;
  const int threads = a.threads;
  check(x && sums && batch >= 1 && hw >= 1 && channels >= 1 && hw <= (int64_t{1} << 23),
        "qint::global_sum_pool: invalid arguments (", batch, " x ", hw, " x ", channels, ")");
  parallel_for(0, batch, 1, threads, [&](int64_t b, int64_t e) {
    for (int64_t n = b; n < e; ++n) {
      int32_t* s = sums + n * channels;
      std::fill(s, s + channels, 0);
      for (int64_t p = 0; p < hw; ++p) {
        const uint8_t* row = x + (n * hw + p) * channels;
        for (int64_t c = 0; c < channels; ++c) s[c] += row[c];
      }
    }
  });
}

/// The classifier after the global pool, packed: (wq - zw) as int32 [out][in] and the float
/// factors of the exact rational logit.
struct PackedLinear {
  int64_t in = 0, out = 0;
  AlignedBuffer<int32_t> w;     ///< [out][in]
  AlignedBuffer<double> scale;  ///< weight_scale[o] * input_scale
  AlignedBuffer<float> bias;    ///< [out] (zeros when the layer has none)
  int32_t input_zero_point = 0;
};

struct LinearPackParams {
  int64_t in = 0, out = 0;              ///< features
  const float* weight_scale = nullptr;  ///< [out]
  const float* bias = nullptr;          ///< [out] or null
  float input_scale = 1.0f;
  int32_t input_zero_point = 0;
};

inline PackedLinear pack_linear(const WeightView& w, const LinearPackParams& p) {
  const int64_t in = p.in, out = p.out;
  check(in >= 1 && out >= 1 && w.levels && w.zero_points && p.weight_scale && w.bits >= 2 &&
            w.bits <= 8,
        "qint::pack_linear: invalid arguments (", in, " -> ", out, ", ", w.bits, " bits)");
  PackedLinear pl;
  pl.in = in;
  pl.out = out;
  pl.input_zero_point = p.input_zero_point;
  pl.w = AlignedBuffer<int32_t>(static_cast<size_t>(in * out));
  pl.scale = AlignedBuffer<double>(static_cast<size_t>(out));
  pl.bias = AlignedBuffer<float>(static_cast<size_t>(out));
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t k = 0; k < in; ++k)
      pl.w[static_cast<size_t>(o * in + k)] =
          unpack_level(w.levels, o * in + k, w.bits) - w.zero_points[o];
    pl.scale[static_cast<size_t>(o)] =
        static_cast<double>(p.weight_scale[o]) * static_cast<double>(p.input_scale);
    pl.bias[static_cast<size_t>(o)] = p.bias ? p.bias[o] : 0.0f;
  }
  return pl;
}

/// logits[n, o] = weight_scale[o] * input_scale / hw * sum_k (wq - zw)[o, k] * (sums[n, k] - hw *
/// zx)
/// + bias[o]: the mean of the dequantized pooled input times the dequantized weight, with the
/// integer dot product exact in int64 and one rounding to float at the end.
struct LinearArgs {
  const int32_t* sums = nullptr;  ///< [batch, in] from global_sum_pool
  float* logits = nullptr;        ///< [batch, out]
  int64_t batch = 0, hw = 0;      ///< hw: pixels the sums ran over
  int threads = 1;
};

inline void linear_logits(const PackedLinear& pl, const LinearArgs& a) {
  const int32_t* sums = a.sums;
  float* logits = a.logits;
  const int64_t batch = a.batch, hw = a.hw;
  const int threads = a.threads;
  check(sums && logits && batch >= 1 && hw >= 1, "qint::linear_logits: invalid arguments");
  const int64_t in = pl.in, out = pl.out;
  const int64_t zsum = hw * pl.input_zero_point;
  parallel_for(0, batch * out, 64, threads, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t n = i / out, o = i % out;
      const int32_t* s = sums + n * in;
      const int32_t* w = pl.w.data() + o * in;
      int64_t acc = 0;
      for (int64_t k = 0; k < in; ++k) acc += static_cast<int64_t>(w[k]) * (s[k] - zsum);
      logits[i] = static_cast<float>(pl.scale[static_cast<size_t>(o)] * static_cast<double>(acc) /
                                         static_cast<double>(hw) +
                                     static_cast<double>(pl.bias[static_cast<size_t>(o)]));
    }
  });
}

}  // namespace brecq::kernels::qint
