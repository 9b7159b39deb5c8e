// Integer conv kernels: every SIMD path this CPU runs (AVX2, AVX-512 VNNI) against the scalar
// qint::ref::conv, bit for bit, over odd shapes, every weight/activation width, grouped and
// depthwise convs, fused residuals (identity, option A, projection s32) and 1..3 threads; the
// reference against an independent naive sum; the requantization rule; every error path.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "brecq/kernels/int/conv.hpp"
#include "brecq/kernels/int/pool.hpp"

namespace {

namespace q = brecq::kernels::qint;

std::vector<q::Isa> simd_isas() {
  std::vector<q::Isa> out;
  for (q::Isa i : {q::Isa::avx2, q::Isa::avx512_vnni})
    if (q::isa_supported(i)) out.push_back(i);
  return out;
}

/// Dense LSB-first packing of levels (the file format's, see kernels/int/pack.hpp).
std::vector<uint8_t> pack_dense(const std::vector<int32_t>& levels, int bits) {
  const int sb = q::level_storage_bits(bits), per = 8 / sb;
  std::vector<uint8_t> out((levels.size() + per - 1) / per + 1, 0);
  for (size_t k = 0; k < levels.size(); ++k)
    out[k / per] |= static_cast<uint8_t>(levels[k] << (static_cast<int>(k % per) * sb));
  return out;
}

struct IntLayer {
  q::ConvGeometry g;
  int w_bits = 4, a_bits = 8;
  std::vector<int32_t> levels, zw, bias;
  std::vector<uint8_t> packed;
  int32_t zx = 0;
};

IntLayer random_layer(const q::ConvGeometry& g, int w_bits, int a_bits, uint32_t seed,
                      bool extreme = false, bool off_grid = false) {
  std::mt19937 gen(seed);
  IntLayer l;
  l.g = g;
  l.w_bits = w_bits;
  l.a_bits = a_bits;
  const int32_t wq = (1 << w_bits) - 1, aq = (1 << a_bits) - 1;
  std::uniform_int_distribution<int32_t> lv(0, wq), zd(0, wq), bd(-5000, 5000), xz(0, aq);
  l.levels.resize(static_cast<size_t>(g.out_channels * g.k()));
  for (auto& v : l.levels) v = extreme ? (gen() % 2 ? 0 : wq) : lv(gen);
  l.zw.resize(static_cast<size_t>(g.out_channels));
  for (auto& z : l.zw) z = extreme ? (gen() % 2 ? 0 : wq) : zd(gen);
  if (off_grid)  // channels whose range does not contain 0: zero points beyond the grid
    for (size_t o = 0; o < l.zw.size(); o += 2)
      l.zw[o] = o % 4 == 0 ? -3 - static_cast<int32_t>(o) : wq + 5;
  l.bias.resize(l.zw.size());
  for (auto& b : l.bias) b = bd(gen);
  l.packed = pack_dense(l.levels, w_bits);
  l.zx = extreme ? 0 : xz(gen);
  return l;
}

std::vector<uint8_t> random_levels(int64_t n, int bits, uint32_t seed, bool extreme = false) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int32_t> d(0, (1 << bits) - 1);
  std::vector<uint8_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = static_cast<uint8_t>(extreme ? (1 << bits) - 1 : d(gen));
  return v;
}

struct RequantStore {
  std::vector<int32_t> m, m2, s;
  q::Requant rq;
};

RequantStore random_requant(int64_t C, int out_bits, uint32_t seed, bool residual) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> e(-16.0, -6.0);
  RequantStore r;
  for (int64_t c = 0; c < C; ++c) {
    if (residual) {
      const auto p = q::quantize_multiplier_pair(std::exp2(e(gen)), std::exp2(e(gen) + 5.0));
      r.m.push_back(p.multiplier), r.m2.push_back(p.residual_multiplier), r.s.push_back(p.shift);
    } else {
      const auto p = q::quantize_multiplier(std::exp2(e(gen)));
      r.m.push_back(p.multiplier), r.s.push_back(p.shift);
    }
  }
  const int32_t qmax = (1 << out_bits) - 1;
  r.rq.multiplier = r.m.data();
  r.rq.residual_multiplier = residual ? r.m2.data() : nullptr;
  r.rq.shift = r.s.data();
  r.rq.out_zero = static_cast<int32_t>(gen() % static_cast<uint32_t>(qmax + 1));
  r.rq.lo = r.rq.out_zero / 2;  // a ReLU-like lower clamp below the zero point
  r.rq.hi = qmax - static_cast<int32_t>(gen() % 3);
  return r;
}

