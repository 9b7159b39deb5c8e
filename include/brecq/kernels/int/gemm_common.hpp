#pragma once
// The part of the SIMD convs shared by every ISA: work split, im2col of NHWC u8 into K-padded
// rows (padded taps = zx), column sums, the per-row context of the fused epilogue, workspace
// sizes. The ISA files supply the register tiles (kernels/int/avx512.hpp, avx2.hpp).
//
// A conv is, per group, C[pixels, cout_g] = A[pixels, K] * B[K, cout_g] with A the im2col rows
// (or the input rows themselves for a 1x1 stride-1 conv whose channels are a multiple of 4) and B
// the packed panels. Work: tasks of (group, chunk of up to kChunk pixels), split evenly over the
// threads; each thread im2cols its chunk into its own slice of the workspace, then sweeps every
// panel of the group with register tiles of mr pixels; the epilogue runs on the tile's registers.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "brecq/kernels/int/conv_args.hpp"
#include "brecq/kernels/int/pack.hpp"
#include "brecq/tensor/parallel.hpp"

namespace brecq::kernels::qint::detail {

constexpr int64_t kChunk = 192;  // pixels per task: multiple of every tile height (4, 6, 8, 12, 16)

/// Everything the epilogue of one conv call needs, constant over its tiles.
struct Epilogue {
  const int32_t* offset = nullptr;  ///< channel_offset (bias - zx * rowsum)
  const int32_t* col = nullptr;     ///< col_coef, used when has_col
  bool has_col = false;
  const Requant* rq = nullptr;
  ResidualKind residual = ResidualKind::none;
  int32_t res_zero = 0;
  int64_t res_channels = 0, res_pad = 0;
  uint8_t* out_u8 = nullptr;
  int32_t* out_s32 = nullptr;
  const int32_t* res_s32 = nullptr;
  int64_t channels = 0;  ///< out_channels (row length of the output)
};

/// One output pixel of a tile.
struct Row {
  int64_t pix = 0;               ///< flat index n * OH * OW + oh * OW + ow
  int32_t colsum = 0;            ///< sum of its A row (has_col)
  const uint8_t* res = nullptr;  ///< u8 residual row (channel 0 of r) or null
};

/// Indirect GEMM (no im2col copy) when each tap's K slice is whole k4 groups.
inline bool indirect(const PackedConv& pc) { return pc.geometry.cin_g() % 4 == 0; }

inline int64_t taps(const PackedConv& pc) {
  return indirect(pc) ? pc.geometry.kernel_h * pc.geometry.kernel_w : 1;
}

/// Per thread: the indirection table, the zero-point row (indirect) or the im2col rows; a
/// multiple of 64 bytes, so every thread's table of pointers starts aligned.
inline int64_t chunk_bytes(const PackedConv& pc) {
  const int64_t table = kChunk * taps(pc) * static_cast<int64_t>(sizeof(const uint8_t*));
  const int64_t bytes = table + (indirect(pc) ? pc.geometry.cin_g() : kChunk * pc.kp) + 128;
  return (bytes + 63) / 64 * 64;
}

inline Epilogue make_epilogue(const PackedConv& pc, const ConvArgs& a) {
  Epilogue ep;
  ep.offset = pc.channel_offset.data();
  ep.col = pc.col_coef.data();
  ep.has_col = pc.has_col;
  ep.rq = a.requant;
  ep.residual = a.residual.kind;
  ep.res_zero = a.residual.zero_point;
  ep.res_channels = a.residual.channels;
  ep.res_pad = a.residual.channel_pad;
  ep.out_u8 = a.out_u8;
  ep.out_s32 = a.out_s32;
  ep.res_s32 = a.residual.s32;
  ep.channels = pc.geometry.out_channels;
  return ep;
}

/// Row context of output pixel pix = (n, oh, ow) (residual row pointer for u8 residuals).
inline Row make_row(const ConvArgs& a, int64_t pix, int64_t n, int64_t oh, int64_t ow) {
  Row r;
  r.pix = pix;
  if (a.residual.kind == ResidualKind::u8) {
    const Residual& s = a.residual;
    r.res = s.u8 + ((n * s.height + oh * s.stride) * s.width + ow * s.stride) * s.channels;
  }
  return r;
}
inline Row make_row(const ConvArgs& a, int64_t pix, int64_t OH, int64_t OW) {
  return make_row(a, pix, pix / (OH * OW), pix / OW % OH, pix % OW);
}

/// memcpy for the short runs of im2col: 16-byte pieces the compiler inlines, then bytes.
inline void copy_bytes(uint8_t* dst, const uint8_t* src, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) std::memcpy(dst + i, src + i, 16);
  if (i + 8 <= n) std::memcpy(dst + i, src + i, 8), i += 8;
  for (; i < n; ++i) dst[i] = src[i];
}

