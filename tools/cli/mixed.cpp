// brecq mixed: the BRECQ paper's mixed precision. Measures every block's sensitivity for every
// assignment of bit-widths to its layers, searches the allocation with the least summed
// sensitivity under a size or BOPs budget (genetic algorithm), and writes per-layer bits that
// `brecq quantize --bits-config` applies.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "args.hpp"
#include "brecq/driver/driver.hpp"
#include "brecq/mixed/allocation.hpp"
#include "quant_flags.hpp"

namespace {

using namespace brecq;

std::vector<int> parse_bits_list(const cli::Args& args, const std::string& flag) {
  std::vector<int> out;
  const std::string v = args.get(flag);
  size_t at = 0;
  while (at <= v.size()) {
    const size_t comma = std::min(v.find(',', at), v.size());
    const std::string item = v.substr(at, comma - at);
    const bool digit = item.size() == 1 && item[0] >= '2' && item[0] <= '8';
    if (!digit)
      args.fail("flag " + flag + " expects bit-widths 2..8 separated by commas, got '" + v + "'");
    const int b = item[0] - '0';
    if (std::find(out.begin(), out.end(), b) != out.end())
      args.fail("flag " + flag + " names " + item + " twice in '" + v + "'");
    out.push_back(b);
    at = comma + 1;
  }
  std::sort(out.begin(), out.end());
  return out;
}

int run(const std::vector<std::string>& argv) {
  cli::Args args(
      "mixed",
      "Mixed-precision bit allocation (BRECQ paper, section 3.4): the reconstruction loss of\n"
      "every block for every assignment of bit-widths to its layers (round-to-nearest after\n"
      "the range search, or a short AdaRound reconstruction of the block; activations in FP),\n"
      "then a genetic search for the allocation with the least summed loss under one budget.\n"
      "Writes per-layer bits for `brecq quantize --bits-config`. The sensitivity table is\n"
      "cached (OUT.sensitivity.json) after every block.",
      cli::fp_model_flags(
          {{.name = "--out",
            .value_name = "FILE",
            .help = "bits file to write (JSON)",
            .required = true},
           {.name = "--size-budget-kb", .value_name = "X", .help = "weight storage budget in KiB"},
           {.name = "--size-budget-uniform",
            .value_name = "B",
            .help = "weight storage budget: that of uniform B-bit weights (first/last as below)"},
           {.name = "--bops-budget-g",
            .value_name = "X",
            .help = "bit-operations budget, in 1e9 per image"},
           {.name = "--latency-budget-ms",
            .value_name = "X",
            .help = "integer-runtime latency budget per batch, from per-layer times measured here"},
           {.name = "--latency-batch",
            .value_name = "N",
            .help = "batch of the latency model",
            .default_value = "8"},
           {.name = "--bits",
            .value_name = "LIST",
            .help = "candidate bit-widths",
            .default_value = "2,4,8"},
           {.name = "--a-bits",
            .value_name = "N",
            .help = "activation bits the BOPs count (the stem's input: 8)",
            .default_value = "4"},
           {.name = "--first-last-bits",
            .value_name = "N",
            .help = "bits of the stem and the classifier, or 0 to search them too",
            .default_value = "8"},
           {.name = "--images",
            .value_name = "N",
            .help = "calibration images measured on",
            .default_value = "256"},
           {.name = "--sensitivity",
            .value_name = "nearest|reconstruction",
            .help = "how each entry's weights are rounded: to nearest, or by a short AdaRound "
                    "reconstruction of the block alone",
            .default_value = "nearest"},
           {.name = "--sensitivity-loss",
            .value_name = "mse|fisher",
            .help = "each entry's loss: the block output's squared error, or weighted by the "
                    "squared task-loss gradient (diagonal Fisher)",
            .default_value = "mse"},
           {.name = "--sensitivity-iters",
            .value_name = "N",
            .help = "AdaRound iterations per entry (--sensitivity reconstruction)",
            .default_value = "300"},
           {.name = "--population",
            .value_name = "N",
            .help = "genetic search population",
            .default_value = "64"},
           {.name = "--generations",
            .value_name = "N",
            .help = "genetic search generations",
            .default_value = "150"},
           {.name = "--seed",
            .value_name = "N",
            .help = "calibration shuffle and search seed",
            .default_value = "1029"},
           {.name = "--cache",
            .value_name = "FILE",
            .help = "sensitivity cache (default: OUT.sensitivity.json)"},
           cli::preprocess_flag(),
           cli::no_progress_flag()}));
  if (!args.parse(argv)) return 0;
  const std::string model_name = args.get_choice("--model", nn::model_names());
  const std::string weights = args.get_file("--weights");
  const std::string calib_dir = args.get_dir("--calib");
  const std::string out = args.get_output("--out");
  const int budgets = args.has("--size-budget-kb") + args.has("--size-budget-uniform") +
                      args.has("--bops-budget-g") + args.has("--latency-budget-ms");
  if (budgets != 1)
    args.fail(
        "expected exactly one budget: --size-budget-kb, --size-budget-uniform, --bops-budget-g "
        "or --latency-budget-ms, got " +
        std::to_string(budgets));
  const int64_t latency_batch = args.get_int("--latency-batch", 1, 4096);
  const std::vector<int> bits = parse_bits_list(args, "--bits");
  const int a_bits = static_cast<int>(args.get_int("--a-bits", 2, 8));
  const int first_last = static_cast<int>(args.get_int("--first-last-bits", 0, 8));
  if (first_last > 0 && std::find(bits.begin(), bits.end(), first_last) == bits.end())
    args.fail("flag --first-last-bits " + std::to_string(first_last) + " is not among --bits " +
              args.get("--bits"));
  const int64_t images = args.get_int("--images", 1);
  const uint64_t seed = static_cast<uint64_t>(args.get_int("--seed", 0));
  mixed::GeneticParams gp{
      .population = static_cast<int>(args.get_int("--population", 8, 100000)),
      .generations = static_cast<int>(args.get_int("--generations", 0, 1000000)),
      .seed = seed};
  const std::string cache = args.has("--cache") ? args.get("--cache") : out + ".sensitivity.json";
  const ImagePreprocess pre = cli::image_preprocess(args, model_name);

  const driver::LoadedModel fp = driver::load_model(model_name, weights);
  const Batch calib = load_image_folder(
      calib_dir, {.preprocess = pre, .limit = images, .shuffle = true, .seed = seed});
  mixed::SensitivityOptions so{
      .bits = bits,
      .images = images,
      .measure = mixed::parse_sensitivity_measure(
          args.get_choice("--sensitivity", {"nearest", "reconstruction"})),
      .loss = quant::parse_recon_loss(args.get_choice("--sensitivity-loss", {"mse", "fisher"})),
      .recon_iters = args.get_int("--sensitivity-iters", 1, 1000000),
      .seed = seed};
  if (args.has("--no-progress")) so.progress = nullptr;
  const auto t0 = std::chrono::steady_clock::now();
  const mixed::SensitivityTable table =
      mixed::measure_sensitivity(fp.model, calib.images, so, cache);
  const auto t1 = std::chrono::steady_clock::now();

  const bool bops = args.has("--bops-budget-g"), latency = args.has("--latency-budget-ms");
  const mixed::LatencyOptions lo{
      .batch = latency_batch, .threads = num_threads(), .a_bits = a_bits};
  mixed::LatencyTable lt;
  if (latency) {
    const auto l0 = std::chrono::steady_clock::now();
    lt = mixed::measure_latency(fp.model, table, calib.images.dim(2), calib.images.dim(3), lo);
    std::printf(
        "latency table: %zu groups x %zu bit-widths measured in %.1f s (batch %lld, %d "
        "threads, %s)\n",
        lt.seconds.size(), bits.size(),
        std::chrono::duration<double>(std::chrono::steady_clock::now() - l0).count(),
        static_cast<long long>(latency_batch), num_threads(),
        kernels::qint::isa_name(kernels::qint::best_isa()));
  }
  const mixed::CostModel cm{.kind = latency ? mixed::CostKind::latency
                                    : bops  ? mixed::CostKind::bops
                                            : mixed::CostKind::size,
                            .act_bits = a_bits,
                            .latency = &lt};
  double budget = 0;
  if (args.has("--size-budget-kb"))
    budget = 8192.0 * args.get_float("--size-budget-kb", 0.0f, 1e9f);
  if (args.has("--size-budget-uniform"))
    budget = mixed::uniform_cost(
        table, cm, static_cast<int>(args.get_int("--size-budget-uniform", 2, 8)), first_last);
  if (bops) budget = 1e9 * args.get_float("--bops-budget-g", 0.0f, 1e9f);
  if (latency) budget = 1e-3 * args.get_float("--latency-budget-ms", 0.0f, 1e9f);
  const mixed::CostModel size_model{.kind = mixed::CostKind::size};
  const mixed::CostModel bops_model{.kind = mixed::CostKind::bops, .act_bits = a_bits};
  auto describe = [&](double size_bits, double bop) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "%9.2f KiB %9.4f GBOPs", size_bits / 8192.0, bop / 1e9);
    return std::string(buf);
  };
  std::printf(
      "brecq mixed: model=%s weights=%s images=%lld bits=%s cost=%s budget=%.6g "
      "first_last=%d a_bits=%d seed=%llu\n",
      model_name.c_str(), weights.c_str(), static_cast<long long>(calib.images.dim(0)),
      args.get("--bits").c_str(), mixed::cost_name(cm.kind), budget, first_last, a_bits,
      static_cast<unsigned long long>(seed));
  std::printf("sensitivity: %zu groups measured in %.1f s (cache %s)\n", table.groups.size(),
              std::chrono::duration<double>(t1 - t0).count(), cache.c_str());
  for (int b : bits) {
    std::printf("  uniform W%d: %s", b,
                describe(mixed::uniform_cost(table, size_model, b, first_last),
                         mixed::uniform_cost(table, bops_model, b, first_last))
                    .c_str());
    if (latency)
      std::printf(" %9.3f ms (layer sum)", 1e3 * mixed::uniform_cost(table, cm, b, first_last));
    std::printf("\n");
  }

  const mixed::AllocationProblem problem = mixed::make_problem(table, cm, first_last);
  const auto search_start = std::chrono::steady_clock::now();
  const mixed::SearchResult r = mixed::genetic_search(problem.groups, budget, gp);
  const auto t2 = std::chrono::steady_clock::now();
  const std::map<std::string, int> layer_bits = mixed::layer_bits(table, problem, r.best);
  auto cost_of = [&](const mixed::CostModel& c) {
    double v = 0;
    for (size_t g = 0; g < table.groups.size(); ++g)
      for (size_t k = 0; k < table.groups[g].layers.size(); ++k)
        v += mixed::layer_cost(table, g, k, layer_bits.at(table.groups[g].layers[k]), c);
    return v;
  };
  const double size_bits = cost_of(size_model), bop = cost_of(bops_model);
  std::printf(
      "search: %lld allocations evaluated in %.3f s; best: sensitivity %.6g, %s "
      "(budget %.6g %s)\n",
      static_cast<long long>(r.evaluated), std::chrono::duration<double>(t2 - search_start).count(),
      r.best.loss, describe(size_bits, bop).c_str(), budget, mixed::cost_name(cm.kind));
  for (size_t g = 0; g < table.groups.size(); ++g) {
    std::printf("  %-24s", table.groups[g].name.c_str());
    for (const std::string& l : table.groups[g].layers)
      std::printf(" %s:%d", l.c_str(), layer_bits.at(l));
    std::printf("\n");
  }
  std::printf("Pareto front found (%s, sensitivity): %zu points\n", mixed::cost_name(cm.kind),
              r.pareto.size());
  const size_t step = std::max<size_t>(1, r.pareto.size() / 12);
  for (size_t i = 0; i < r.pareto.size(); i += step)
    std::printf("  %14.6g %12.6g\n", r.pareto[i].cost, r.pareto[i].loss);
  mixed::write_bits_file(out, layer_bits,
                         {.model = model_name,
                          .cost = mixed::cost_name(cm.kind),
                          .budget = budget,
                          .cost_value = r.best.cost,
                          .sensitivity = r.best.loss,
                          .size_bits = size_bits,
                          .bops = bop});
  if (latency)
    std::printf(
        "integer runtime, the whole model with these bits: %.3f ms per batch of %lld "
        "measured (budget %.3f ms, layer sum %.3f ms)\n",
        1e3 * mixed::measure_model_latency(fp.model, layer_bits, calib.images, lo),
        static_cast<long long>(latency_batch), 1e3 * budget, 1e3 * r.best.cost);
  std::printf("wrote %s\n", out.c_str());
  return 0;
}

[[maybe_unused]] const bool registered = cli::register_subcommand(
    {"mixed", "choose per-layer weight bits under a size or BOPs budget (BRECQ mixed precision)",
     run});

}  // namespace
