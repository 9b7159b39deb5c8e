// SGEMM throughput: brecq's simd::sgemm (the kernels::sgemm fast path) against OpenBLAS
// cblas_sgemm in the same run, on square sizes and on the GEMMs that convolution layers reduce to.
// Usage: gemm [--only SUBSTRING] [--out results/gemm.md]
#include "brecq/kernels/gemm.hpp"

#include <cblas.h>

#include <algorithm>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "common.hpp"

namespace {

// Rounds per shape: on a shared 2-core VM a single round's ratio moves by +-0.15; five keep the
// best of each side close to what a quiet machine gives.
constexpr int kRounds = 5;

struct Shape {
  std::string name;
  int64_t M, N, K;
  bool ta = false, tb = false;
};

std::vector<float> filled(int64_t n, float v) {
  return std::vector<float>(static_cast<size_t>(n), v);
}

/// Conv layer GEMMs over a whole batch (im2col columns of all images side by side): forward
/// y = W * col, input gradient dcol = W^T * dy, weight gradient dW = dy * col^T.
void add_conv(std::vector<Shape>& v, const std::string& name, int64_t cout, int64_t k, int64_t p) {
  v.push_back({name + " fwd", cout, p, k});
  v.push_back({name + " bwd-in", k, p, cout, true, false});
  v.push_back({name + " bwd-w", cout, k, p, false, true});
}

}  // namespace

int main(int argc, char** argv) try {
  using namespace brecq::bench;
  const auto f = parse_flags(argc, argv, "gemm", "SGEMM GFLOP/s, ours and OpenBLAS's.",
                             {{.name = "--only",
                               .value_name = "SUBSTRING",
                               .help = "keep the shapes whose name contains SUBSTRING"},
                              {.name = "--out",
                               .value_name = "FILE",
                               .help = "table",
                               .default_value = "results/gemm.md"}});
  std::vector<Shape> shapes;
  for (int64_t n : {64, 128, 256, 512, 1024, 2048}) shapes.push_back({"square", n, n, n});
  shapes.push_back({"square A^T", 1024, 1024, 1024, true, false});
  shapes.push_back({"square B^T", 1024, 1024, 1024, false, true});
  // ResNet-20 on 32x32, 3x3 convs: (C_out, K = 9 C_in, P = OH * OW * batch).
  for (int64_t b : {32, 128}) {
    const std::string tag = "R20 b" + std::to_string(b);
    add_conv(shapes, tag + " 16x32x32", 16, 144, 1024 * b);
    add_conv(shapes, tag + " 32x16x16", 32, 288, 256 * b);
    add_conv(shapes, tag + " 64x8x8", 64, 576, 64 * b);
  }
  // The same layers per image, as simd::conv2d_* runs them at batch 32 (one GEMM per image).
  add_conv(shapes, "R20 img 16x32x32", 16, 144, 1024);
  add_conv(shapes, "R20 img 32x16x16", 32, 288, 256);
  add_conv(shapes, "R20 img 64x8x8", 64, 576, 64);
  // ResNet-18 on 224x224, one image: conv1 7x7/2 and the 3x3 convs of each stage.
  shapes.push_back({"R18 conv1", 64, 12544, 147});
  add_conv(shapes, "R18 layer1", 64, 576, 3136);
  add_conv(shapes, "R18 layer2", 128, 1152, 784);
  add_conv(shapes, "R18 layer3", 256, 2304, 196);
  add_conv(shapes, "R18 layer4", 512, 4608, 49);

  std::erase_if(shapes,
                [&](const Shape& s) { return s.name.find(f.get("--only")) == std::string::npos; });
  brecq::check(!shapes.empty(), "--only '", f.get("--only"), "' matches no shape name");
  const double peak = measure_peak_gflops();
  std::ostringstream os;
  os << "# SGEMM: brecq simd::sgemm vs OpenBLAS cblas_sgemm\n\n"
     << "Threads: " << brecq::num_threads() << " (OpenMP) for brecq; OpenBLAS uses its own pool.\n"
     << "FP32 peak: " << fmt("%.1f", peak) << " GFLOP/s = " << brecq::num_threads()
     << " cores x 2 FMA pipes x " << xsimd::batch<float>::size << " lanes x 2 flop x "
     << fmt("%.2f", peak / (brecq::num_threads() * 4.0 * xsimd::batch<float>::size))
     << " GHz, the clock measured with an FMA loop on one core.\n"
     << "Each figure: best of " << kRounds
     << " rounds (alternating brecq and OpenBLAS) of best-of->=3 runs after "
        "a "
        "warm-up. Row-major C = op(A) op(B); A^T / B^T mark transposed operands.\n\n"
     << "| shape | M | N | K | op | brecq GFLOP/s | % peak | OpenBLAS GFLOP/s | % peak | brecq / "
        "OpenBLAS |\n"
     << "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|\n";
  std::cout << os.str() << std::flush;
  for (const Shape& s : shapes) {
    const int64_t lda = s.ta ? s.M : s.K, ldb = s.tb ? s.K : s.N;
    auto a = filled(s.M * s.K, 0.5f), b = filled(s.K * s.N, 0.25f), c = filled(s.M * s.N, 0.0f);
    const double flops =
        2.0 * static_cast<double>(s.M) * static_cast<double>(s.N) * static_cast<double>(s.K);
    // Alternate the two libraries over a few rounds so that both see the same machine load.
    double t_ours = 1e30, t_blas = 1e30;
    for (int round = 0; round < kRounds; ++round) {
      settle();
      t_ours = std::min(t_ours, best_time([&] {
                          brecq::kernels::sgemm(s.M, s.N, s.K, a.data(), lda, b.data(), ldb,
                                                c.data(), s.N, {.trans_a = s.ta, .trans_b = s.tb});
                        }));
      t_blas = std::min(t_blas, best_time([&] {
                          cblas_sgemm(CblasRowMajor, s.ta ? CblasTrans : CblasNoTrans,
                                      s.tb ? CblasTrans : CblasNoTrans, static_cast<int>(s.M),
                                      static_cast<int>(s.N), static_cast<int>(s.K), 1.0f, a.data(),
                                      static_cast<int>(lda), b.data(), static_cast<int>(ldb), 0.0f,
                                      c.data(), static_cast<int>(s.N));
                        }));
    }
    const double g_ours = flops / t_ours * 1e-9, g_blas = flops / t_blas * 1e-9;
    std::ostringstream row;
    row << "| " << s.name << " | " << s.M << " | " << s.N << " | " << s.K << " | "
        << (s.ta ? "A^T" : "A") << (s.tb ? " B^T" : " B") << " | " << fmt("%.1f", g_ours) << " | "
        << fmt("%.0f%%", 100.0 * g_ours / peak) << " | " << fmt("%.1f", g_blas) << " | "
        << fmt("%.0f%%", 100.0 * g_blas / peak) << " | " << fmt("%.2f", g_ours / g_blas) << " |\n";
    std::cout << row.str() << std::flush;
    os << row.str();
  }
  std::cout << "\n";
  emit(os.str(), f.get("--out"));
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "gemm: %s\n", e.what());
  return 1;
}