/// im2col of output pixel (n, oh, ow) of group grp into dst[kp] (padded taps = zx, K tail = 0).
inline void im2col_row(const PackedConv& pc, const ConvArgs& a, int64_t n, int64_t oh, int64_t ow,
                       int64_t grp, uint8_t* dst) {
  const ConvGeometry& g = pc.geometry;
  const int64_t cin_g = g.cin_g();
  const uint8_t zx = static_cast<uint8_t>(pc.input_zero_point);
  for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
    const int64_t ih = oh * g.stride - g.padding + kh * g.dilation;
    for (int64_t kw = 0; kw < g.kernel_w; ++kw, dst += cin_g) {
      const int64_t iw = ow * g.stride - g.padding + kw * g.dilation;
      if (ih < 0 || ih >= a.height || iw < 0 || iw >= a.width) {
        for (int64_t i = 0; i < cin_g; ++i) dst[i] = zx;
        continue;
      }
      const uint8_t* src =
          a.input + ((n * a.height + ih) * a.width + iw) * g.in_channels + grp * cin_g;
      copy_bytes(dst, src, cin_g);
    }
  }
  std::memset(dst, 0, static_cast<size_t>(pc.kp - pc.k));
}

/// Sum of n bytes (the column sums of 8-bit-weight layers): vpsadbw on 32 bytes at a time. Only
/// the SIMD convs call it, and both need AVX2.
__attribute__((target("avx2,sse4.1"))) inline int32_t row_sum(const uint8_t* p, int64_t n) {
  __m256i acc = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32)
    acc = _mm256_add_epi64(
        acc, _mm256_sad_epu8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)),
                             _mm256_setzero_si256()));
  alignas(32) int64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc);
  int64_t s = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  if (i + 16 <= n) {  // the 16-channel layers of CIFAR ResNets
    const __m128i h =
        _mm_sad_epu8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i)), _mm_setzero_si128());
    s += _mm_cvtsi128_si64(h) + _mm_extract_epi64(h, 1);
    i += 16;
  }
  for (; i < n; ++i) s += p[i];
  return static_cast<int32_t>(s);
}

