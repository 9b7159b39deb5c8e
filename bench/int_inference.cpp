// Integer inference (issue 20), side by side in one run at one thread count:
//   1. the integer GEMM (qint conv 1x1 = u8 x s8 -> s32, VNNI and AVX2 paths) in GOP/s against
//      our SGEMM (kernels::sgemm) in GFLOP/s on the same M x N x K, and against the measured
//      int8 and FP32 peaks;
//   2. integer ResNet-18 (224x224, batch 8) and ResNet-20 (32x32, batch 128) at W8A8, W4A8 and
//      W2A4 (runtime::Executor on the graph quant::to_graph writes) against this library's FP32
//      forward of the same BN-folded model (nn::Model::forward under NoGrad).
// Random weights (Kaiming), min-max ranges from a random calibration batch: speed does not
// depend on the values. Rounds alternate the sides and each side keeps its best run over all
// rounds (best_time within a round), so a slow spell of a shared machine does not fall on one
// side only and the figures come from its quietest moments.
// Usage: int_inference [--threads 2] [--rounds 3] [--only gemm|models] [--out FILE]
#include <immintrin.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "brecq/autograd/tape.hpp"
#include "brecq/kernels/gemm.hpp"
#include "brecq/nn/models.hpp"
#include "brecq/quant/serialize.hpp"
#include "brecq/runtime/executor.hpp"
#include "common.hpp"

using namespace brecq;
namespace q = brecq::kernels::qint;

namespace {

constexpr int kChains = 12;  // independent accumulators: cover latency on two pipes

/// kIters vpdpbusd in kChains independent chains (a function of its own: a lambda would not
/// inherit the target attribute, which a build without -march=native needs).
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void vnni_chains(int64_t iters) {
  static volatile int32_t sink = 0;
  __m512i acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_epi32(i + sink);
  const __m512i a = _mm512_set1_epi32(0x01010101 + sink), b = _mm512_set1_epi32(0x02020202);
  for (int64_t it = 0; it < iters / kChains; ++it)
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
  __m512i s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm512_add_epi32(s, acc[i]);
  sink = sink + _mm512_reduce_add_epi32(s);
}

/// One core's vpdpbusd rate in int8 ops/s (64 multiply-adds = 128 ops per instruction).
double vnni_peak_one_core() {
  constexpr int64_t kIters = 2'000'000;
  const double t = bench::best_time([] { vnni_chains(kIters); }, 50);
  return 128.0 * static_cast<double>(kIters / kChains * kChains) / t;
}

/// kIters triples of the AVX2 tile's instruction mix in kChains chains; each chain feeds its
/// accumulator back into vpmaddubsw, so nothing is loop-invariant.
__attribute__((target("avx2,fma"))) void avx2_chains(int64_t iters) {
  static volatile int32_t sink = 0;
  __m256i acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_epi32(i + sink);
  const __m256i b = _mm256_set1_epi32(0x02020202), ones = _mm256_set1_epi16(1);
  for (int64_t it = 0; it < iters / kChains; ++it)
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i)
      acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(_mm256_maddubs_epi16(acc[i], b), ones));
  __m256i s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm256_add_epi32(s, acc[i]);
  alignas(32) int32_t v[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(v), s);
  sink = sink + v[0];
}

/// One core's rate of the AVX2 tile's instruction mix (vpmaddubsw, vpmaddwd, vpaddd: 32
/// multiply-adds = 64 ops per triple) in int8 ops/s.
double avx2_peak_one_core() {
  constexpr int64_t kIters = 2'000'000;
  const double t = bench::best_time([] { avx2_chains(kIters); }, 50);
  return 64.0 * static_cast<double>(kIters / kChains * kChains) / t;
}

std::vector<q::Isa> simd_isas() {
  std::vector<q::Isa> out;
  for (q::Isa i : {q::Isa::avx512_vnni, q::Isa::avx2})
    if (q::isa_supported(i)) out.push_back(i);
  return out;
}

struct GemmShape {
  std::string name;
  int64_t M, N, K;
};

/// Best time of f over rounds.
struct Best {
  double t = 1e30;
  void add(double v) { t = std::min(t, v); }
};

