// simd::conv2d_* against ref::conv2d_*: forward (with and without bias), input gradient and weight
// gradient (with and without bias gradient) over strides, padding, dilation, groups, pointwise and
// depthwise layers, odd sizes, batch 1, and 1 and 2 threads.
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "brecq/kernels/ref/conv.hpp"
#include "brecq/kernels/simd/conv.hpp"
#include "check.hpp"

namespace {

using brecq::kernels::Conv2dGeometry;
namespace ref = brecq::kernels::ref;
namespace simd = brecq::kernels::simd;
using brecq::test::check_close;
using brecq::test::random_buffer;

void check_conv(const Conv2dGeometry& g) {
  CAPTURE(g.batch);
  CAPTURE(g.in_channels);
  CAPTURE(g.in_h);
  CAPTURE(g.in_w);
  CAPTURE(g.out_channels);
  CAPTURE(g.kernel_h);
  CAPTURE(g.kernel_w);
  CAPTURE(g.stride_h);
  CAPTURE(g.stride_w);
  CAPTURE(g.pad_h);
  CAPTURE(g.pad_w);
  CAPTURE(g.dilation_h);
  CAPTURE(g.dilation_w);
  CAPTURE(g.groups);
  const int64_t x_size = g.batch * g.in_channels * g.in_h * g.in_w;
  const int64_t y_size = g.batch * g.out_channels * g.out_h() * g.out_w();
  const int64_t w_size = g.out_channels * g.in_per_group() * g.kernel_h * g.kernel_w;
  const auto x = random_buffer(x_size, 11), w = random_buffer(w_size, 12);
  const auto bias = random_buffer(g.out_channels, 13), dy = random_buffer(y_size, 14);

  std::vector<float> y_ref(y_size), y_ref_nb(y_size), dx_ref(x_size), dw_ref(w_size),
      db_ref(g.out_channels);
  ref::conv2d_forward(g, x.data(), w.data(), bias.data(), y_ref.data());
  ref::conv2d_forward(g, x.data(), w.data(), nullptr, y_ref_nb.data());
  ref::conv2d_backward_input(g, dy.data(), w.data(), dx_ref.data());
  ref::conv2d_backward_weight(g, x.data(), dy.data(), dw_ref.data(), db_ref.data());

  brecq::test::for_thread_counts([&] {
    std::vector<float> y(y_size, -7.0f), dx(x_size, -7.0f), dw(w_size, -7.0f),
        db(g.out_channels, -7.0f);
    simd::conv2d_forward(g, x.data(), w.data(), bias.data(), y.data());
    check_close(y, y_ref);
    simd::conv2d_forward(g, x.data(), w.data(), nullptr, y.data());
    check_close(y, y_ref_nb);
    simd::conv2d_backward_input(g, dy.data(), w.data(), dx.data());
    check_close(dx, dx_ref);
    simd::conv2d_backward_weight(g, x.data(), dy.data(), dw.data(), db.data());
    check_close(dw, dw_ref);
    check_close(db, db_ref);
    std::fill(dw.begin(), dw.end(), -7.0f);
    simd::conv2d_backward_weight(g, x.data(), dy.data(), dw.data(), nullptr);
    check_close(dw, dw_ref);
  });
}

/// A geometry with square kernel/stride/padding/dilation (the common case).
Conv2dGeometry geom(int64_t batch, int64_t cin, int64_t h, int64_t w, int64_t cout, int64_t k,
                    int64_t stride = 1, int64_t pad = 0, int64_t dilation = 1, int64_t groups = 1) {
  Conv2dGeometry g{.batch = batch, .in_channels = cin, .in_h = h, .in_w = w, .out_channels = cout};
  g.kernel_h = g.kernel_w = k;
  g.stride_h = g.stride_w = stride;
  g.pad_h = g.pad_w = pad;
  g.dilation_h = g.dilation_w = dilation;
  g.groups = groups;
  return g;
}

/// g with a different kernel size, stride, padding and dilation along the width.
Conv2dGeometry along_w(Conv2dGeometry g, int64_t k, int64_t stride, int64_t pad, int64_t dilation) {
  g.kernel_w = k, g.stride_w = stride, g.pad_w = pad, g.dilation_w = dilation;
  return g;
}

}  // namespace

