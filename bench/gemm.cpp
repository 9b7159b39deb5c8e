// SGEMM throughput: brecq's simd::sgemm (the kernels::sgemm fast path) against OpenBLAS
// cblas_sgemm and, when built with it, oneDNN's dnnl_sgemm, in the same run, on square sizes and
// on the GEMMs that convolution layers reduce to.
// Usage: gemm [--threads N] [--openblas-core NAME] [--rounds N] [--only SUBSTRING] [--out FILE]
#include "brecq/kernels/gemm.hpp"

#include <cblas.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "common.hpp"

#ifdef BRECQ_BENCH_ONEDNN
#include <oneapi/dnnl/dnnl.h>
#endif

// Not declared by every cblas.h that OpenBLAS ships.
extern "C" char* openblas_get_corename(void);
extern "C" char* openblas_get_config(void);
extern "C" void openblas_set_num_threads(int);

namespace {

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

/// OpenBLAS picks its kernels from OPENBLAS_CORETYPE when the library is loaded, that is before
/// main, so choosing a core means running this program again with the variable set.
void choose_openblas_core(const std::string& core, char** argv) {
  if (core.empty()) return;
  const char* now = std::getenv("OPENBLAS_CORETYPE");
  if (now && core == now) return;
  setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
  execv("/proc/self/exe", argv);
  brecq::check(false,
               "--openblas-core: could not re-run /proc/self/exe with OPENBLAS_CORETYPE=", core);
}

/// Best time of f() as best_time measures it, but on one thread in CPU time of the calling thread
/// (all three libraries then run on it): on a shared machine, a product longer than a scheduler
/// time slice is otherwise never timed whole, and wall time measures the machine's load.
template <class F>
double best_seconds(F&& f, bool cpu_time) {
  if (!cpu_time) return brecq::bench::best_time(f);
  const auto now = [] {
    timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
  };
  double t0 = now();
  f();
  const double first = std::max(now() - t0, 1e-7);
  const int reps = std::clamp(static_cast<int>(0.25 / first), 3, 50);
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    t0 = now();
    f();
    best = std::min(best, now() - t0);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) try {
  using namespace brecq::bench;
  const auto f = parse_flags(
      argc, argv, "gemm", "SGEMM GFLOP/s: ours, OpenBLAS's and oneDNN's.",
      {{.name = "--threads",
        .value_name = "N",
        .help = "threads for all three libraries (default: OMP_NUM_THREADS, else all cores)"},
       {.name = "--openblas-core",
        .value_name = "NAME",
        .help = "OpenBLAS kernels to use, e.g. SkylakeX, Haswell (sets OPENBLAS_CORETYPE and "
                "re-runs; default: OpenBLAS's own detection, which may pick a slow core on a CPU "
                "newer than it)"},
       {.name = "--rounds",
        .value_name = "N",
        .help = "alternating rounds per shape, each library keeping its best",
        .default_value = "5"},
       {.name = "--only",
        .value_name = "SUBSTRING",
        .help = "keep the shapes whose name contains SUBSTRING"},
       {.name = "--out",
        .value_name = "FILE",
        .help = "table",
        .default_value = "results/gemm.md"}});
  choose_openblas_core(f.get("--openblas-core"), argv);
  if (f.has("--threads")) brecq::set_num_threads(static_cast<int>(f.get_int("--threads", 1)));
  const int threads = brecq::num_threads();
  openblas_set_num_threads(threads);  // oneDNN runs on OpenMP, as we do
  // On a shared 2-core VM a single round's ratio moves by +-0.15; five keep the best of each side
  // close to what a quiet machine gives.
  const int rounds = static_cast<int>(f.get_int("--rounds", 1));
  const std::string core = openblas_get_corename();
  const std::string wanted = f.get("--openblas-core");
  if (!wanted.empty() &&
      !std::equal(wanted.begin(), wanted.end(), core.begin(), core.end(),
                  [](char a, char b) { return std::tolower(a) == std::tolower(b); }))
    std::cerr << "gemm: OpenBLAS runs its " << core << " kernels, not " << wanted
              << " (a name it does not know, or one this CPU cannot run)\n";
#ifdef BRECQ_BENCH_ONEDNN
  constexpr bool kOneDnn = true;
#else
  constexpr bool kOneDnn = false;
  std::cerr << "gemm: built without oneDNN (libdnnl-dev not found): its columns stay empty\n";
#endif

  std::vector<Shape> shapes;
  for (int64_t n : {64, 128, 256, 512, 1024, 2048}) shapes.push_back({"square", n, n, n});
  for (int64_t n : {1024, 2048}) {
    shapes.push_back({"square A^T", n, n, n, true, false});
    shapes.push_back({"square B^T", n, n, n, false, true});
  }
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
  std::string command = "gemm";
  for (int i = 1; i < argc; ++i) command += std::string(" ") + argv[i];
  std::ostringstream os;
  os << "# SGEMM: brecq simd::sgemm vs OpenBLAS cblas_sgemm vs oneDNN dnnl_sgemm\n\n"
     << "Command: `" << command << "`. Machine: " << machine() << ".\n\n"
     << "Threads: " << threads << " for each library (OpenMP for brecq and oneDNN, "
     << "openblas_set_num_threads for OpenBLAS). " << openblas_get_config() << ", core " << core
     << " (OPENBLAS_CORETYPE=" << (std::getenv("OPENBLAS_CORETYPE") ?: "unset") << "). "
     << (kOneDnn ? "oneDNN " : "oneDNN: not available (built without libdnnl-dev).");
#ifdef BRECQ_BENCH_ONEDNN
  const dnnl_version_t* v = dnnl_version();
  os << v->major << "." << v->minor << "." << v->patch << " ("
     << (v->cpu_runtime == DNNL_RUNTIME_OMP ? std::string("OpenMP")
                                            : "CPU runtime " + std::to_string(v->cpu_runtime))
     << ").";
#endif
  os << "\n"
     << "FP32 peak: " << fmt("%.1f", peak) << " GFLOP/s = " << threads << " cores x 2 FMA pipes x "
     << xsimd::batch<float>::size << " lanes x 2 flop x "
     << fmt("%.2f", peak / (threads * 4.0 * xsimd::batch<float>::size))
     << " GHz, the clock measured with an FMA loop on one core.\n"
     << "Each figure: best of " << rounds
     << " rounds (the libraries alternating) of best-of->=3 runs after a warm-up, in "
     << (threads == 1 ? "CPU time of the calling thread, which all three run on (time "
                        "slices lost to other jobs then stay out of the figures)"
                      : "wall time")
     << ". Row-major "
        "C = op(A) op(B); A^T / B^T mark transposed operands. Ratio: brecq over the faster of "
        "OpenBLAS and oneDNN.\n\n"
     << "| shape | M | N | K | op | brecq GFLOP/s | % peak | OpenBLAS (" << core
     << ") | % peak | oneDNN | % peak | brecq / best |\n"
     << "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|\n";
  std::cout << os.str() << std::flush;
  for (const Shape& s : shapes) {
    const int64_t lda = s.ta ? s.M : s.K, ldb = s.tb ? s.K : s.N;
    auto a = filled(s.M * s.K, 0.5f), b = filled(s.K * s.N, 0.25f), c = filled(s.M * s.N, 0.0f);
    const double flops =
        2.0 * static_cast<double>(s.M) * static_cast<double>(s.N) * static_cast<double>(s.K);
    // Alternate the libraries over a few rounds so that all see the same machine load.
    double t_ours = 1e30, t_blas = 1e30, t_dnnl = 1e30;
    for (int round = 0; round < rounds; ++round) {
      settle();
      t_ours = std::min(t_ours, best_seconds(
                                    [&] {
                                      brecq::kernels::sgemm(s.M, s.N, s.K, a.data(), lda, b.data(),
                                                            ldb, c.data(), s.N,
                                                            {.trans_a = s.ta, .trans_b = s.tb});
                                    },
                                    threads == 1));
      t_blas = std::min(
          t_blas, best_seconds(
                      [&] {
                        cblas_sgemm(CblasRowMajor, s.ta ? CblasTrans : CblasNoTrans,
                                    s.tb ? CblasTrans : CblasNoTrans, static_cast<int>(s.M),
                                    static_cast<int>(s.N), static_cast<int>(s.K), 1.0f, a.data(),
                                    static_cast<int>(lda), b.data(), static_cast<int>(ldb), 0.0f,
                                    c.data(), static_cast<int>(s.N));
                      },
                      threads == 1));
#ifdef BRECQ_BENCH_ONEDNN
      settle();
      t_dnnl = std::min(t_dnnl, best_seconds(
                                    [&] {
                                      const dnnl_status_t st = dnnl_sgemm(
                                          s.ta ? 'T' : 'N', s.tb ? 'T' : 'N', s.M, s.N, s.K, 1.0f,
                                          a.data(), lda, b.data(), ldb, 0.0f, c.data(), s.N);
                                      brecq::check(st == dnnl_success, "dnnl_sgemm failed: status ",
                                                   static_cast<int>(st));
                                    },
                                    threads == 1));
#endif
    }
    const double g_ours = flops / t_ours * 1e-9, g_blas = flops / t_blas * 1e-9;
    const double g_dnnl = kOneDnn ? flops / t_dnnl * 1e-9 : 0.0;
    const auto cell = [&](double g) {
      return g > 0 ? fmt("%.1f", g) + " | " + fmt("%.0f%%", 100.0 * g / peak)
                   : std::string("- | -");
    };
    std::ostringstream row;
    row << "| " << s.name << " | " << s.M << " | " << s.N << " | " << s.K << " | "
        << (s.ta ? "A^T" : "A") << (s.tb ? " B^T" : " B") << " | " << cell(g_ours) << " | "
        << cell(g_blas) << " | " << cell(g_dnnl) << " | "
        << fmt("%.2f", g_ours / std::max(g_blas, g_dnnl)) << " |\n";
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