struct Case {
  q::ConvGeometry g;
  int64_t batch = 2, h = 7, w = 9;
  int w_bits = 4, a_bits = 8;
  q::ResidualKind residual = q::ResidualKind::none;
  int64_t option_a_stride = 1, option_a_pad = 0;
  bool s32_out = false;
  bool extreme = false;   ///< levels and zero points at the ends of the grid
  bool off_grid = false;  ///< weight zero points off the grid
};

/// Runs c with the packed layer on every thread count; returns the output bytes (u8 or s32).
std::vector<uint8_t> run(const Case& c, const IntLayer& l, q::Isa isa,
                         const std::vector<uint8_t>& x, const RequantStore& rq,
                         const std::vector<uint8_t>& res_u8, const std::vector<int32_t>& res_s32,
                         int threads) {
  const q::PackedConv pc =
      q::pack_conv(c.g, {.levels = l.packed.data(), .bits = l.w_bits, .zero_points = l.zw.data()},
                   {.isa = isa,
                    .input_zero_point = l.zx,
                    .input_max_level = (1 << l.a_bits) - 1,
                    .bias = l.bias.data()});
  const int64_t OH = c.g.out_h(c.h), OW = c.g.out_w(c.w), n = c.batch * OH * OW * c.g.out_channels;
  std::vector<uint8_t> out_u8(c.s32_out ? 0 : static_cast<size_t>(n), 0xAB);
  std::vector<int32_t> out_s32(c.s32_out ? static_cast<size_t>(n) : 0, -7);
  q::AlignedBuffer<uint8_t> ws(static_cast<size_t>(q::conv_workspace_bytes(pc, threads)));
  q::ConvArgs a{.input = x.data(), .batch = c.batch, .height = c.h, .width = c.w};
  if (c.s32_out)
    a.out_s32 = out_s32.data();
  else
    a.out_u8 = out_u8.data(), a.requant = &rq.rq;
  if (c.residual == q::ResidualKind::u8)
    a.residual = {.kind = q::ResidualKind::u8,
                  .u8 = res_u8.data(),
                  .zero_point = 3,
                  .height = (OH - 1) * c.option_a_stride + 1,
                  .width = (OW - 1) * c.option_a_stride + 1,
                  .channels = c.g.out_channels - 2 * c.option_a_pad,
                  .stride = c.option_a_stride,
                  .channel_pad = c.option_a_pad};
  if (c.residual == q::ResidualKind::s32)
    a.residual = {.kind = q::ResidualKind::s32, .s32 = res_s32.data()};
  a.threads = threads;
  a.workspace = ws.data();
  a.workspace_bytes = static_cast<int64_t>(ws.size());
  q::conv(pc, a);
  if (!c.s32_out) return out_u8;
  std::vector<uint8_t> bytes(out_s32.size() * 4);
  std::memcpy(bytes.data(), out_s32.data(), bytes.size());
  return bytes;
}

void check_case(const Case& c, uint32_t seed) {
  CAPTURE(c.g.in_channels);
  CAPTURE(c.g.out_channels);
  CAPTURE(c.g.kernel_h);
  CAPTURE(c.g.stride);
  CAPTURE(c.g.groups);
  CAPTURE(c.w_bits);
  CAPTURE(c.a_bits);
  CAPTURE(static_cast<int>(c.residual));
  const IntLayer l = random_layer(c.g, c.w_bits, c.a_bits, seed, c.extreme, c.off_grid);
  const std::vector<uint8_t> x =
      random_levels(c.batch * c.h * c.w * c.g.in_channels, c.a_bits, seed + 1, c.extreme);
  const RequantStore rq =
      random_requant(c.g.out_channels, 4 + seed % 5, seed + 2, c.residual != q::ResidualKind::none);
  const int64_t OH = c.g.out_h(c.h), OW = c.g.out_w(c.w);
  const int64_t rh = (OH - 1) * c.option_a_stride + 1, rw = (OW - 1) * c.option_a_stride + 1;
  const std::vector<uint8_t> res_u8 =
      random_levels(c.batch * rh * rw * (c.g.out_channels - 2 * c.option_a_pad), 8, seed + 3);
  std::vector<int32_t> res_s32(static_cast<size_t>(c.batch * OH * OW * c.g.out_channels));
  std::mt19937 gen(seed + 4);
  for (auto& v : res_s32) v = static_cast<int32_t>(gen() % 200001) - 100000;
  const auto want = run(c, l, q::Isa::ref, x, rq, res_u8, res_s32, 1);
  for (q::Isa isa : simd_isas())
    for (int t : {1, 2, 3}) {
      CAPTURE(q::isa_name(isa));
      CAPTURE(t);
      CHECK(run(c, l, isa, x, rq, res_u8, res_s32, t) == want);
    }
}