TEST_CASE("simd conv: KxK (strides, padding, dilation, odd sizes)") {
  check_conv(geom(2, 3, 7, 7, 5, 3, 1, 1));       // 3x3 same
  check_conv(geom(1, 4, 9, 11, 6, 3, 2, 1));      // stride 2, odd non-square, batch 1
  check_conv(geom(2, 3, 10, 9, 4, 3, 1, 2, 2));   // dilation 2
  check_conv(geom(2, 3, 11, 10, 4, 3, 2, 2, 2));  // stride 2, dilation 2: taps read one phase only
  check_conv(geom(1, 3, 17, 17, 8, 7, 2, 3));     // 7x7 stride 2 stem
  check_conv(geom(3, 2, 5, 6, 3, 3, 1, 0));  // no padding, batch 3 (threads split images unevenly)
  check_conv(geom(2, 2, 1, 1, 3, 3, 1, 1));  // 1x1 input, all but the centre tap read padding
  check_conv(geom(2, 3, 4, 5, 2, 3, 3, 2));  // padding wider than the stride step
  check_conv(geom(2, 3, 6, 5, 2, 3, 1, 3));  // stride 1, pad > d (k - 1): input grad by col2im
  check_conv(geom(2, 4, 5, 6, 3, 1, 1, 1));  // 1x1 with padding: not a plain GEMM
  check_conv(geom(1, 2, 11, 12, 3, 9, 1, 4));                     // 81 taps (beyond the tap table)
  check_conv(along_w(geom(2, 2, 3, 21, 3, 1), 17, 1, 3, 1));      // 1x17 kernel
  check_conv(along_w(geom(1, 2, 3, 23, 3, 1), 17, 2, 3, 1));      // ... strided
  check_conv(along_w(geom(2, 3, 9, 8, 5, 3, 2, 1), 1, 1, 0, 3));  // asymmetric kernel and stride
}

TEST_CASE("simd conv: pointwise") {
  check_conv(geom(3, 17, 5, 6, 9, 1));              // 1x1 stride 1: direct GEMM, no im2col
  check_conv(geom(2, 8, 7, 7, 16, 1, 2));           // 1x1 stride 2: one phase of four read
  check_conv(geom(2, 8, 3, 5, 12, 1, 1, 0, 1, 4));  // grouped 1x1
}

TEST_CASE("simd conv: groups") {
  check_conv(geom(2, 6, 8, 8, 4, 3, 1, 1, 1, 2));
  check_conv(geom(1, 6, 7, 9, 9, 3, 2, 1, 1, 3));
  check_conv(geom(2, 3, 6, 6, 6, 3, 1, 1, 1, 3));  // depth multiplier 2: grouped, not depthwise
}

TEST_CASE("simd conv: depthwise") {
  check_conv(geom(2, 5, 9, 9, 5, 3, 1, 1, 1, 5));
  check_conv(geom(3, 7, 10, 13, 7, 3, 2, 1, 1, 7));  // stride 2, odd widths
  check_conv(geom(1, 3, 12, 12, 3, 5, 1, 4, 2, 3));  // 5x5 dilation 2
  check_conv(geom(2, 4, 8, 17, 4, 3, 2, 0, 1, 4));   // stride 2, no padding
  check_conv(geom(1, 2, 20, 70, 2, 3, 1, 1, 1, 2));  // wide rows: several register chunks per row
  check_conv(geom(2, 3, 7, 7, 3, 7, 3, 3, 1, 3));    // 7x7 stride 3
  check_conv(geom(2, 3, 9, 12, 3, 3, 2, 1, 2, 3));   // stride 2, dilation 2
  check_conv(geom(2, 3, 6, 7, 3, 3, 1, 3, 1, 3));    // pad > d (k - 1): input grad by scatter
  check_conv(along_w(geom(2, 4, 9, 10, 4, 1, 1, 0, 1, 4), 3, 2, 1, 1));  // 1x3, stride (1, 2)
}

TEST_CASE("simd conv: ResNet-20-like layers, thread splits") {
  check_conv(geom(4, 16, 8, 8, 16, 3, 1, 1));    // whole images per thread
  check_conv(geom(9, 8, 6, 6, 8, 3, 1, 1));      // 9 images on 2 threads
  check_conv(geom(1, 16, 32, 32, 32, 3, 2, 1));  // batch 1: threads inside the image
  check_conv(geom(1, 16, 16, 16, 16, 3, 1, 1));  // ... stride 1
}

TEST_CASE("simd conv: Winograd F(4x4, 3x3) layers") {
  namespace winograd = brecq::kernels::simd::winograd;
  const Conv2dGeometry cases[] = {
      geom(2, 16, 32, 32, 16, 3, 1, 1),  // ResNet-20 stage 1: many chunks per thread
      geom(3, 64, 8, 8, 64, 3, 1, 1),    // stage 3: 2 x 2 tiles per image
      geom(1, 12, 7, 7, 20, 3, 1, 1),    // partial tiles, channels not a whole vector, batch 1
      geom(2, 9, 13, 10, 8, 3, 1, 0),    // no padding: 11 x 8 output
      geom(2, 8, 6, 9, 11, 3, 1, 2),     // padding 2 (the input gradient's of padding 0)
      geom(5, 24, 5, 11, 40, 3, 1, 1),   // odd batch split over threads
  };
  for (const Conv2dGeometry& g : cases) {
    CHECK(winograd::applies(g));
    check_conv(g);
  }
  CHECK_FALSE(winograd::applies(geom(2, 4, 8, 8, 16, 3, 1, 1)));   // too few input channels
  CHECK_FALSE(winograd::applies(geom(2, 16, 8, 8, 16, 3, 2, 1)));  // strided
  CHECK_FALSE(winograd::applies(geom(2, 16, 3, 3, 16, 3, 1, 1)));  // output smaller than a tile
}
