// BRECQ on the project's Fashion-MNIST MobileNetV2 (models/, trained by train_fashion_mnist): FP,
// round-to-nearest and block reconstruction at W4A4 and W2A4 (first and last layer 8-bit) for
// the faithful recipe (brecq) and the qdrop recipe, with the architecture's preset (rounding
// regulariser 0.1) applied unless --lambda is given. 1,024 calibration images from the training
// set, the 10,000 test images. Writes a Markdown table with each run's time.
//
//   fashion_mobilenet_v2 [--model-file F] [--iters-w N] [--iters-a N] [--seed N]
//                        [--bits 4,2] [--recipes brecq,qdrop] [--lambda X]
//                        [--out results/fashion_mobilenet_v2]
#include "brecq/driver/driver.hpp"
#include "brecq/io/idx.hpp"
#include "brecq/quant/compare.hpp"
#include "common.hpp"

using namespace brecq;

namespace {

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) out.push_back(item);
  return out;
}

}  // namespace

int main(int argc, char** argv) try {
  const quant::ReconstructionSettings paper;
  cli::Args f = bench::parse_flags(
      argc, argv, "fashion_mobilenet_v2",
      "BRECQ W4A4 / W2A4 on the project's Fashion-MNIST MobileNetV2, faithful and qdrop recipes.",
      {{.name = "--model-file",
        .value_name = "FILE",
        .default_value = "models/fashion_mnist_mobilenet_v2_w035.safetensors"},
       {.name = "--data",
        .value_name = "DIR",
        .help = "Fashion-MNIST IDX files",
        .default_value = std::string(FashionMnist::default_dir)},
       {.name = "--iters-w", .value_name = "N", .default_value = std::to_string(paper.iters_w)},
       {.name = "--iters-a", .value_name = "N", .default_value = std::to_string(paper.iters_a)},
       {.name = "--seed", .value_name = "N", .default_value = "1029"},
       {.name = "--bits", .value_name = "LIST", .help = "weight bits", .default_value = "4,2"},
       {.name = "--recipes", .value_name = "LIST", .default_value = "brecq,qdrop"},
       {.name = "--lambda",
        .value_name = "X",
        .help = "rounding regulariser weight (default: the architecture's preset)"},
       {.name = "--out", .value_name = "PREFIX", .default_value = "results/fashion_mobilenet_v2"}});
  const std::string model_file = f.get_file("--model-file");
  const driver::LoadedModel loaded = driver::load_model("mobilenet_v2", model_file);
  const nn::Model& model = loaded.model;
  quant::ReconstructionSettings base;
  base.iters_w = f.get_int("--iters-w", 0);
  base.iters_a = f.get_int("--iters-a", 0);
  base.seed = static_cast<uint64_t>(f.get_int("--seed", 0));
  if (f.has("--lambda")) base.lambda = f.get_float("--lambda", 0.0f, 1e3f);
  const std::string preset = quant::apply_preset(base, model.arch, {.lambda = f.has("--lambda")});
  std::vector<int> bits;
  for (const std::string& b : split_list(f.get("--bits"))) {
    check(b == "2" || b == "3" || b == "4" || b == "5" || b == "6" || b == "7" || b == "8",
          "--bits expects a comma-separated list of weight bit-widths 2..8, got '", f.get("--bits"),
          "'");
    bits.push_back(std::stoi(b));
  }
  const std::vector<std::string> recipes = split_list(f.get("--recipes"));
  for (const std::string& r : recipes) quant::parse_recipe(r);  // refuses an unknown name
  check(!recipes.empty() && !bits.empty(), "--bits and --recipes expect at least one entry");

  const MnistParams norm{.normalize = true};  // as train_fashion_mnist trains
  const FashionMnist train = FashionMnist::load(MnistSplit::train, norm, f.get_dir("--data"));
  const FashionMnist test = FashionMnist::load(MnistSplit::test, norm, f.get_dir("--data"));
  const Tensor calib = calibration_subset(train, 1024, base.seed).images;

  std::ostringstream md;
  md << "# BRECQ on the Fashion-MNIST MobileNetV2 (" << model_file << ")\n\n"
     << bench::machine() << "; threads " << num_threads() << "\n\nblock reconstruction, "
     << base.iters_w << " AdaRound + " << base.iters_a
     << " activation-step iterations per block, 1,024 calibration images from the training set "
        "(seed "
     << base.seed << "), first and last layer 8-bit, 10,000 test images; "
     << (preset.empty() ? "no preset" : preset) << "\n\n"
     << "| setting | recipe | FP | round-to-nearest | BRECQ | seconds "
        "|\n|---|---|---:|---:|---:|---:|\n";
  std::printf("%s", md.str().c_str());
  std::fflush(stdout);
  for (int w : bits)
    for (const std::string& recipe : recipes) {
      quant::CompareParams p;
      p.quant = {.w_bits = w, .a_bits = 4};
      p.recon = base;
      p.recon.recipe = quant::parse_recipe(recipe);
      p.recon.qdrop = p.recon.recipe == quant::Recipe::qdrop ? 0.5f : 0.0f;
      const quant::CompareResult r = quant::compare_brecq(model, calib, test, p);
      std::ostringstream row;
      row << "| W" << w << "A4 | " << recipe << " | " << bench::fmt("%.2f", r.fp.top1_percent())
          << " | " << bench::fmt("%.2f", r.nearest.top1_percent()) << " | "
          << bench::fmt("%.2f", r.brecq.top1_percent()) << " | " << bench::fmt("%.0f", r.seconds)
          << " |\n";
      std::printf("%s", row.str().c_str());
      std::fflush(stdout);
      md << row.str();
    }
  bench::emit(md.str(), f.get("--out") + ".md");
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "fashion_mobilenet_v2: %s\n", e.what());
  return 1;
}
