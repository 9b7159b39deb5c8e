// Peak memory and time of a BRECQ run on ResNet-18 at 224x224 with 1,024 calibration images: the
// unit caches (inputs, targets, Fisher weights of every calibration image) in memory, and in
// memory-mapped temporary files (ReconstructionSettings::cache_dir). Each run is a process of its
// own, so that its peak resident set (wait4) is its own; with --limit-mb each runs in a cgroup v1
// memory group with that limit (needs root), which shows which runs fit.
// Usage: memory [--images N] [--iters N] [--cache-dir DIR] [--limit-mb MB] [--out FILE]
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <fstream>

#include "brecq/quant/brecq.hpp"
#include "common.hpp"

namespace {

using namespace brecq;

struct RunResult {
  bool finished = false;
  std::string how;  ///< "finished", "killed by signal N", "exit status N"
  double seconds = 0, peak_rss_mb = 0, group_peak_mb = 0;
  std::string load;  ///< /proc/loadavg's 1-minute figure at the end: others' work beside it
};

/// The cgroup v1 memory folder this process is in ("" if none is mounted).
std::string own_memory_cgroup() {
  std::ifstream in("/proc/self/cgroup");
  for (std::string line; std::getline(in, line);) {
    const size_t a = line.find(":memory:");
    if (a != std::string::npos) return "/sys/fs/cgroup/memory" + line.substr(a + 8);
  }
  return "";
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  out.close();
  check(out.good(), "memory bench: cannot write '", text, "' to ", path);
}

/// Runs this program again with `--run MODE` (and the same other flags) as a child, in a fresh
/// memory cgroup limited to limit_mb if limit_mb > 0.
RunResult run_child(const std::vector<std::string>& args, int64_t limit_mb) {
  std::string group;
  if (limit_mb > 0) {
    const std::string parent = own_memory_cgroup();
    check(!parent.empty(), "--limit-mb: no cgroup v1 memory controller found in /proc/self/cgroup");
    group = parent + "/brecq-memory-bench-" + std::to_string(::getpid());
    std::filesystem::create_directory(group);
    write_text(group + "/memory.limit_in_bytes", std::to_string(limit_mb << 20));
  }
  const double t0 = bench::now_s();
  const pid_t pid = ::fork();
  check(pid >= 0, "memory bench: fork failed");
  if (pid == 0) {
    if (!group.empty()) write_text(group + "/cgroup.procs", std::to_string(::getpid()));
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv("/proc/self/exe", argv.data());
    std::_Exit(127);
  }
  int status = 0;
  rusage ru{};
  ::wait4(pid, &status, 0, &ru);
  RunResult r;
  r.seconds = bench::now_s() - t0;
  r.peak_rss_mb = static_cast<double>(ru.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB
  r.finished = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  r.how = r.finished            ? "finished"
          : WIFSIGNALED(status) ? "killed by signal " + std::to_string(WTERMSIG(status))
                                : "exit status " + std::to_string(WEXITSTATUS(status));
  std::ifstream("/proc/loadavg") >> r.load;
  if (!group.empty()) {
    std::ifstream peak(group + "/memory.max_usage_in_bytes");
    double bytes = 0;
    peak >> bytes;
    r.group_peak_mb = bytes / (1 << 20);
    ::rmdir(group.c_str());
  }
  return r;
}

/// One BRECQ run in this process: random Kaiming-initialised ResNet-18 (the memory and time do
/// not depend on the weights' values), random N(0, 1) images, W2A4, block granularity.
void run_one(int64_t images, int64_t iters, const std::string& cache_dir) {
  Rng rng(1);
  nn::Model fp = nn::make_model("resnet18");
  nn::init_kaiming(fp, rng);
  const Tensor calib = Tensor::randn(Shape{images, 3, 224, 224}, rng, 1.0f);
  quant::QuantModel qm(std::move(fp), {.w_bits = 2, .a_bits = 4});
  quant::ReconstructionSettings s;
  s.iters_w = iters;
  s.iters_a = iters;
  s.cache_dir = cache_dir;
  s.progress = nullptr;
  quant::run_brecq("block", qm, calib, s);
}

}  // namespace

int main(int argc, char** argv) try {
  using namespace brecq::bench;
  const auto f = parse_flags(
      argc, argv, "memory",
      "Peak memory and time of a ResNet-18 224x224 BRECQ run, unit caches in memory and in "
      "memory-mapped files.",
      {{.name = "--images",
        .value_name = "N",
        .help = "calibration images",
        .default_value = "1024"},
       {.name = "--iters",
        .value_name = "N",
        .help = "iterations per unit and pass (the caches, not the iterations, set the peak)",
        .default_value = "20"},
       {.name = "--cache-dir",
        .value_name = "DIR",
        .help = "folder of the memory-mapped caches",
        .default_value = "/tmp"},
       {.name = "--limit-mb",
        .value_name = "MB",
        .help = "run each configuration in a memory cgroup with this limit (root only)"},
       {.name = "--rounds",
        .value_name = "N",
        .help = "alternate the two configurations N times (paired timing)",
        .default_value = "1"},
       {.name = "--run", .value_name = "memory|mapped", .help = "(internal) one run, this process"},
       {.name = "--out",
        .value_name = "FILE",
        .help = "table",
        .default_value = "results/memory.md"}});
  const int64_t images = f.get_int("--images", 1), iters = f.get_int("--iters", 0);
  const std::string cache_dir = f.get_dir("--cache-dir");
  if (f.has("--run")) {
    const std::string mode = f.get_choice("--run", {"memory", "mapped"});
    run_one(images, iters, mode == "mapped" ? cache_dir : "");
    return 0;
  }
  const int64_t limit_mb = f.has("--limit-mb") ? f.get_int("--limit-mb", 64) : 0;
  const int64_t rounds = f.get_int("--rounds", 1, 100);
  std::ostringstream os;
  os << "# BRECQ peak memory, ResNet-18 224x224\n\nCPU: " << machine() << "; " << num_threads()
     << " threads. W2A4, block granularity, " << images << " calibration images (random, N(0, 1)), "
     << iters
     << " iterations per unit and pass, random Kaiming weights; each run a process of its own. "
        "Command: `build/bench/memory --images "
     << images << " --iters " << iters << (rounds > 1 ? " --rounds " + std::to_string(rounds) : "")
     << (limit_mb ? " --limit-mb " + std::to_string(limit_mb) : "")
     << "`.\n\n| unit caches | memory limit | result | wall s | load at the end | peak RSS MiB |"
     << (limit_mb ? " cgroup peak MiB (incl. page cache) |" : "") << "\n|---|---|---|---|---|---|"
     << (limit_mb ? "---|" : "") << "\n";
  std::cout << os.str() << std::flush;
  for (int64_t round = 0; round < rounds; ++round)
    for (const std::string mode : {"memory", "mapped"}) {
      const RunResult r =
          run_child({argv[0], "--images", std::to_string(images), "--iters", std::to_string(iters),
                     "--cache-dir", cache_dir, "--run", mode},
                    limit_mb);
      std::ostringstream row;
      row << "| " << (mode == "memory" ? "in memory" : "memory-mapped files in " + cache_dir)
          << " | " << (limit_mb ? std::to_string(limit_mb) + " MiB" : "none") << " | " << r.how
          << " | " << fmt("%.1f", r.seconds) << " | " << r.load << " | "
          << fmt("%.0f", r.peak_rss_mb) << " |"
          << (limit_mb ? " " + fmt("%.0f", r.group_peak_mb) + " |" : "") << "\n";
      std::cout << row.str() << std::flush;
      os << row.str();
    }
  emit(os.str(), f.get_output("--out"));
  return 0;
} catch (const brecq::cli::UsageError& e) {
  std::fprintf(stderr, "memory: error: %s\n\n%s", e.what(), e.usage().c_str());
  return 2;
} catch (const std::exception& e) {
  std::fprintf(stderr, "memory: error: %s\n", e.what());
  return 1;
}
