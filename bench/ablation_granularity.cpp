// Granularity ablation: layer-, block-, stage- and network-wise reconstruction with identical
// settings and seeds, at W2 weight-only and W2A4, on the pretrained ResNet-20 (../shared) and on
// the project's Fashion-MNIST ResNet-18 (models/). One W2A4 run per granularity gives both figures:
// its weight pass is the W2 weight-only run (as the official code reports it). Writes a Markdown
// table, a JSON file and an SVG bar chart of top-1 per granularity, with the time of each pass.
//
//   ablation_granularity [--iters-w N] [--iters-a N] [--seed N] [--shared DIR]
//                        [--models resnet20,fashion] [--fashion-model FILE]
//                        [--out results/ablation_granularity]
#include <cstdlib>
#include <map>

#include "brecq/driver/driver.hpp"
#include "brecq/io/idx.hpp"
#include "brecq/quant/brecq.hpp"
#include "common.hpp"

using namespace brecq;

namespace {

struct Task {
  std::string name;
  nn::Model model;
  Tensor calib;
  Batch test;
};

struct Result {
  std::string model, setting, granularity;
  double top1 = 0, seconds = 0;
};

std::string svg_chart(const std::vector<Result>& rs, const std::vector<std::string>& groups) {
  const std::vector<std::string> gran{"layer", "block", "stage", "network"};
  const char* colors[] = {"#4c72b0", "#dd8452", "#55a868", "#c44e52"};
  const int W = 760, H = 340, left = 50, bottom = 300, top = 30;
  double lo = 100, hi = 0;
  for (const Result& r : rs) lo = std::min(lo, r.top1), hi = std::max(hi, r.top1);
  lo = std::max(0.0, std::floor(lo - 2)), hi = std::min(100.0, std::ceil(hi + 1));
  auto y = [&](double v) { return bottom - (v - lo) / (hi - lo) * (bottom - top); };
  std::ostringstream s;
  s << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << H
    << "' font-family='sans-serif' font-size='11'>\n"
    << "<text x='" << left
    << "' y='16' font-size='13'>BRECQ top-1 (%) by reconstruction granularity</text>\n";
  for (int t = 0; t <= 4; ++t) {
    const double v = lo + (hi - lo) * t / 4;
    s << "<line x1='" << left << "' x2='" << W - 10 << "' y1='" << y(v) << "' y2='" << y(v)
      << "' stroke='#ddd'/>"
      << "<text x='5' y='" << y(v) + 4 << "'>" << bench::fmt("%.1f", v) << "</text>\n";
  }
  const double gw = static_cast<double>(W - left - 20) / static_cast<double>(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) {
    for (size_t k = 0; k < gran.size(); ++k)
      for (const Result& r : rs)
        if (r.model + " " + r.setting == groups[g] && r.granularity == gran[k]) {
          const double x = left + g * gw + 10 + k * (gw - 20) / 4;
          s << "<rect x='" << x << "' y='" << y(r.top1) << "' width='" << (gw - 20) / 4 - 4
            << "' height='" << bottom - y(r.top1) << "' fill='" << colors[k] << "'/>"
            << "<text x='" << x << "' y='" << y(r.top1) - 3 << "' font-size='9'>"
            << bench::fmt("%.1f", r.top1) << "</text>\n";
        }
    s << "<text x='" << left + g * gw + 10 << "' y='" << bottom + 16 << "'>" << groups[g]
      << "</text>\n";
  }
  for (size_t k = 0; k < gran.size(); ++k)
    s << "<rect x='" << left + 10 + 90 * k << "' y='" << H - 18 << "' width='10' height='10' fill='"
      << colors[k] << "'/><text x='" << left + 24 + 90 * k << "' y='" << H - 9 << "'>" << gran[k]
      << "</text>\n";
  s << "</svg>\n";
  return s.str();
}

}  // namespace

