#pragma once
// Image preprocessing that reproduces torchvision on PIL images:
//   Resize(S)        -> resize_shorter: PIL BILINEAR (antialiased when downscaling), uint8 result
//   CenterCrop(C)    -> center_crop: torchvision's offset rounding and zero padding
//   ToTensor         -> float CHW in [0, 1] (x / 255 in float32)
//   Normalize(m, s)  -> (x - m) / s in float32
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include "brecq/config.hpp"
#include "brecq/io/image.hpp"
#include "brecq/tensor/tensor.hpp"

namespace brecq {

/// What to do to a decoded image before it enters a model.
struct ImagePreprocess {
  int64_t resize_shorter = 0;  ///< resize so the shorter side has this length (0 = no resize)
  int64_t center_crop = 0;     ///< square center crop of this size (0 = no crop)
  std::array<float, 3> mean{0.0f, 0.0f, 0.0f};
  std::array<float, 3> std{1.0f, 1.0f, 1.0f};

  /// CIFAR models of this project: no resize, no crop, ImageNet mean/std.
  static ImagePreprocess cifar() {
    return {.resize_shorter = 0,
            .center_crop = 0,
            .mean = {0.485f, 0.456f, 0.406f},
            .std = {0.229f, 0.224f, 0.225f}};
  }
  /// Standard ImageNet evaluation: Resize(256), CenterCrop(224), ImageNet mean/std.
  static ImagePreprocess imagenet() {
    return {.resize_shorter = 256,
            .center_crop = 224,
            .mean = {0.485f, 0.456f, 0.406f},
            .std = {0.229f, 0.224f, 0.225f}};
  }
};

namespace detail::io {

/// Resampling taps of PIL's BILINEAR filter for one axis (PIL's precompute_coeffs followed by
/// normalize_coeffs_8bpc): output i reads `count[i]` inputs from `first[i]` with fixed-point
/// weights `weights[i * ksize + k]` (22 fractional bits).
struct PilTaps {
  static constexpr int precision_bits = 32 - 8 - 2;
  int64_t ksize = 0;
  std::vector<int64_t> first, count;
  std::vector<int32_t> weights;
};

inline PilTaps pil_bilinear_taps(int64_t in_size, int64_t out_size) {
  PilTaps t;
  // PIL computes with the float box (0, in_size); the difference is exact for these sizes.
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = 1.0 * filterscale;  // bilinear (triangle) filter support is 1
  t.ksize = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  t.first.resize(static_cast<size_t>(out_size));
  t.count.resize(static_cast<size_t>(out_size));
  t.weights.assign(static_cast<size_t>(out_size * t.ksize), 0);
  std::vector<double> k(static_cast<size_t>(t.ksize));
  const double ss = 1.0 / filterscale;
  for (int64_t xx = 0; xx < out_size; ++xx) {
    const double center = (static_cast<double>(xx) + 0.5) * scale;
    // C casts truncate toward zero, like PIL's (int) casts.
    int64_t xmin = static_cast<int64_t>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int64_t xmax = static_cast<int64_t>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int64_t x = 0; x < xmax; ++x) {
      double arg = (static_cast<double>(x + xmin) - center + 0.5) * ss;
      if (arg < 0.0) arg = -arg;
      const double w = arg < 1.0 ? 1.0 - arg : 0.0;
      k[static_cast<size_t>(x)] = w;
      ww += w;
    }
    for (int64_t x = 0; x < xmax; ++x) {
      double w = k[static_cast<size_t>(x)];
      if (ww != 0.0) w /= ww;
      const double scaled = w * static_cast<double>(1 << PilTaps::precision_bits);
      t.weights[static_cast<size_t>(xx * t.ksize + x)] =
          static_cast<int32_t>(w < 0 ? -0.5 + scaled : 0.5 + scaled);
    }
    t.first[static_cast<size_t>(xx)] = xmin;
    t.count[static_cast<size_t>(xx)] = xmax;
  }
  return t;
}

inline uint8_t pil_clip8(int64_t acc) {
  const int64_t v = acc >> PilTaps::precision_bits;  // arithmetic shift, as PIL's lookup table
  return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

}  // namespace detail::io

/// Resizes to exactly out_h x out_w like PIL's Image.resize(..., BILINEAR): a triangle filter
/// widened by the scale factor when downscaling (antialiasing), fixed-point weights, a
/// horizontal pass then a vertical pass, each rounded to uint8.
inline Image resize_bilinear(const Image& img, int64_t out_h, int64_t out_w) {
  check(img.height > 0 && img.width > 0, "resize_bilinear: input image is empty (", img.height, "x",
        img.width, ")");
  check(out_h > 0 && out_w > 0, "resize_bilinear: output size must be positive, got ", out_h, "x",
        out_w);
  constexpr int64_t C = Image::channels;
  constexpr int64_t half = int64_t{1} << (detail::io::PilTaps::precision_bits - 1);
  const auto th = detail::io::pil_bilinear_taps(img.height, out_h);
  const auto tw = detail::io::pil_bilinear_taps(img.width, out_w);

  // Horizontal pass over the input rows the vertical pass will read ([row0, row1)).
  const int64_t row0 = th.first.front();
  const int64_t row1 = th.first.back() + th.count.back();
  Image tmp;
  const Image* src = &img;
  int64_t src_row0 = 0;  // input row stored at src row 0
  if (out_w != img.width) {
    tmp.height = row1 - row0;
    tmp.width = out_w;
    tmp.pixels.resize(static_cast<size_t>(tmp.height * out_w * C));
    for (int64_t y = row0; y < row1; ++y) {
      const uint8_t* in = img.pixels.data() + y * img.width * C;
      uint8_t* out = tmp.pixels.data() + (y - row0) * out_w * C;
      for (int64_t x = 0; x < out_w; ++x) {
        const int64_t x0 = tw.first[static_cast<size_t>(x)], n = tw.count[static_cast<size_t>(x)];
        const int32_t* k = tw.weights.data() + x * tw.ksize;
        int64_t s0 = half, s1 = half, s2 = half;
        for (int64_t i = 0; i < n; ++i) {
          const uint8_t* p = in + (x0 + i) * C;
          s0 += p[0] * k[i];
          s1 += p[1] * k[i];
          s2 += p[2] * k[i];
        }
        out[x * C + 0] = detail::io::pil_clip8(s0);
        out[x * C + 1] = detail::io::pil_clip8(s1);
        out[x * C + 2] = detail::io::pil_clip8(s2);
      }
    }
    src = &tmp;
    src_row0 = row0;
  }
  if (out_h == img.height) return src == &img ? img : tmp;

  Image out;
  out.height = out_h;
  out.width = out_w;
  out.pixels.resize(static_cast<size_t>(out_h * out_w * C));
  const int64_t row_len = out_w * C;
  std::vector<int64_t> acc;
  for (int64_t y = 0; y < out_h; ++y) {
    const int64_t y0 = th.first[static_cast<size_t>(y)] - src_row0;
    const int64_t n = th.count[static_cast<size_t>(y)];
    const int32_t* k = th.weights.data() + y * th.ksize;
    // Integer sums are exact, so accumulating row by row gives PIL's per-pixel result.
    acc.assign(static_cast<size_t>(row_len), half);
    for (int64_t i = 0; i < n; ++i) {
      const uint8_t* r = src->pixels.data() + (y0 + i) * row_len;
      const int64_t ki = k[i];
      for (int64_t j = 0; j < row_len; ++j) acc[static_cast<size_t>(j)] += r[j] * ki;
    }
    uint8_t* o = out.pixels.data() + y * row_len;
    for (int64_t j = 0; j < row_len; ++j) o[j] = detail::io::pil_clip8(acc[static_cast<size_t>(j)]);
  }
  return out;
}

/// torchvision Resize(size) with an int size: the shorter side becomes `size`, the longer side
/// int(size * long / short); PIL bilinear interpolation.
inline Image resize_shorter(const Image& img, int64_t size) {
  check(size > 0, "resize_shorter: size must be positive, got ", size);
  check(img.height > 0 && img.width > 0, "resize_shorter: input image is empty (", img.height, "x",
        img.width, ")");
  const bool portrait = img.width <= img.height;
  const int64_t shorter = portrait ? img.width : img.height;
  const int64_t longer = portrait ? img.height : img.width;
  // Python: int(size * long / short), a true (double) division truncated.
  const auto new_long =
      static_cast<int64_t>(static_cast<double>(size * longer) / static_cast<double>(shorter));
  return portrait ? resize_bilinear(img, new_long, size) : resize_bilinear(img, size, new_long);
}

namespace detail::io {
/// Python's int(round(d / 2.0)) for an integer d >= 0: halves round to even.
constexpr int64_t half_round_even(int64_t d) {
  const int64_t q = d / 2;
  return (d % 2 == 0 || q % 2 == 0) ? q : q + 1;
}
}  // namespace detail::io

/// torchvision CenterCrop((crop_h, crop_w)): pads with zeros when the crop is larger than the
/// image, offsets int(round((size - crop) / 2.0)).
inline Image center_crop(const Image& img, int64_t crop_h, int64_t crop_w) {
  check(crop_h > 0 && crop_w > 0, "center_crop: crop size must be positive, got ", crop_h, "x",
        crop_w);
  constexpr int64_t C = Image::channels;
  int64_t h = img.height, w = img.width;
  // Zero padding (left/top get the smaller half), as torchvision does before cropping.
  const int64_t pad_top = crop_h > h ? (crop_h - h) / 2 : 0;
  const int64_t pad_left = crop_w > w ? (crop_w - w) / 2 : 0;
  if (crop_h > h) h = crop_h;
  if (crop_w > w) w = crop_w;
  const int64_t top = detail::io::half_round_even(h - crop_h);
  const int64_t left = detail::io::half_round_even(w - crop_w);
  Image out;
  out.height = crop_h;
  out.width = crop_w;
  out.pixels.assign(static_cast<size_t>(crop_h * crop_w * C), 0);
  for (int64_t y = 0; y < crop_h; ++y) {
    const int64_t sy = y + top - pad_top;  // row in the unpadded image
    if (sy < 0 || sy >= img.height) continue;
    for (int64_t x = 0; x < crop_w; ++x) {
      const int64_t sx = x + left - pad_left;
      if (sx < 0 || sx >= img.width) continue;
      for (int64_t c = 0; c < C; ++c)
        out.pixels[static_cast<size_t>((y * crop_w + x) * C + c)] = img.at(sy, sx, c);
    }
  }
  return out;
}
inline Image center_crop(const Image& img, int64_t size) { return center_crop(img, size, size); }

namespace detail::io {
/// Writes (pixel / 255 - mean[c]) / std[c] in CHW order to `out` (3 * H * W floats).
inline void write_chw_float(const Image& img, const ImagePreprocess& p, float* out) {
  const int64_t hw = img.height * img.width;
  for (int64_t c = 0; c < Image::channels; ++c) {
    const float m = p.mean[static_cast<size_t>(c)], s = p.std[static_cast<size_t>(c)];
    float* o = out + c * hw;
    const uint8_t* px = img.pixels.data() + c;
    for (int64_t i = 0; i < hw; ++i) o[i] = (static_cast<float>(px[i * 3]) / 255.0f - m) / s;
  }
}
}  // namespace detail::io

/// Float tensor [3, H, W]: (pixel / 255 - mean[c]) / std[c], computed in float32 like
/// torchvision's ToTensor + Normalize.
inline Tensor to_chw_float(const Image& img, const std::array<float, 3>& mean = {0, 0, 0},
                           const std::array<float, 3>& stddev = {1, 1, 1}) {
  for (float s : stddev) check(s != 0.0f, "to_chw_float: std must be non-zero, got 0");
  Tensor t = Tensor::empty(Shape{Image::channels, img.height, img.width});  // [3, H, W]
  detail::io::write_chw_float(img, {.mean = mean, .std = stddev}, t.data<float>());
  return t;
}

/// Resize, crop, scale and normalize as `p` says: float tensor [3, H, W].
inline Tensor preprocess_image(const Image& img, const ImagePreprocess& p) {
  check(p.resize_shorter >= 0 && p.center_crop >= 0,
        "preprocess_image: resize_shorter and center_crop must be >= 0, got ", p.resize_shorter,
        " and ", p.center_crop);
  if (p.resize_shorter == 0 && p.center_crop == 0) return to_chw_float(img, p.mean, p.std);
  Image x = p.resize_shorter ? resize_shorter(img, p.resize_shorter) : img;
  if (p.center_crop) x = center_crop(x, p.center_crop);
  return to_chw_float(x, p.mean, p.std);
}

}  // namespace brecq