q::ConvGeometry geo(int64_t cin, int64_t cout, int64_t k, int64_t stride, int64_t pad,
                    int64_t groups = 1) {
  return {.in_channels = cin,
          .out_channels = cout,
          .kernel_h = k,
          .kernel_w = k,
          .stride = stride,
          .padding = pad,
          .groups = groups};
}

}  // namespace

TEST_CASE("qint conv: SIMD equals ref over kernels, strides, widths and odd shapes") {
  uint32_t seed = 1;
  for (int wb : {2, 3, 4, 6, 8})
    for (int ab : {2, 4, 8}) {
      check_case({.g = geo(8, 21, 1, 1, 0), .w_bits = wb, .a_bits = ab}, seed++);  // direct rows
      check_case({.g = geo(13, 70, 1, 2, 0), .w_bits = wb, .a_bits = ab}, seed++);
      check_case({.g = geo(11, 37, 3, 1, 1), .w_bits = wb, .a_bits = ab}, seed++);
      check_case({.g = geo(16, 130, 3, 2, 1), .w_bits = wb, .a_bits = ab}, seed++);
    }
  check_case({.g = geo(3, 64, 7, 2, 3), .batch = 1, .h = 23, .w = 19, .w_bits = 8, .a_bits = 8},
             seed++);
  check_case({.g = geo(3, 19, 7, 1, 3), .batch = 1, .h = 9, .w = 11, .w_bits = 8, .a_bits = 8},
             seed++);
  // many pixels: several chunks per thread, a partial last chunk
  check_case({.g = geo(32, 48, 3, 1, 1), .batch = 3, .h = 17, .w = 15, .w_bits = 4}, seed++);
  check_case({.g = geo(64, 256, 1, 1, 0), .batch = 2, .h = 14, .w = 15, .w_bits = 2}, seed++);
}

TEST_CASE("qint conv: weight zero points off the grid") {
  uint32_t seed = 400;
  for (int wb : {2, 4, 7, 8}) {
    check_case({.g = geo(11, 37, 3, 1, 1), .w_bits = wb, .off_grid = true}, seed++);
    check_case({.g = geo(16, 21, 1, 1, 0), .w_bits = wb, .a_bits = 4, .off_grid = true}, seed++);
    check_case({.g = geo(24, 24, 3, 2, 1, 24), .w_bits = wb, .off_grid = true}, seed++);
  }
}

TEST_CASE("qint conv: grouped and depthwise") {
  uint32_t seed = 100;
  for (int wb : {2, 4, 8}) {
    check_case({.g = geo(12, 20, 3, 1, 1, 4), .w_bits = wb}, seed++);
    check_case({.g = geo(16, 34, 1, 2, 0, 2), .w_bits = wb, .a_bits = 4}, seed++);
    for (int64_t s : {1, 2})
      for (int64_t ch : {16, 19, 40}) {
        check_case({.g = geo(ch, ch, 3, s, 1, ch), .w_bits = wb, .a_bits = 8}, seed++);
        check_case({.g = geo(ch, ch, 3, s, 1, ch), .w_bits = wb, .a_bits = 4}, seed++);
      }
    check_case({.g = geo(10, 10, 5, 1, 2, 10), .w_bits = wb}, seed++);  // generic depthwise
  }
}

