// BRECQ on the pretrained CIFAR-10 ResNet-20 from ../shared: wall time of each unit, the achieved
// GFLOP/s of its reconstruction loop and the final top-1, at the official defaults unless flags
// say otherwise. Compare the total with the official PyTorch code run on the same machine
// (../shared/reference/brecq-official, see bench/README.md).
//
//   brecq_resnet20 [--iters-w N] [--iters-a N] [--w-bits N] [--a-bits N] [--loss mse|fisher]
//                  [--granularity G] [--seed N] [--shared DIR] [--out FILE] [--recipe brecq|qdrop]
#include "brecq/driver/driver.hpp"
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
      argc, argv, "brecq_resnet20",
      "BRECQ on the CIFAR-10 ResNet-20: time and GFLOP/s of each unit, final top-1.",
      {{.name = "--iters-w", .value_name = "N", .default_value = "20000"},
       {.name = "--iters-a", .value_name = "N", .default_value = "5000"},
       {.name = "--w-bits", .value_name = "N", .default_value = "2"},
       {.name = "--a-bits", .value_name = "N", .default_value = "4"},
       {.name = "--loss", .value_name = "mse|fisher", .default_value = "mse"},
       {.name = "--granularity", .value_name = "G", .default_value = "block"},
       {.name = "--seed", .value_name = "N", .default_value = "1029"},
       {.name = "--shared", .value_name = "DIR", .default_value = "../shared"},
       {.name = "--out", .value_name = "FILE", .default_value = "results/brecq_resnet20.md"},
       {.name = "--recipe", .value_name = "brecq|qdrop", .default_value = "brecq"}});
  const std::string shared = f.get("--shared");
  const std::string weights = shared + "/models/resnet20_cifar10.safetensors";
  if (!std::filesystem::exists(weights)) {
    std::printf(
        "SKIPPED: %s not found (run from the repository root with ../shared beside it, or pass "
        "--shared)\n",
        weights.c_str());
    return 0;
  }
  const nn::Model fp = driver::load_model("resnet20_cifar", weights).model;
  quant::ReconstructionSettings s;
  s.iters_w = f.get_int("--iters-w", 0);
  s.iters_a = f.get_int("--iters-a", 0);
  s.seed = static_cast<uint64_t>(f.get_int("--seed", 0));
  s.loss = quant::parse_recon_loss(f.get("--loss"));
  s.recipe = quant::parse_recipe(f.get("--recipe"));
  if (s.recipe == quant::Recipe::qdrop) s.qdrop = 0.5f;
  s.progress = nullptr;
  const quant::QuantSettings qs{.w_bits = static_cast<int>(f.get_int("--w-bits", 0)),
                                .a_bits = static_cast<int>(f.get_int("--a-bits", 0))};
  const Batch calib =
      load_image_folder(shared + "/data/cifar10/calib",
                        {.preprocess = ImagePreprocess::cifar(), .shuffle = true, .seed = s.seed});
  const LabeledImages test(shared + "/data/cifar10/test", ImagePreprocess::cifar());  // streamed

  quant::QuantModel qm(fp, qs);
  const std::vector<double> macs = layer_macs(qm.model);
  const double t0 = bench::now_s();
  const quant::BrecqReport rep = quant::run_brecq(f.get("--granularity"), qm, calib.images, s);
  const double total = bench::now_s() - t0;
  const double top1 = driver::evaluate(driver::quantized_forward(qm), test).top1_percent();

  // FLOPs of one reconstruction iteration: forward (2 per MAC) + input gradient (weight pass and
  // activation pass) + weight gradient (weight pass only); the unit input needs no gradient.
  const auto units = quant::units_for(f.get("--granularity"), qm.model);
  std::ostringstream os;
  os << "# BRECQ on ResNet-20 (CIFAR-10), " << f.get("--granularity") << "-wise W" << qs.w_bits
     << "A" << qs.a_bits << ", loss " << f.get("--loss") << ", recipe " << f.get("--recipe")
     << ", seed " << s.seed << "\n\n"
     << "threads " << num_threads() << ", weight iterations " << s.iters_w
     << ", activation iterations " << s.iters_a << ", batch " << s.batch
     << "\n\n| unit | pass | seconds | ms/iteration | GFLOP/s |\n|---|---|---|---|---|\n";
  double flops_total = 0;
  for (const quant::UnitReport& r : rep.units) {
    double fwd = 0, first = 0;
    for (const auto& u : units) {
      if (u.name != r.unit) continue;
      for (const nn::Layer* l : u.layers) fwd += macs[static_cast<size_t>(l->id)];
      // the layers that take the unit input (whose input gradient is not needed)
      if (u.layer_cut) first = fwd;
      for (size_t b = u.first_block; b < u.last_block && !u.layer_cut; ++b)
        first += macs[static_cast<size_t>(qm.model.blocks[b].layers.front().id)];
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
  bench::emit(os.str(), f.get("--out"));
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "brecq_resnet20: %s\n", e.what());
  return 1;
}
