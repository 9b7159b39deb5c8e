// BRECQ on the pretrained CIFAR-10 ResNet-20 from ../shared: wall time of each unit, the achieved
// GFLOP/s of its reconstruction loop and the final top-1, at the official defaults unless flags
// say otherwise. Compare the total with the official PyTorch code run on the same machine
// (../shared/reference/brecq-official, see bench/README.md).
//
//   brecq_resnet20 [--iters-w N] [--iters-a N] [--w-bits N] [--a-bits N] [--loss mse|fisher]
//                  [--granularity G] [--seed N] [--shared DIR] [--out FILE] [--recipe brecq|qdrop]
#include <cstdlib>
#include <map>

#include "brecq/io/dataset.hpp"
#include "brecq/nn/evaluate.hpp"
#include "brecq/nn/load.hpp"
#include "brecq/quant/brecq.hpp"
#include "common.hpp"

using namespace brecq;

namespace {

/// Multiply-accumulates per image of each layer (by id), from one forward pass.
std::vector<double> layer_macs(const nn::Model& m) {
  std::vector<double> macs(m.layers().size(), 0.0);
  nn::ForwardHooks h;
  h.layer_output = [&](const nn::Layer& l, const Tensor&, const Tensor& out) {
    const double spatial = out.ndim() == 4 ? static_cast<double>(out.dim(2) * out.dim(3)) : 1.0;
    macs[static_cast<size_t>(l.id)] = static_cast<double>(l.weight.numel()) * spatial;
    return out;
  };
  NoGrad ng;
  m.forward(Tensor::zeros(Shape{1, m.in_channels, 32, 32}), h);
  return macs;
}

}  // namespace

int main(int argc, char** argv) try {
  const auto f = bench::parse_flags(
      argc, argv,
      {{"--iters-w", "20000"},
       {"--iters-a", "5000"},
       {"--w-bits", "2"},
       {"--a-bits", "4"},
       {"--loss", "mse"},
       {"--granularity", "block"},
       {"--seed", "1029"},
       {"--shared", "../shared"},
       {"--out", "results/brecq_resnet20.md"},
       {"--recipe", "brecq"}},
      "brecq_resnet20 [--iters-w N] [--iters-a N] [--w-bits N] [--a-bits N] [--loss mse|fisher] "
      "[--granularity G] [--seed N] [--shared DIR] [--out FILE] [--recipe brecq|qdrop]");
  const std::string shared = f.at("--shared");
  const std::string weights = shared + "/models/resnet20_cifar10.safetensors";
  if (!std::filesystem::exists(weights)) {
    std::printf(
        "SKIPPED: %s not found (run from the repository root with ../shared beside it, or pass "
        "--shared)\n",
        weights.c_str());
    return 0;
  }
  nn::Model fp = nn::make_model("resnet20_cifar");
  nn::load_weights(fp, weights);
  quant::ReconstructionSettings s;
  s.iters_w = bench::flag_int(f, "--iters-w");
  s.iters_a = bench::flag_int(f, "--iters-a");
  s.seed = static_cast<uint64_t>(bench::flag_int(f, "--seed"));
  s.loss = quant::parse_recon_loss(f.at("--loss"));
  s.recipe = quant::parse_recipe(f.at("--recipe"));
  if (s.recipe == quant::Recipe::qdrop) s.qdrop = 0.5f;
  s.progress = false;
  const quant::QuantSettings qs{.w_bits = static_cast<int>(bench::flag_int(f, "--w-bits")),
                                .a_bits = static_cast<int>(bench::flag_int(f, "--a-bits"))};
  const Batch calib =
      load_image_folder(shared + "/data/cifar10/calib",
                        {.preprocess = ImagePreprocess::cifar(), .shuffle = true, .seed = s.seed});
  const Batch test =
      load_image_folder(shared + "/data/cifar10/test", {.preprocess = ImagePreprocess::cifar()});

  quant::QuantModel qm(fp, qs);
  const std::vector<double> macs = layer_macs(qm.model);
  const double t0 = bench::now_s();
  const quant::BrecqReport rep = quant::run_brecq(f.at("--granularity"), qm, calib.images, s);
  const double total = bench::now_s() - t0;
  const double top1 =
      nn::evaluate([&](const Tensor& x) { return qm.forward(x); }, test).top1_percent();

  // FLOPs of one reconstruction iteration: forward (2 per MAC) + input gradient (weight pass and
  // activation pass) + weight gradient (weight pass only); the unit input needs no gradient.
  const auto units = quant::units_for(f.at("--granularity"), qm.model);
  std::ostringstream os;
  os << "# BRECQ on ResNet-20 (CIFAR-10), " << f.at("--granularity") << "-wise W" << qs.w_bits
     << "A" << qs.a_bits << ", loss " << f.at("--loss") << ", recipe " << f.at("--recipe")
     << ", seed " << s.seed << "\n\n"
     << "threads " << num_threads() << ", weight iterations " << s.iters_w
     << ", activation iterations " << s.iters_a << ", batch " << s.batch
     << "\n\n| unit | pass | seconds | ms/iteration | GFLOP/s |\n|---|---|---|---|---|\n";
  double flops_total = 0;
  for (const quant::UnitReport& r : rep.units) {
    double fwd = 0, first = 0;
    for (const auto& u : units) {
      if (u.name != r.unit) continue;
      if (u.layer) {
        fwd = first = macs[static_cast<size_t>(u.layer->id)];
        continue;
      }
      for (size_t b = u.first_block; b < u.last_block; ++b) {
        const nn::Block& blk = qm.model.blocks[b];
        for (const nn::Layer& l : blk.layers) fwd += macs[static_cast<size_t>(l.id)];
        for (const nn::Layer& l : blk.shortcut_layers) fwd += macs[static_cast<size_t>(l.id)];
        first += macs[static_cast<size_t>(blk.layers.front().id)];
      }
    }
    const bool weights_pass = r.pass == "weights";
    const double per_iter =
        2.0 * static_cast<double>(s.batch) * (weights_pass ? 3 * fwd - first : 2 * fwd - first);
    const double flops = per_iter * static_cast<double>(r.iterations);
    flops_total += flops;
    os << "| " << r.unit << " | " << r.pass << " | " << bench::fmt("%.1f", r.seconds) << " | "
       << bench::fmt("%.3f", 1000 * r.seconds / std::max<int64_t>(1, r.iterations)) << " | "
       << bench::fmt("%.1f", flops / r.seconds / 1e9) << " |\n";
  }
  os << "\nweight pass " << bench::fmt("%.1f", rep.weight_seconds) << " s, activation pass "
     << bench::fmt("%.1f", rep.act_seconds) << " s, total " << bench::fmt("%.1f", total)
     << " s (reconstruction incl. caching; evaluation excluded); "
     << bench::fmt("%.1f", flops_total / 1e12) << " TFLOP at "
     << bench::fmt("%.1f", flops_total / total / 1e9) << " GFLOP/s overall\n\n"
     << "top-1 on the 10,000 CIFAR-10 test images: " << bench::fmt("%.2f", top1) << " %\n";
  std::cout << os.str();
  bench::emit(os.str(), f.at("--out"));
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "brecq_resnet20: %s\n", e.what());
  return 1;
}
