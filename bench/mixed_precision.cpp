// Mixed precision against uniform precision on the pretrained ResNet-20 (../shared), A4: the
// sensitivity table is measured once, the genetic search finds an allocation for each size
// budget, and BRECQ (block-wise, the faithful recipe) quantizes the model with uniform W2, W3 and
// W4 weights and with each allocation, for every seed. Top-1 on the 10,000 test images of the
// model as the quantized file holds it (conv biases on the int32 grid). Writes a Markdown table,
// a JSON file and an SVG plot of top-1 against weight size.
//
//   mixed_precision [--iters-w N] [--iters-a N] [--seeds LIST] [--budgets LIST] [--bits LIST]
//                   [--sensitivity nearest|reconstruction] [--sensitivity-iters N]
//                   [--shared DIR] [--out results/mixed_precision_bench]
#include <cmath>
#include <map>

#include "brecq/driver/driver.hpp"
#include "brecq/mixed/allocation.hpp"
#include "brecq/quant/brecq.hpp"
#include "common.hpp"

using namespace brecq;

namespace {

/// One configuration: uniform weights (bits > 0) or a searched allocation.
struct Config {
  std::string name;
  std::map<std::string, int> layer_bits;  ///< empty: uniform `uniform_bits`
  int uniform_bits = 0;
  double size_kib = 0, gbops = 0, sensitivity = 0, search_seconds = 0;
};

struct Run {
  std::string config;
  uint64_t seed = 0;
  double top1 = 0, seconds = 0;
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string item; std::getline(in, item, ',');) out.push_back(item);
  return out;
}

double parse_number(const std::string& flag, const std::string& item, double lo, double hi) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(item, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  check(used == item.size() && v >= lo && v <= hi, flag, ": expected numbers in [", lo, ", ", hi,
        "] separated by commas, got '", item, "'");
  return v;
}

double mean_top1(const std::vector<Run>& runs, const std::string& config) {
  double sum = 0;
  int n = 0;
  for (const Run& r : runs)
    if (r.config == config) sum += r.top1, ++n;
  return n ? sum / n : 0;
}

/// Top-1 against size: uniform configurations joined by a line, mixed ones as diamonds; each
/// point is the mean over seeds, with each seed's result as a small dot.
std::string svg_plot(const std::vector<Config>& configs, const std::vector<Run>& runs) {
  const int W = 720, H = 420, left = 60, right = 170, top = 36, bottom = 370;
  double x_lo = 1e30, x_hi = 0, y_lo = 100, y_hi = 0;
  for (const Config& c : configs)
    x_lo = std::min(x_lo, c.size_kib), x_hi = std::max(x_hi, c.size_kib);
  for (const Run& r : runs) y_lo = std::min(y_lo, r.top1), y_hi = std::max(y_hi, r.top1);
  x_lo = std::floor(x_lo / 10) * 10 - 5, x_hi = std::ceil(x_hi / 10) * 10 + 5;
  y_lo = std::floor(y_lo - 0.5), y_hi = std::ceil(y_hi + 0.5);
  auto X = [&](double v) { return left + (v - x_lo) / (x_hi - x_lo) * (W - left - right); };
  auto Y = [&](double v) { return bottom - (v - y_lo) / (y_hi - y_lo) * (bottom - top); };
  std::ostringstream s;
  s << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << H
    << "' font-family='sans-serif' font-size='11'>\n<text x='" << left
    << "' y='18' font-size='13'>ResNet-20 A4 after BRECQ: top-1 (%) against weight size "
       "(KiB)</text>\n";
  for (int t = 0; t <= 5; ++t) {
    const double v = y_lo + (y_hi - y_lo) * t / 5, u = x_lo + (x_hi - x_lo) * t / 5;
    s << "<line x1='" << left << "' x2='" << W - right << "' y1='" << Y(v) << "' y2='" << Y(v)
      << "' stroke='#ddd'/><text x='8' y='" << Y(v) + 4 << "'>" << bench::fmt("%.1f", v)
      << "</text>\n<text x='" << X(u) - 12 << "' y='" << bottom + 16 << "'>"
      << bench::fmt("%.0f", u) << "</text>\n";
  }
  std::string line;
  for (const Config& c : configs)
    if (c.layer_bits.empty())
      line += (line.empty() ? "M" : " L") + bench::fmt("%.1f", X(c.size_kib)) + " " +
              bench::fmt("%.1f", Y(mean_top1(runs, c.name)));
  s << "<path d='" << line << "' fill='none' stroke='#4c72b0' stroke-width='1.5'/>\n";
  for (const Config& c : configs) {
    const bool uniform = c.layer_bits.empty();
    const char* color = uniform ? "#4c72b0" : "#dd8452";
    const double x = X(c.size_kib), y = Y(mean_top1(runs, c.name));
    for (const Run& r : runs)
      if (r.config == c.name)
        s << "<circle cx='" << x << "' cy='" << Y(r.top1) << "' r='2' fill='" << color
          << "' opacity='0.5'/>\n";
    if (uniform)
      s << "<circle cx='" << x << "' cy='" << y << "' r='5' fill='" << color << "'/>\n";
    else
      s << "<path d='M" << x << " " << y - 6 << " L" << x + 6 << " " << y << " L" << x << " "
        << y + 6 << " L" << x - 6 << " " << y << " Z' fill='" << color << "'/>\n";
    s << "<text x='" << x + 8 << "' y='" << y - 6 << "' font-size='10'>" << c.name << " "
      << bench::fmt("%.2f", mean_top1(runs, c.name)) << "</text>\n";
  }
  s << "<circle cx='" << W - right + 20 << "' cy='50' r='5' fill='#4c72b0'/><text x='"
    << W - right + 30 << "' y='54'>uniform</text>\n<path d='M" << W - right + 20 << " 64 L"
    << W - right + 26 << " 70 L" << W - right + 20 << " 76 L" << W - right + 14
    << " 70 Z' fill='#dd8452'/><text x='" << W - right + 30 << "' y='74'>mixed (searched)</text>\n"
    << "</svg>\n";
  return s.str();
}

}  // namespace

