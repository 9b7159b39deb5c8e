// Convolution throughput of the kernels::conv2d_* fast path (simd::), per layer and pass: forward,
// input gradient and weight gradient, for the ResNet-20 (CIFAR, batch 32) block convs and a few
// ResNet-18 / MobileNetV2 (224x224) layers including depthwise ones.
// Writes a Markdown table (--out, default results/conv.md) and, beside it, a JSON file with each
// layer's geometry and times, which bench/side_by_side.py reads to time PyTorch on the same layers.
// Usage: conv [--out results/conv.md]
#include "brecq/kernels/conv.hpp"

#include <algorithm>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "common.hpp"

namespace {

using brecq::kernels::Conv2dGeometry;

struct Layer {
  std::string name;
  Conv2dGeometry g;
};

Conv2dGeometry conv(int64_t batch, int64_t cin, int64_t hw, int64_t cout, int64_t k, int64_t stride,
                    int64_t groups = 1) {
  return {.batch = batch,
          .in_channels = cin,
          .in_h = hw,
          .in_w = hw,
          .out_channels = cout,
          .kernel_h = k,
          .kernel_w = k,
          .stride_h = stride,
          .stride_w = stride,
          .pad_h = k / 2,
          .pad_w = k / 2,
          .groups = groups};
}

}  // namespace