TEST_CASE("qint conv: fused residuals and s32 output") {
  uint32_t seed = 200;
  for (int wb : {2, 4, 8}) {
    check_case({.g = geo(16, 16, 3, 1, 1), .w_bits = wb, .residual = q::ResidualKind::u8}, seed++);
    check_case({.g = geo(24, 24, 1, 1, 0), .w_bits = wb, .residual = q::ResidualKind::u8}, seed++);
    // option A: the residual is x[:, :, ::2, ::2] with 8 zero channels on each side
    check_case({.g = geo(16, 32, 3, 2, 1),
                .h = 8,
                .w = 9,
                .w_bits = wb,
                .residual = q::ResidualKind::u8,
                .option_a_stride = 2,
                .option_a_pad = 8},
               seed++);
    check_case({.g = geo(5, 27, 3, 2, 1),
                .w_bits = wb,
                .residual = q::ResidualKind::u8,
                .option_a_stride = 2,
                .option_a_pad = 3},
               seed++);
    check_case({.g = geo(16, 40, 3, 1, 1), .w_bits = wb, .residual = q::ResidualKind::s32}, seed++);
    check_case({.g = geo(19, 19, 3, 1, 1, 19), .w_bits = wb, .residual = q::ResidualKind::u8},
               seed++);
    check_case({.g = geo(16, 67, 1, 2, 0), .w_bits = wb, .s32_out = true}, seed++);
    check_case({.g = geo(12, 33, 3, 1, 1), .w_bits = wb, .s32_out = true}, seed++);
  }
}

TEST_CASE("qint conv: saturation corner of vpmaddubsw (levels at the ends of the grid)") {
  // All activations 255 and weights at +-max: 2 * 255 * 128 overflows int16, so the AVX2 path
  // must take its split route for W8A8 and W7A8, and need not for W6A8 or W8A7.
  uint32_t seed = 300;
  for (int wb : {6, 7, 8})
    for (int ab : {7, 8}) {
      const Case c{.g = geo(32, 32, 3, 1, 1), .w_bits = wb, .a_bits = ab, .extreme = true};
      check_case(c, seed++);
      check_case(
          {.g = geo(16, 16, 1, 1, 0), .w_bits = wb, .a_bits = ab, .s32_out = true, .extreme = true},
          seed++);
      const IntLayer l = random_layer(c.g, wb, ab, seed, true);
      if (q::isa_supported(q::Isa::avx2)) {
        const q::PackedConv pc =
            q::pack_conv(c.g, {.levels = l.packed.data(), .bits = wb, .zero_points = l.zw.data()},
                         {.isa = q::Isa::avx2, .input_max_level = (1 << ab) - 1});
        CHECK(pc.avx2_split == (2 * ((1 << ab) - 1) * pc.max_abs_w8 > 32767));
        if (wb <= 6) CHECK_FALSE(pc.avx2_split);
        if (wb >= 7 && ab == 8) CHECK(pc.avx2_split);
      }
    }
}

TEST_CASE("qint::ref::conv equals the naive sum of (wq - zw)(xq - zx) + bias") {
  const Case c{
      .g = geo(6, 10, 3, 2, 1, 2), .batch = 2, .h = 6, .w = 7, .w_bits = 4, .s32_out = true};
  const IntLayer l = random_layer(c.g, 4, 8, 7);
  const auto x = random_levels(c.batch * c.h * c.w * 6, 8, 8);
  const RequantStore rq = random_requant(10, 8, 9, false);
  const auto bytes = run(c, l, q::Isa::ref, x, rq, {}, {}, 2);
  std::vector<int32_t> got(bytes.size() / 4);
  std::memcpy(got.data(), bytes.data(), bytes.size());
  const int64_t OH = c.g.out_h(c.h), OW = c.g.out_w(c.w);
  for (int64_t n = 0; n < c.batch; ++n)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow)
        for (int64_t o = 0; o < 10; ++o) {
          int64_t acc = l.bias[static_cast<size_t>(o)];
          const int64_t grp = o / 5;
          for (int64_t ci = 0; ci < 3; ++ci)
            for (int64_t kh = 0; kh < 3; ++kh)
              for (int64_t kw = 0; kw < 3; ++kw) {
                const int64_t ih = oh * 2 - 1 + kh, iw = ow * 2 - 1 + kw;
                const int32_t xv =
                    ih < 0 || ih >= c.h || iw < 0 || iw >= c.w
                        ? l.zx
                        : x[static_cast<size_t>(((n * c.h + ih) * c.w + iw) * 6 + grp * 3 + ci)];
                const int32_t wv = l.levels[static_cast<size_t>(((o * 3 + ci) * 3 + kh) * 3 + kw)];
                acc += static_cast<int64_t>(wv - l.zw[static_cast<size_t>(o)]) * (xv - l.zx);
              }
          CHECK(got[static_cast<size_t>(((n * OH + oh) * OW + ow) * 10 + o)] == acc);
        }
}