void gemm_section(std::ostringstream& os, int threads, int rounds, double fp_peak, double vnni_peak,
                  double avx2_peak) {
  const std::vector<GemmShape> shapes = {
      {"square 512", 512, 512, 512},
      {"square 1024", 1024, 1024, 1024},
      {"square 2048", 2048, 2048, 2048},
      {"resnet18 layer1 3x3 (im2col)", 25088, 64, 576},
      {"resnet18 layer3 3x3 (im2col)", 1568, 256, 2304},
      {"resnet18 layer4 1x1 proj", 392, 512, 256},
      {"resnet20 stage3 3x3 (im2col)", 8192, 64, 576},
  };
  const std::vector<q::Isa> isas = simd_isas();
  os << "\n## Integer GEMM against SGEMM\n\nC[M, N] = A[M, K] * B[K, N]: the integer side is "
        "qint::conv as a 1x1 conv over M pixels (u8 activations x s8 weights -> s32, the "
        "weights packed once beforehand; 4-bit levels); SGEMM is kernels::sgemm (row-major, "
        "no transposes). GOP/s and GFLOP/s count 2 M N K. Best run over "
     << rounds
     << " alternating rounds (the GEMM names mark the conv they stand for: \"im2col\" = the "
        "implicit K = kh kw cin).\n\n| shape | M x N x K | SGEMM "
        "GFLOP/s |";
  for (q::Isa isa : isas) os << " int " << q::isa_name(isa) << " GOP/s | x SGEMM | % int8 peak |";
  os << "\n|---|---|---|";
  for (size_t i = 0; i < isas.size(); ++i) os << "---|---|---|";
  os << "\n";
  for (const GemmShape& s : shapes) {
    std::vector<float> A(static_cast<size_t>(s.M * s.K), 0.5f),
        B(static_cast<size_t>(s.K * s.N), 0.25f), C(static_cast<size_t>(s.M * s.N));
    std::vector<uint8_t> x(static_cast<size_t>(s.M * s.K));
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<uint8_t>(i * 7 % 251);
    std::vector<uint8_t> lv(static_cast<size_t>((s.N * s.K + 1) / 2));
    for (size_t i = 0; i < lv.size(); ++i) lv[i] = static_cast<uint8_t>(i * 13 % 256);
    std::vector<int32_t> zw(static_cast<size_t>(s.N), 7);
    std::vector<int32_t> out(static_cast<size_t>(s.M * s.N));
    const q::ConvGeometry g{.in_channels = s.K, .out_channels = s.N};
    std::vector<q::PackedConv> packed;
    std::vector<q::AlignedBuffer<uint8_t>> ws;
    for (q::Isa isa : isas) {
      packed.push_back(q::pack_conv(g, {.levels = lv.data(), .bits = 4, .zero_points = zw.data()},
                                    {.isa = isa, .input_zero_point = 3}));
      ws.emplace_back(static_cast<size_t>(q::conv_workspace_bytes(packed.back(), threads)));
    }
    Best sg;
    std::vector<Best> ib(isas.size());
    for (int r = 0; r < rounds; ++r) {
      sg.add(bench::best_time(
          [&] { kernels::sgemm(s.M, s.N, s.K, A.data(), s.K, B.data(), s.N, C.data(), s.N); }));
      for (size_t i = 0; i < isas.size(); ++i)
        ib[i].add(bench::best_time([&] {
          q::conv(packed[i], {.input = x.data(),
                              .batch = 1,
                              .height = 1,
                              .width = s.M,
                              .out_s32 = out.data(),
                              .threads = threads,
                              .workspace = ws[i].data(),
                              .workspace_bytes = static_cast<int64_t>(ws[i].size())});
        }));
    }
    const double ops = 2.0 * static_cast<double>(s.M) * s.N * s.K;
    const double sgf = ops / sg.t * 1e-9;
    os << "| " << s.name << " | " << s.M << " x " << s.N << " x " << s.K << " | "
       << bench::fmt("%.1f", sgf) << " (" << bench::fmt("%.0f", 100.0 * sgf / fp_peak) << " %) |";
    for (size_t i = 0; i < isas.size(); ++i) {
      const double go = ops / ib[i].t * 1e-9;
      const double peak = isas[i] == q::Isa::avx512_vnni ? vnni_peak : avx2_peak;
      os << " " << bench::fmt("%.1f", go) << " | " << bench::fmt("%.2f", go / sgf) << "x | "
         << bench::fmt("%.0f", 100.0 * go / peak) << " % |";
    }
    os << "\n";
    std::cout << os.str().substr(os.str().rfind('\n', os.str().size() - 2) + 1) << std::flush;
  }
}