int main(int argc, char** argv) try {
  using namespace brecq::bench;
  const auto f = parse_flags(argc, argv, "conv",
                             "Per-layer convolution times (and a JSON file beside the table).",
                             {{.name = "--out",
                               .value_name = "FILE",
                               .help = "table",
                               .default_value = "results/conv.md"}});
  const std::vector<Layer> layers = {
      {"R20 stem 3->16 32x32", conv(32, 3, 32, 16, 3, 1)},
      {"R20 stage1 16->16 32x32", conv(32, 16, 32, 16, 3, 1)},
      {"R20 down 16->32 /2", conv(32, 16, 32, 32, 3, 2)},
      {"R20 stage2 32->32 16x16", conv(32, 32, 16, 32, 3, 1)},
      {"R20 down 32->64 /2", conv(32, 32, 16, 64, 3, 2)},
      {"R20 stage3 64->64 8x8", conv(32, 64, 8, 64, 3, 1)},
      {"R20 shortcut 1x1 16->32 /2", conv(32, 16, 32, 32, 1, 2)},
      {"R18 conv1 7x7/2 3->64", conv(8, 3, 224, 64, 7, 2)},
      {"R18 layer1 64->64 56x56", conv(8, 64, 56, 64, 3, 1)},
      {"R18 layer2 128->128 28x28", conv(8, 128, 28, 128, 3, 1)},
      {"R18 layer3 256->256 14x14", conv(8, 256, 14, 256, 3, 1)},
      {"R18 layer4 512->512 7x7", conv(8, 512, 7, 512, 3, 1)},
      {"R18 down 1x1 64->128 /2", conv(8, 64, 56, 128, 1, 2)},
      {"MBv2 dw 3x3 32 112x112", conv(8, 32, 112, 32, 3, 1, 32)},
      {"MBv2 dw 3x3/2 96 112x112", conv(8, 96, 112, 96, 3, 2, 96)},
      {"MBv2 dw 3x3 144 56x56", conv(8, 144, 56, 144, 3, 1, 144)},
      {"MBv2 dw 3x3 384 14x14", conv(8, 384, 14, 384, 3, 1, 384)},
      {"MBv2 dw 3x3 960 7x7", conv(8, 960, 7, 960, 3, 1, 960)},
      {"MBv2 pw 1x1 32->16 112x112", conv(8, 32, 112, 16, 1, 1)},
      {"MBv2 pw 1x1 144->24 56x56", conv(8, 144, 56, 24, 1, 1)},
      {"MBv2 pw 1x1 960->320 7x7", conv(8, 960, 7, 320, 1, 1)},
  };

  const double peak = measure_peak_gflops();
  std::ostringstream os, js;
  js << "{\"threads\": " << brecq::num_threads() << ", \"peak_gflops\": " << fmt("%.1f", peak)
     << ", \"layers\": [\n";
  os << "# Convolution: kernels::conv2d_* (simd) per layer\n\n"
     << "Threads: " << brecq::num_threads()
     << ". FP32 peak (threads x one core's FMA-loop rate): " << fmt("%.1f", peak)
     << " GFLOP/s. Times are the median of 7 samples after a warm-up (a sample: back-to-back "
     << "calls lasting about 10 ms); "
     << "GFLOP/s count 2 * N * C_out * OH * OW * (C_in / groups) * KH * KW per pass "
     << "(bias terms excluded; weight gradient without bias gradient).\n\n"
     << "| layer | N | fwd ms | fwd GFLOP/s | bwd-in ms | bwd-in GFLOP/s | bwd-w ms | bwd-w "
        "GFLOP/s | fwd % peak |\n"
     << "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  std::cout << os.str() << std::flush;
  for (const Layer& l : layers) {
    const Conv2dGeometry& g = l.g;
    const int64_t xs = g.batch * g.in_channels * g.in_h * g.in_w;
    const int64_t ys = g.batch * g.out_channels * g.out_h() * g.out_w();
    const int64_t ws = g.out_channels * g.in_per_group() * g.kernel_h * g.kernel_w;
    std::vector<float> x(xs, 0.5f), dx(xs), y(ys), dy(ys, 0.25f), w(ws, 0.1f), dw(ws),
        b(g.out_channels, 0.0f);
    const double flops = 2.0 * static_cast<double>(ys) *
                         static_cast<double>(g.in_per_group() * g.kernel_h * g.kernel_w);
    const double tf = median_time(
        [&] { brecq::kernels::conv2d_forward(g, x.data(), w.data(), b.data(), y.data()); });
    const double ti = median_time(
        [&] { brecq::kernels::conv2d_backward_input(g, dy.data(), w.data(), dx.data()); });
    const double tw = median_time([&] {
      brecq::kernels::conv2d_backward_weight(g, x.data(), dy.data(), dw.data(), nullptr);
    });
    js << (&l == &layers.front() ? "" : ",\n") << "  {\"name\": \"" << l.name
       << "\", \"batch\": " << g.batch << ", \"in_channels\": " << g.in_channels
       << ", \"hw\": " << g.in_h << ", \"out_channels\": " << g.out_channels
       << ", \"kernel\": " << g.kernel_h << ", \"stride\": " << g.stride_h
       << ", \"pad\": " << g.pad_h << ", \"groups\": " << g.groups
       << ", \"gflop\": " << fmt("%.6f", flops * 1e-9)
       << ", \"forward_ms\": " << fmt("%.4f", tf * 1e3)
       << ", \"backward_input_ms\": " << fmt("%.4f", ti * 1e3)
       << ", \"backward_weight_ms\": " << fmt("%.4f", tw * 1e3) << "}";
    std::ostringstream row;
    row << "| " << l.name << " | " << g.batch << " | " << fmt("%.3f", tf * 1e3) << " | "
        << fmt("%.1f", flops / tf * 1e-9) << " | " << fmt("%.3f", ti * 1e3) << " | "
        << fmt("%.1f", flops / ti * 1e-9) << " | " << fmt("%.3f", tw * 1e3) << " | "
        << fmt("%.1f", flops / tw * 1e-9) << " | "
        << fmt("%.0f%%", 100.0 * flops / tf * 1e-9 / peak) << " |\n";
    std::cout << row.str() << std::flush;
    os << row.str();
  }
  std::cout << "\n";
  js << "\n]}\n";
  const std::string out = f.get("--out");
  emit(os.str(), out);
  emit(js.str(), std::filesystem::path(out).replace_extension(".json").string());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "conv: %s\n", e.what());
  return 1;
}