TEST_CASE("qint requantization rule") {
  for (double M : {1e-9, 3.7e-5, 0.0123, 0.5, 0.99999999, 1.0, 7.5, 1000.0}) {
    const auto fp = q::quantize_multiplier(M);
    CAPTURE(M);
    CHECK(fp.shift >= 1);
    CHECK(fp.shift <= q::kMaxShift);
    CHECK(fp.multiplier >= 0);
    CHECK(std::fabs(std::ldexp(static_cast<double>(fp.multiplier), -fp.shift) - M) <=
          M * std::ldexp(1.0, -30));
    if (M > 1e-8) CHECK(fp.multiplier >= (1 << 30));
  }
  // round half up: 0.5 -> 1, -0.5 -> 0, 1.5 -> 2, -1.5 -> -1
  const auto half = q::quantize_multiplier(0.5);
  CHECK(q::apply_fixed_point(1, half.multiplier, half.shift) == 1);
  CHECK(q::apply_fixed_point(-1, half.multiplier, half.shift) == 0);
  CHECK(q::apply_fixed_point(3, half.multiplier, half.shift) == 2);
  CHECK(q::apply_fixed_point(-3, half.multiplier, half.shift) == -1);
  CHECK(q::apply_fixed_point(-4, half.multiplier, half.shift) == -2);
  const auto pair = q::quantize_multiplier_pair(0.25, 1.5);
  CHECK(pair.multiplier == (1 << 28));  // the shift suits 1.5 = 0.75 * 2: s = 30
  CHECK(pair.residual_multiplier == 3 << 29);
  CHECK(pair.shift == 30);
  CHECK(q::quantize_bias(1.0f, 0.5f, 0.25f) == 8);
  CHECK(q::quantize_bias(-1.25f, 1.0f, 1.0f) == -1);
  CHECK(q::relu6_level(0.05f, 10, 255) == 130);
  CHECK(q::relu6_level(0.01f, 10, 255) == 255);
  CHECK_THROWS_WITH_AS(q::quantize_multiplier(0.0), doctest::Contains("finite and > 0"),
                       brecq::Error);
  CHECK_THROWS_WITH_AS(q::quantize_multiplier(std::ldexp(1.0, 31)), doctest::Contains("too large"),
                       brecq::Error);
  CHECK_THROWS_WITH_AS(q::quantize_bias(1e10f, 1e-3f, 1e-3f), doctest::Contains("2^30"),
                       brecq::Error);
}

TEST_CASE("qint ISA selection") {
  CHECK(q::isa_supported(q::Isa::ref));
  CHECK(q::isa_supported(q::best_isa()));
  CHECK(q::parse_isa("avx2") == q::Isa::avx2);
  CHECK(q::parse_isa("vnni") == q::Isa::avx512_vnni);
  CHECK_THROWS_WITH_AS(q::parse_isa("sse"), doctest::Contains("got 'sse'"), brecq::Error);
}