struct ModelCase {
  std::string name;
  int64_t batch, hw;
};
struct Bits {
  int w, a;
};

/// Multiply-adds of the convs and linear layers in one forward pass of graph g at h x w.
double graph_macs(const runtime::Graph& g, int64_t h, int64_t w) {
  double macs = 0.0;
  runtime::ActShape x{g.options.in_channels, h, w, false};
  for (const runtime::Block& b : g.blocks) {
    runtime::ActShape y = b.global_pool_before ? runtime::ActShape{x.c, 1, 1, true} : x;
    for (const runtime::Layer& l : b.layers) {
      y = runtime::layer_output_shape(l, y, "bench");
      macs += static_cast<double>(y.c * y.h * y.w) * static_cast<double>(l.weights_per_output());
    }
    runtime::ActShape s = x;
    for (const runtime::Layer& l : b.shortcut_layers) {
      s = runtime::layer_output_shape(l, s, "bench");
      macs += static_cast<double>(s.c * s.h * s.w) * static_cast<double>(l.weights_per_output());
    }
    x = runtime::block_output_shape(b, x, "bench");
  }
  return macs;
}

void model_section(std::ostringstream& os, int threads, int rounds) {
  const std::vector<ModelCase> cases = {{"resnet18", 8, 224}, {"resnet20_cifar", 128, 32}};
  const std::vector<Bits> bits = {{8, 8}, {4, 8}, {2, 4}};
  const std::vector<q::Isa> isas = simd_isas();
  os << "\n## Whole models: integer runtime against our FP32 forward\n\nFP32 = nn::Model::forward "
        "under NoGrad on the BN-folded model (the same network the integer graph holds); "
        "integer = runtime::Executor::run on quant::to_graph of a QuantModel (first and last "
        "layer 8-bit, 8-bit input point), from u8 NCHW input levels to float logits. Time per "
        "batch, best run over "
     << rounds
     << " alternating rounds; speed-up = FP32 time / integer time.\n\n| model | batch | FP32 ms | "
        "bits |";
  for (q::Isa isa : isas) os << " int " << q::isa_name(isa) << " ms | GOP/s | x FP32 |";
  os << "\n|---|---|---|---|";
  for (size_t i = 0; i < isas.size(); ++i) os << "---|---|---|";
  os << "\n";
  for (const ModelCase& c : cases) {
    Rng rng(1);
    nn::Model fp = nn::make_model(c.name);
    nn::init_kaiming(fp, rng);
    const Tensor x = Tensor::randn(Shape{c.batch, 3, c.hw, c.hw}, rng, 1.0f);
    const Tensor calib = x.narrow(0, 0, std::min<int64_t>(c.batch, 8));
    nn::Model folded = fp.clone();
    nn::fold_batchnorm(folded);
    struct Variant {
      Bits b;
      std::vector<std::unique_ptr<runtime::Executor>> ex;
      std::vector<Best> best;
      double gop = 0.0;
    };
    std::vector<Variant> vs;
    for (const Bits& b : bits) {
      quant::QuantModel qm(fp.clone(), {.w_bits = b.w,
                                        .a_bits = b.a,
                                        .w_init = quant::RangeInit::minmax,
                                        .a_init = quant::RangeInit::minmax});
      qm.init_activations(calib);
      const runtime::Graph g = quant::to_graph(qm);
      Variant v;
      v.b = b;
      v.gop = 2.0 * graph_macs(g, c.hw, c.hw) * static_cast<double>(c.batch) * 1e-9;
      for (q::Isa isa : isas)
        v.ex.push_back(
            std::make_unique<runtime::Executor>(g, runtime::ExecutorOptions{.max_batch = c.batch,
                                                                            .height = c.hw,
                                                                            .width = c.hw,
                                                                            .threads = threads,
                                                                            .isa = isa}));
      v.best.resize(isas.size());
      vs.push_back(std::move(v));
    }
    std::vector<uint8_t> levels(static_cast<size_t>(x.numel()));
    vs[0].ex[0]->quantize_input(x.data<float>(), c.batch, levels.data());
    std::vector<float> logits(static_cast<size_t>(c.batch * fp.num_classes));
    Best fpb;
    for (int r = 0; r < rounds; ++r) {
      fpb.add(bench::best_time([&] {
        NoGrad ng;
        (void)folded.forward(x);
      }));
      for (Variant& v : vs)
        for (size_t i = 0; i < isas.size(); ++i)
          v.best[i].add(
              bench::best_time([&] { v.ex[i]->run(levels.data(), c.batch, logits.data()); }));
    }
    for (const Variant& v : vs) {
      os << "| " << c.name << " | " << c.batch << " | " << bench::fmt("%.1f", fpb.t * 1e3) << " | W"
         << v.b.w << "A" << v.b.a << " |";
      for (size_t i = 0; i < isas.size(); ++i)
        os << " " << bench::fmt("%.1f", v.best[i].t * 1e3) << " | "
           << bench::fmt("%.0f", v.gop / v.best[i].t) << " | "
           << bench::fmt("%.2f", fpb.t / v.best[i].t) << "x |";
      os << "\n";
      std::cout << os.str().substr(os.str().rfind('\n', os.str().size() - 2) + 1) << std::flush;
    }
  }
}

}  // namespace