int main(int argc, char** argv) try {
  const auto f = bench::parse_flags(
      argc, argv, "mixed_precision",
      "Top-1 against weight size of BRECQ with uniform and mixed-precision weights (A4).",
      {{.name = "--iters-w", .value_name = "N", .default_value = "2000"},
       {.name = "--iters-a", .value_name = "N", .default_value = "500"},
       {.name = "--seeds", .value_name = "LIST", .default_value = "1029,7"},
       {.name = "--budgets",
        .value_name = "LIST",
        .help = "size budgets, as the average bits of uniform weights (2 < B < 8)",
        .default_value = "2.5,3,3.5"},
       {.name = "--uniform", .value_name = "LIST", .default_value = "2,3,4"},
       {.name = "--bits", .value_name = "LIST", .default_value = "2,4,8"},
       {.name = "--sensitivity",
        .value_name = "nearest|reconstruction",
        .default_value = "nearest"},
       {.name = "--sensitivity-loss", .value_name = "mse|fisher", .default_value = "mse"},
       {.name = "--sensitivity-iters", .value_name = "N", .default_value = "300"},
       {.name = "--images", .value_name = "N", .default_value = "256"},
       {.name = "--shared", .value_name = "DIR", .default_value = "../shared"},
       {.name = "--out",
        .value_name = "PREFIX",
        .default_value = "results/mixed_precision_bench"}});
  quant::ReconstructionSettings rs;
  rs.iters_w = f.get_int("--iters-w", 1);
  rs.iters_a = f.get_int("--iters-a", 1);
  rs.progress = nullptr;
  std::vector<uint64_t> seeds;
  for (const std::string& s : split(f.get("--seeds")))
    seeds.push_back(static_cast<uint64_t>(parse_number("--seeds", s, 0, 4294967295.0)));
  std::vector<double> budgets;
  for (const std::string& s : split(f.get("--budgets")))
    budgets.push_back(parse_number("--budgets", s, 2.0, 8.0));
  std::vector<int> uniform, bits;
  for (const std::string& s : split(f.get("--uniform")))
    uniform.push_back(static_cast<int>(parse_number("--uniform", s, 2, 8)));
  for (const std::string& s : split(f.get("--bits")))
    bits.push_back(static_cast<int>(parse_number("--bits", s, 2, 8)));
  std::sort(bits.begin(), bits.end());
  check(std::find(bits.begin(), bits.end(), 8) != bits.end(),
        "--bits: 8 must be a candidate (the first and last layers), got ", f.get("--bits"));
  const mixed::SensitivityOptions so{
      .bits = bits,
      .images = f.get_int("--images", 1),
      .measure = mixed::parse_sensitivity_measure(f.get("--sensitivity")),
      .loss = quant::parse_recon_loss(f.get("--sensitivity-loss")),
      .recon_iters = f.get_int("--sensitivity-iters", 1),
      .seed = seeds.front(),
      .progress = nullptr};

  const std::string shared = f.get("--shared");
  const nn::Model model =
      driver::load_model("resnet20_cifar", shared + "/models/resnet20_cifar10.safetensors").model;
  const Batch test =
      load_image_folder(shared + "/data/cifar10/test", {.preprocess = ImagePreprocess::cifar()});
  auto calib_for = [&](uint64_t seed, int64_t limit) {
    return load_image_folder(shared + "/data/cifar10/calib",
                             {.preprocess = ImagePreprocess::cifar(),
                              .limit = limit,
                              .shuffle = true,
                              .seed = seed})
        .images;
  };

  // The table and the searches (what `brecq mixed` does), timed.
  const double s0 = bench::now_s();
  const mixed::SensitivityTable table =
      mixed::measure_sensitivity(model, calib_for(seeds.front(), so.images), so);
  const double sensitivity_seconds = bench::now_s() - s0;
  const mixed::CostModel size_model{.kind = mixed::CostKind::size};
  const mixed::CostModel bops_model{.kind = mixed::CostKind::bops, .act_bits = 4};
  auto cost_of = [&](const mixed::CostModel& c, const std::map<std::string, int>& lb, int all) {
    double v = 0;
    for (size_t g = 0; g < table.groups.size(); ++g)
      for (size_t k = 0; k < table.groups[g].layers.size(); ++k) {
        const bool edge = g == 0 || g + 1 == table.groups.size();
        const int b = lb.empty() ? (edge ? 8 : all) : lb.at(table.groups[g].layers[k]);
        v += mixed::layer_cost(table, g, k, b, c);
      }
    return v;
  };
  std::vector<Config> configs;
  for (int b : uniform) {
    Config c{"W" + std::to_string(b), {}, b};
    c.size_kib = cost_of(size_model, {}, b) / 8192.0;
    c.gbops = cost_of(bops_model, {}, b) / 1e9;
    configs.push_back(c);
  }
  const mixed::AllocationProblem problem = mixed::make_problem(table, size_model, 8);
  for (double B : budgets) {
    const int lo = static_cast<int>(std::floor(B)), hi = std::min(8, lo + 1);
    const double frac = B - lo;
    const double budget = (1 - frac) * mixed::uniform_cost(table, size_model, lo, 8) +
                          frac * mixed::uniform_cost(table, size_model, hi, 8);
    const double t0 = bench::now_s();
    const mixed::SearchResult r =
        mixed::genetic_search(problem.groups, budget, {.seed = seeds.front()});
    Config c{"mixed@W" + bench::fmt("%g", B), mixed::layer_bits(table, problem, r.best), 0};
    c.search_seconds = bench::now_s() - t0;
    c.size_kib = cost_of(size_model, c.layer_bits, 0) / 8192.0;
    c.gbops = cost_of(bops_model, c.layer_bits, 0) / 1e9;
    c.sensitivity = r.best.loss;
    std::printf("%-12s %8.2f KiB  sensitivity %.4g  search %.3f s\n", c.name.c_str(), c.size_kib,
                c.sensitivity, c.search_seconds);
    configs.push_back(c);
  }
  std::printf("sensitivity (%s, %s) measured in %.1f s\n", mixed::measure_name(so.measure),
              f.get("--bits").c_str(), sensitivity_seconds);
  std::fflush(stdout);

  std::vector<Run> runs;
  for (uint64_t seed : seeds) {
    const Tensor calib = calib_for(seed, 1024);
    for (const Config& c : configs) {
      quant::QuantSettings qs{.w_bits = c.layer_bits.empty() ? c.uniform_bits : bits.front(),
                              .a_bits = 4,
                              .layer_w_bits = c.layer_bits};
      quant::QuantModel qm(model, qs);
      quant::ReconstructionSettings s = rs;
      s.seed = seed;
      const double t0 = bench::now_s();
      quant::run_brecq("block", qm, calib, s);
      const double seconds = bench::now_s() - t0;
      quant::snap_biases(qm);  // what the quantized file holds
      const double top1 = nn::evaluate(driver::quantized_forward(qm, {}), test).top1_percent();
      std::printf("%-12s seed %-6llu top-1 %6.2f %%  %7.1f s\n", c.name.c_str(),
                  static_cast<unsigned long long>(seed), top1, seconds);
      std::fflush(stdout);
      runs.push_back({c.name, seed, top1, seconds});
    }
  }

  std::ostringstream md, js;
  md << "# Mixed precision against uniform precision, ResNet-20 A4 (bench/mixed_precision)\n\n"
     << "BRECQ block-wise, " << rs.iters_w << " + " << rs.iters_a
     << " iterations per block, threads " << num_threads() << ", seeds " << f.get("--seeds")
     << "; sensitivity: " << mixed::measure_name(so.measure);
  if (so.measure == mixed::SensitivityMeasure::reconstruction)
    md << " (" << so.recon_iters << " AdaRound iterations per entry)";
  md << ", loss " << f.get("--sensitivity-loss") << ", candidates {" << f.get("--bits") << "}, "
     << so.images << " images, measured in " << bench::fmt("%.1f", sensitivity_seconds)
     << " s; first and last layers 8-bit.\n\n"
     << "| weights | size KiB | GBOPs | summed sensitivity | search s |";
  for (uint64_t seed : seeds) md << " seed " << seed << " |";
  md << " mean | BRECQ s per run |\n|---|---|---|---|---|";
  for (size_t i = 0; i < seeds.size(); ++i) md << "---|";
  md << "---|---|\n";
  js << "{\"sensitivity\": \"" << mixed::measure_name(so.measure)
     << "\", \"sensitivity_seconds\": " << bench::fmt("%.2f", sensitivity_seconds)
     << ", \"configs\": [\n";
  for (size_t i = 0; i < configs.size(); ++i) {
    const Config& c = configs[i];
    double seconds = 0;
    md << "| " << c.name << " | " << bench::fmt("%.2f", c.size_kib) << " | "
       << bench::fmt("%.3f", c.gbops) << " | "
       << (c.layer_bits.empty() ? "" : bench::fmt("%.4g", c.sensitivity)) << " | "
       << (c.layer_bits.empty() ? "" : bench::fmt("%.3f", c.search_seconds)) << " |";
    js << "  {\"name\": \"" << c.name << "\", \"size_kib\": " << bench::fmt("%.3f", c.size_kib)
       << ", \"gbops\": " << bench::fmt("%.4f", c.gbops) << ", \"runs\": [";
    bool first = true;
    for (const Run& r : runs)
      if (r.config == c.name) {
        md << " " << bench::fmt("%.2f", r.top1) << " |";
        seconds += r.seconds / static_cast<double>(seeds.size());
        js << (first ? "" : ", ") << "{\"seed\": " << r.seed
           << ", \"top1\": " << bench::fmt("%.2f", r.top1)
           << ", \"seconds\": " << bench::fmt("%.1f", r.seconds) << "}";
        first = false;
      }
    md << " " << bench::fmt("%.2f", mean_top1(runs, c.name)) << " | " << bench::fmt("%.0f", seconds)
       << " |\n";
    js << "]";
    if (!c.layer_bits.empty()) {
      js << ", \"layers\": {";
      bool first_layer = true;
      for (const auto& [name, b] : c.layer_bits)
        js << (first_layer ? "" : ", ") << "\"" << name << "\": " << b, first_layer = false;
      js << "}";
    }
    js << "}" << (i + 1 < configs.size() ? ",\n" : "\n");
  }
  js << "]}\n";
  std::cout << md.str();
  bench::emit(md.str(), f.get("--out") + ".md");
  bench::emit(js.str(), f.get("--out") + ".json");
  bench::emit(svg_plot(configs, runs), f.get("--out") + ".svg");
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "mixed_precision: %s\n", e.what());
  return 1;
}