TEST_CASE("qint pack_conv and conv reject invalid input") {
  const q::ConvGeometry g = geo(4, 4, 3, 1, 1);
  IntLayer l = random_layer(g, 3, 8, 1);
  q::WeightView w{.levels = l.packed.data(), .bits = 3, .zero_points = l.zw.data()};
  CHECK_THROWS_WITH_AS(
      q::pack_conv(g, {.levels = l.packed.data(), .bits = 9, .zero_points = l.zw.data()}, {}),
      doctest::Contains("got 9"), brecq::Error);
  CHECK_THROWS_WITH_AS(q::pack_conv(geo(4, 6, 3, 1, 1, 4), w, {}),
                       doctest::Contains("invalid channels"), brecq::Error);
  CHECK_THROWS_WITH_AS(q::pack_conv(g, w, {.input_zero_point = 300}),
                       doctest::Contains("input zero point 300"), brecq::Error);
  std::vector<int32_t> bad_zw = l.zw;
  bad_zw[2] = 1 << 21;
  CHECK_THROWS_WITH_AS(
      q::pack_conv(g, {.levels = l.packed.data(), .bits = 3, .zero_points = bad_zw.data()}, {}),
      doctest::Contains("zero point 2097152 of channel 2"), brecq::Error);
  std::vector<int32_t> lv = l.levels;
  lv[5] = 12;  // fits 4 storage bits but not 3-bit levels
  const auto packed = pack_dense(lv, 3);
  CHECK_THROWS_WITH_AS(
      q::pack_conv(g, {.levels = packed.data(), .bits = 3, .zero_points = l.zw.data()}, {}),
      doctest::Contains("weight level 12"), brecq::Error);
  const std::vector<int32_t> huge(4, 2147483000);
  CHECK_THROWS_WITH_AS(q::pack_conv(g, w, {.bias = huge.data()}), doctest::Contains("overflow"),
                       brecq::Error);

  const q::PackedConv pc = q::pack_conv(g, w, {.isa = q::best_isa()});
  std::vector<uint8_t> x(4 * 5 * 5, 1), y(4 * 5 * 5);
  std::vector<int32_t> ys(4 * 5 * 5);
  const RequantStore rq = random_requant(4, 8, 1, false);
  q::AlignedBuffer<uint8_t> ws(static_cast<size_t>(q::conv_workspace_bytes(pc, 2)) + 1);
  q::ConvArgs a{.input = x.data(),
                .batch = 1,
                .height = 5,
                .width = 5,
                .out_u8 = y.data(),
                .requant = &rq.rq,
                .threads = 2,
                .workspace = ws.data(),
                .workspace_bytes = static_cast<int64_t>(ws.size())};
  q::conv(pc, a);
  q::ConvArgs both = a;
  both.out_s32 = ys.data();
  CHECK_THROWS_WITH_AS(q::conv(pc, both), doctest::Contains("exactly one"), brecq::Error);
  q::ConvArgs noreq = a;
  noreq.requant = nullptr;
  CHECK_THROWS_WITH_AS(q::conv(pc, noreq), doctest::Contains("needs a Requant"), brecq::Error);
  q::ConvArgs badres = a;
  badres.residual = {
      .kind = q::ResidualKind::u8, .u8 = x.data(), .height = 5, .width = 5, .channels = 3};
  CHECK_THROWS_WITH_AS(q::conv(pc, badres), doctest::Contains("does not match"), brecq::Error);
  q::ConvArgs nomult = a;
  nomult.residual = {
      .kind = q::ResidualKind::u8, .u8 = x.data(), .height = 5, .width = 5, .channels = 4};
  CHECK_THROWS_WITH_AS(q::conv(pc, nomult), doctest::Contains("residual multipliers"),
                       brecq::Error);
  q::ConvArgs small = a;
  small.height = 0;
  CHECK_THROWS_WITH_AS(q::conv(pc, small), doctest::Contains("positive batch"), brecq::Error);
  if (pc.layout == q::PackedLayout::gemm) {
    q::ConvArgs nows = a;
    nows.workspace_bytes = 16;
    CHECK_THROWS_WITH_AS(q::conv(pc, nows), doctest::Contains("workspace"), brecq::Error);
  }
  const q::PackedConv pref = q::pack_conv(g, w, {.isa = q::Isa::ref});
  CHECK_THROWS_WITH_AS(q::avx2::conv(pref, a), doctest::Contains("packed for ref"), brecq::Error);
  CHECK_THROWS_WITH_AS(q::ref::conv(pc, a), doctest::Contains("expected ref"), brecq::Error);
}