int main(int argc, char** argv) try {
  const auto f = bench::parse_flags(
      argc, argv, "ablation_granularity",
      "W2 and W2A4 top-1 of BRECQ at each granularity (layer, block, stage, network).",
      {{.name = "--iters-w", .value_name = "N", .default_value = "20000"},
       {.name = "--iters-a", .value_name = "N", .default_value = "5000"},
       {.name = "--seed", .value_name = "N", .default_value = "1029"},
       {.name = "--shared", .value_name = "DIR", .default_value = "../shared"},
       {.name = "--fashion-model",
        .value_name = "FILE",
        .default_value = "models/fashion_mnist_resnet18_w16.safetensors"},
       {.name = "--models", .value_name = "LIST", .default_value = "resnet20,fashion"},
       {.name = "--out", .value_name = "PREFIX", .default_value = "results/ablation_granularity"}});
  quant::ReconstructionSettings s;
  s.iters_w = f.get_int("--iters-w", 0);
  s.iters_a = f.get_int("--iters-a", 0);
  s.seed = static_cast<uint64_t>(f.get_int("--seed", 0));
  s.progress = nullptr;
  check(s.iters_w > 0 && s.iters_a > 0, "--iters-w and --iters-a must be > 0");

  std::vector<std::string> models;
  std::istringstream list(f.get("--models"));
  for (std::string m; std::getline(list, m, ',');) {
    check(m == "resnet20" || m == "fashion",
          "--models expects a comma-separated list of resnet20 and fashion, got '",
          f.get("--models"), "'");
    models.push_back(m);
  }
  auto wanted = [&](const std::string& m) {
    return std::find(models.begin(), models.end(), m) != models.end();
  };

  // A missing file fails with its path named (load_weights / SafetensorsFile / load_image_folder).
  std::vector<Task> tasks;
  if (wanted("resnet20")) {
    Task t{"ResNet-20 CIFAR-10",
           driver::load_model("resnet20_cifar",
                              f.get("--shared") + "/models/resnet20_cifar10.safetensors")
               .model,
           Tensor(), Batch{}};
    t.calib =
        load_image_folder(f.get("--shared") + "/data/cifar10/calib",
                          {.preprocess = ImagePreprocess::cifar(), .shuffle = true, .seed = s.seed})
            .images;
    t.test = load_image_folder(f.get("--shared") + "/data/cifar10/test",
                               {.preprocess = ImagePreprocess::cifar()});
    tasks.push_back(std::move(t));
  }
  if (wanted("fashion")) {
    Task t{"ResNet-18 Fashion-MNIST",
           driver::load_model("resnet18_cifar", f.get("--fashion-model")).model, Tensor(), Batch{}};
    const FashionMnist train =
        FashionMnist::load(MnistSplit::train, {.normalize = true});  // as trained
    const FashionMnist test = FashionMnist::load(MnistSplit::test, {.normalize = true});
    std::vector<int64_t> pick = seeded_permutation(train.size(), s.seed);
    pick.resize(1024);
    t.calib = gather(train, pick).images;
    std::vector<int64_t> all(static_cast<size_t>(test.size()));
    for (int64_t i = 0; i < test.size(); ++i) all[static_cast<size_t>(i)] = i;
    t.test = gather(test, all);
    tasks.push_back(std::move(t));
  }

  std::vector<Result> results;
  std::vector<std::string> groups;
  for (Task& t : tasks) {
    groups.push_back(t.name + " W2");
    groups.push_back(t.name + " W2A4");
    for (const char* g : {"layer", "block", "stage", "network"}) {
      quant::QuantModel qm(t.model, {.w_bits = 2, .a_bits = 4});
      const size_t num_units = quant::units_for(g, qm.model).size();
      auto top1 = [&](const quant::ForwardMode& mode) {
        return nn::evaluate(driver::quantized_forward(qm, mode), t.test).top1_percent();
      };
      Result w2{t.name, "W2", g, 0, 0};
      const double t0 = bench::now_s();
      double eval_seconds = 0;
      const quant::BrecqRunOptions o{.on_unit_done = [&](const std::string& pass, size_t done) {
        if (pass != "weights" || done != num_units) return;
        const double e0 = bench::now_s();
        w2.seconds = e0 - t0;
        w2.top1 = top1(quant::ForwardMode::weights_only());  // the W2 weight-only model
        eval_seconds = bench::now_s() - e0;
      }};
      quant::run_brecq(g, qm, t.calib, s, o);
      const double run_seconds = bench::now_s() - t0 - eval_seconds;  // before the final evaluation
      Result w2a4{t.name, "W2A4", g, top1({}), run_seconds};
      for (const Result& r : {w2, w2a4}) {
        std::printf("%-26s %-5s %-8s top-1 %6.2f %%  %7.1f s\n", t.name.c_str(), r.setting.c_str(),
                    g, r.top1, r.seconds);
        results.push_back(r);
      }
      std::fflush(stdout);
    }
  }

  std::ostringstream md, js;
  md << "# Granularity ablation (W2 weight-only and W2A4)\n\nweight iterations " << s.iters_w
     << ", activation iterations " << s.iters_a << ", seed " << s.seed << ", threads "
     << num_threads()
     << "; W2 is the weight pass of the W2A4 run (its time: the weight pass), W2A4 the whole run"
     << "\n\n| model | setting | layer | block | stage | network |\n|---|---|---|---|---|---|\n";
  js << "[\n";
  for (const std::string& g : groups) {
    md << "| " << g.substr(0, g.rfind(' ')) << " | " << g.substr(g.rfind(' ') + 1);
    for (const Result& r : results)
      if (r.model + " " + r.setting == g)
        md << " | " << bench::fmt("%.2f", r.top1) << " (" << bench::fmt("%.0f", r.seconds) << " s)";
    md << " |\n";
  }
  for (size_t i = 0; i < results.size(); ++i)
    js << "  {\"model\": \"" << results[i].model << "\", \"setting\": \"" << results[i].setting
       << "\", \"granularity\": \"" << results[i].granularity
       << "\", \"top1\": " << bench::fmt("%.2f", results[i].top1)
       << ", \"seconds\": " << bench::fmt("%.1f", results[i].seconds) << "}"
       << (i + 1 < results.size() ? ",\n" : "\n");
  js << "]\n";
  std::cout << md.str();
  bench::emit(md.str(), f.get("--out") + ".md");
  bench::emit(js.str(), f.get("--out") + ".json");
  bench::emit(svg_chart(results, groups), f.get("--out") + ".svg");
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "ablation_granularity: %s\n", e.what());
  return 1;
}