int main(int argc, char** argv) try {
  const auto f = bench::parse_flags(
      argc, argv, "int_inference",
      "Integer GEMM vs SGEMM vs the int8 peak, and integer ResNet-18 / ResNet-20 at W8A8, W4A8,\n"
      "W2A4 vs our FP32 forward, side by side.",
      {{.name = "--threads", .value_name = "N", .default_value = "2"},
       {.name = "--rounds", .value_name = "N", .default_value = "3"},
       {.name = "--only", .value_name = "gemm|models"},
       {.name = "--out", .value_name = "FILE", .default_value = "results/int_inference.md"}});
  const int threads = static_cast<int>(f.get_int("--threads", 1));
  const int rounds = static_cast<int>(f.get_int("--rounds", 1));
  check(threads >= 1 && rounds >= 1, "--threads and --rounds must be >= 1");
  const std::string only = f.get("--only");
  check(only.empty() || only == "gemm" || only == "models", "--only expects gemm or models, got '",
        only, "'");
  set_num_threads(threads);
  const double fp_peak = bench::measure_peak_gflops();
  const double vnni_peak =
      q::isa_supported(q::Isa::avx512_vnni) ? vnni_peak_one_core() * threads * 1e-9 : 0.0;
  const double avx2_peak =
      q::isa_supported(q::Isa::avx2) ? avx2_peak_one_core() * threads * 1e-9 : 0.0;
  std::ostringstream os;
  std::string command = "int_inference";
  for (int i = 1; i < argc; ++i) command += std::string(" ") + argv[i];
  os << "# Integer inference against FP32\n\nCommand: `" << command
     << "`. Machine: " << bench::machine() << ".\n\nThreads: " << threads
     << ". Best ISA: " << q::isa_name(q::best_isa())
     << ". Peaks (threads x one core's measured rate of an " << kChains << "-chain loop):\n\n"
     << "- FP32: " << bench::fmt("%.0f", fp_peak) << " GFLOP/s (vfmadd; = cores x 2 FMA pipes x "
     << "16 lanes x 2 flop x clock)\n";
  if (vnni_peak > 0)
    os << "- int8 VNNI: " << bench::fmt("%.0f", vnni_peak)
       << " GOP/s (vpdpbusd: 64 u8 x s8 multiply-adds = 128 ops per instruction; the nominal "
          "2 ports x 64 MACs x 2 ops x clock at the clock the FP32 loop implies, "
       << bench::fmt("%.2f", fp_peak / (threads * 2 * 16 * 2.0)) << " GHz, is "
       << bench::fmt("%.0f", 4.0 * fp_peak) << " GOP/s)\n";
  if (avx2_peak > 0)
    os << "- int8 AVX2: " << bench::fmt("%.0f", avx2_peak)
       << " GOP/s (vpmaddubsw + vpmaddwd + vpaddd: 32 multiply-adds per triple)\n";
  std::cout << os.str() << std::flush;
  if (only.empty() || only == "gemm")
    gemm_section(os, threads, rounds, fp_peak, vnni_peak, avx2_peak);
  if (only.empty() || only == "models") model_section(os, threads, rounds);
  bench::emit(os.str(), f.get("--out"));
  return 0;
} catch (const std::exception& e) {
  std::cerr << "int_inference: " << e.what() << "\n";
  return 1;
}