TEST_CASE("qint pooling and the float-logit classifier") {
  std::mt19937 gen(5);
  const int64_t N = 2, H = 7, W = 6, C = 5;
  const auto x = random_levels(N * H * W * C, 8, 11);
  // max pool 3x3 / 2, pad 1 against the definition
  const int64_t OH = (H + 2 - 3) / 2 + 1, OW = (W + 2 - 3) / 2 + 1;
  std::vector<uint8_t> y(static_cast<size_t>(N * OH * OW * C));
  for (int t : {1, 2}) {
    q::max_pool({.input = x.data(),
                 .output = y.data(),
                 .batch = N,
                 .height = H,
                 .width = W,
                 .channels = C,
                 .threads = t});
    for (int64_t n = 0; n < N; ++n)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow)
          for (int64_t c = 0; c < C; ++c) {
            int m = 0;
            for (int64_t ih = oh * 2 - 1; ih <= oh * 2 + 1; ++ih)
              for (int64_t iw = ow * 2 - 1; iw <= ow * 2 + 1; ++iw)
                if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                  m = std::max<int>(m, x[static_cast<size_t>(((n * H + ih) * W + iw) * C + c)]);
            CHECK(y[static_cast<size_t>(((n * OH + oh) * OW + ow) * C + c)] == m);
          }
  }
  std::vector<int32_t> sums(static_cast<size_t>(N * C));
  q::global_sum_pool({.input = x.data(),
                      .sums = sums.data(),
                      .batch = N,
                      .hw = H * W,
                      .channels = C,
                      .threads = 2});
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      int32_t s = 0;
      for (int64_t p = 0; p < H * W; ++p) s += x[static_cast<size_t>((n * H * W + p) * C + c)];
      CHECK(sums[static_cast<size_t>(n * C + c)] == s);
    }
  // classifier: against the float formula on dequantized values
  const int64_t out = 3;
  std::vector<int32_t> lv(static_cast<size_t>(out * C)), zw{1, 2, 0};
  for (auto& v : lv) v = static_cast<int32_t>(gen() % 16);
  const auto packed = pack_dense(lv, 4);
  const std::vector<float> ws{0.1f, 0.02f, 0.3f}, bias{0.5f, -1.0f, 0.0f};
  const float sx = 0.05f;
  const int32_t zx = 7;
  const q::PackedLinear pl = q::pack_linear(
      {.levels = packed.data(), .bits = 4, .zero_points = zw.data()}, {.in = C,
                                                                       .out = out,
                                                                       .weight_scale = ws.data(),
                                                                       .bias = bias.data(),
                                                                       .input_scale = sx,
                                                                       .input_zero_point = zx});
  std::vector<float> logits(static_cast<size_t>(N * out));
  q::linear_logits(
      pl, {.sums = sums.data(), .logits = logits.data(), .batch = N, .hw = H * W, .threads = 2});
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < out; ++o) {
      double want = bias[static_cast<size_t>(o)];
      for (int64_t c = 0; c < C; ++c) {
        const double mean = (sums[static_cast<size_t>(n * C + c)] / double(H * W) - zx) * sx;
        want += (lv[static_cast<size_t>(o * C + c)] - zw[static_cast<size_t>(o)]) *
                double(ws[static_cast<size_t>(o)]) * mean;
      }
      CHECK(logits[static_cast<size_t>(n * out + o)] == doctest::Approx(want).epsilon(1e-6));
    }
  CHECK_THROWS_WITH_AS(q::max_pool({.input = x.data(),
                                    .output = y.data(),
                                    .batch = N,
                                    .height = H,
                                    .width = W,
                                    .channels = C,
                                    .padding = 2}),
                       doctest::Contains("padding 2"), brecq::Error);
  CHECK_THROWS_WITH_AS(
      q::global_sum_pool(
          {.input = x.data(), .sums = sums.data(), .batch = 0, .hw = 1, .channels = 1}),
      doctest::Contains("invalid arguments"), brecq::Error);
}

TEST_CASE("parallel_for with an explicit thread count covers the range once") {
  for (int threads : {1, 2, 3, 8}) {
    std::vector<int> hits(1001, 0);
    brecq::parallel_for(0, 1001, 10, threads, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) ++hits[static_cast<size_t>(i)];
    });
    for (int h : hits) CHECK(h == 1);
  }
  int calls = 0;
  brecq::parallel_for(5, 5, 1, 4, [&](int64_t, int64_t) { ++calls; });
  CHECK(calls == 0);
}