/// Runs a GEMM-layout conv: tile(ind, taps, nrows, B, k4t, c0, nc, row_info, ep) computes one
/// register tile of up to mr pixels against the panel of channels [c0, c0 + nc) and runs the
/// epilogue on it; row r's tap t is 4 * k4t bytes at ind[r * taps + t].
//
// Indirect (cin_g % 4 == 0): ind points into the input itself, one pointer per (pixel, tap), and
// padded taps at a row of zx bytes, so no im2col copy is made (XNNPACK's indirection buffer).
// Otherwise (the 3-channel stem): im2col rows of kp bytes, one "tap".
template <class Tile>
inline void gemm_conv(const PackedConv& pc, const ConvArgs& a, int mr, Tile&& tile) {
  const ConvGeometry& g = pc.geometry;
  const int64_t OH = g.out_h(a.height), OW = g.out_w(a.width), P = a.batch * OH * OW;
  const bool ind_mode = indirect(pc);
  const int64_t nt = taps(pc), cin_g = g.cin_g();
  const int64_t k4t = ind_mode ? cin_g / 4 : pc.kp / 4;
  const int64_t chunks = (P + kChunk - 1) / kChunk, tasks = chunks * g.groups;
  const int64_t per = chunk_bytes(pc);
  check(a.workspace != nullptr && a.workspace_bytes >= per * a.threads, "qint conv: workspace of ",
        a.workspace_bytes, " bytes, needs ", per * a.threads);
  const Epilogue ep = make_epilogue(pc, a);
  const int64_t panel_bytes = pc.kp * pc.nr, cout_g = g.cout_g();
  const uint8_t zx = static_cast<uint8_t>(pc.input_zero_point);
  const int T = static_cast<int>(std::min<int64_t>(a.threads, tasks));
  parallel_for(0, T, 1, T, [&](int64_t sb, int64_t se) {
    for (int64_t slot = sb; slot < se; ++slot) {
      const uint8_t** table = reinterpret_cast<const uint8_t**>(a.workspace + slot * per);
      uint8_t* buf = a.workspace + slot * per + kChunk * nt * static_cast<int64_t>(sizeof(void*));
      if (ind_mode) std::memset(buf, zx, static_cast<size_t>(cin_g));  // the padded tap
      Row info[kChunk];
      for (int64_t task = tasks * slot / T; task < tasks * (slot + 1) / T; ++task) {
        const int64_t grp = task / chunks, p0 = task % chunks * kChunk;
        const int64_t np = std::min(kChunk, P - p0);
        // One walk over the chunk's pixels (no divisions per row): table, row contexts.
        int64_t n = p0 / (OH * OW), oh = p0 / OW % OH, ow = p0 % OW;
        for (int64_t i = 0; i < np; ++i) {
          const uint8_t** row = table + i * nt;
          if (ind_mode) {
            int32_t colsum = 0;
            for (int64_t kh = 0, t = 0; kh < g.kernel_h; ++kh) {
              const int64_t ih = oh * g.stride - g.padding + kh * g.dilation;
              for (int64_t kw = 0; kw < g.kernel_w; ++kw, ++t) {
                const int64_t iw = ow * g.stride - g.padding + kw * g.dilation;
                row[t] = ih < 0 || ih >= a.height || iw < 0 || iw >= a.width
                             ? buf
                             : a.input + ((n * a.height + ih) * a.width + iw) * g.in_channels +
                                   grp * cin_g;
                if (pc.has_col) colsum += row_sum(row[t], cin_g);
              }
            }
            info[i] = make_row(a, p0 + i, n, oh, ow);
            info[i].colsum = colsum;
          } else {
            im2col_row(pc, a, n, oh, ow, grp, buf + i * pc.kp);
            row[0] = buf + i * pc.kp;
            info[i] = make_row(a, p0 + i, n, oh, ow);
            if (pc.has_col) info[i].colsum = row_sum(row[0], pc.k);
          }
          if (++ow == OW) {
            ow = 0;
            if (++oh == OH) oh = 0, ++n;
          }
        }
        for (int64_t panel = 0; panel < pc.panels; ++panel) {
          const int8_t* B = pc.w8.data() + (grp * pc.panels + panel) * panel_bytes;
          const int64_t cl = panel * pc.nr, nc = std::min(pc.nr, cout_g - cl);
          for (int64_t i = 0; i < np; i += mr)
            tile(table + i * nt, static_cast<int>(nt),
                 static_cast<int>(std::min<int64_t>(mr, np - i)), B, k4t, grp * cout_g + cl,
                 static_cast<int>(nc), info + i, ep);
        }
      }
    }
  });
}

}  // namespace brecq::kernels::qint::detail
