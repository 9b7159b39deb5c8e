#pragma once
// Shared by the benchmarks: best-of-N timing, an FP32 peak measured with an FMA loop, and a
// markdown table printed to stdout as it is measured and written to --out (default
// results/<name>.md).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>
#include <xsimd/xsimd.hpp>

#include "../tools/cli/args.hpp"
#include "brecq/config.hpp"
#include "brecq/io/safetensors_core.hpp"
#include "brecq/tensor/parallel.hpp"

namespace brecq::bench {

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

/// Best wall time of f() over at least min_reps runs (and about 0.25 s in total), after one
/// warm-up run.
template <class F>
inline double best_time(F&& f, int min_reps = 3) {
  double t0 = now_s();
  f();
  const double first = std::max(now_s() - t0, 1e-7);
  const int reps = std::clamp(static_cast<int>(0.25 / first), min_reps, std::max(50, min_reps));
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    t0 = now_s();
    f();
    best = std::min(best, now_s() - t0);
  }
  return best;
}

/// Median time of one call of f() over `samples` samples after a warm-up; each sample times
/// enough back-to-back calls to last about 10 ms, so short kernels are not lost in timer noise.
template <class F>
inline double median_time(F&& f, int samples = 7) {
  double t0 = now_s();
  f();
  const double first = std::max(now_s() - t0, 1e-7);
  const int calls = std::clamp(static_cast<int>(0.01 / first), 1, 1000);
  std::vector<double> t;
  for (int s = 0; s < samples; ++s) {
    t0 = now_s();
    for (int c = 0; c < calls; ++c) f();
    t.push_back((now_s() - t0) / calls);
  }
  std::nth_element(t.begin(), t.begin() + samples / 2, t.end());
  return t[static_cast<size_t>(samples / 2)];
}

/// Lets OpenBLAS's worker threads, which spin for ~2^28 TSC ticks after a call, go to sleep
/// before timing ours (otherwise they compete with our threads for the cores).
inline void settle() { std::this_thread::sleep_for(std::chrono::milliseconds(150)); }

/// FP32 peak in GFLOP/s: the FMA rate of one core times the thread count. One core runs
/// independent FMA chains (12 accumulators cover the FMA latency on two pipes; 2 * lanes flops
/// per FMA), best of many short runs, which on a shared machine is more robust than timing all
/// cores at once. Equals cores x 2 FMA pipes x lanes x 2 flop x clock.
inline double measure_peak_gflops() {
  using Vec = xsimd::batch<float>;
  constexpr int kAcc = 12;
  constexpr int64_t kIters = 1'200'000;
  static volatile float sink = 0.0f;  // keeps the loop from being optimised away
  auto run = [&] {
    Vec acc[kAcc];
    for (int i = 0; i < kAcc; ++i) acc[i] = Vec(static_cast<float>(i) * 1e-3f);
    const Vec a(0.999999f), b(1e-7f);
    for (int64_t it = 0; it < kIters / kAcc; ++it)
      for (int i = 0; i < kAcc; ++i) acc[i] = xsimd::fma(acc[i], a, b);
    Vec s(0.0f);
    for (int i = 0; i < kAcc; ++i) s += acc[i];
    sink = sink + xsimd::hadd(s);
  };
  const double t = best_time(run, 200);
  return 2.0 * Vec::size * static_cast<double>(kIters / kAcc * kAcc) / t * 1e-9 * num_threads();
}

/// The benchmark's flags, parsed by the flag parser every program uses (tools/cli/args.hpp).
/// --help prints the usage and exits; a bad flag throws cli::UsageError naming it.
inline cli::Args parse_flags(int argc, char** argv, const std::string& name,
                             const std::string& description, std::vector<cli::Flag> flags) {
  cli::Args args(name, description, std::move(flags));
  if (!args.parse(std::vector<std::string>(argv + 1, argv + argc))) std::exit(0);
  return args;
}

/// Writes text (already printed row by row) to path, creating its directory.
inline void emit(const std::string& text, const std::string& path) {
  const std::filesystem::path p(path);
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
  write_file_bytes(path, std::vector<uint8_t>(text.begin(), text.end()));  // never half-written
  std::cout << "written to " << path << "\n";
}

/// The CPU's model name (as lscpu prints it) and the load average when the run started.
inline std::string machine() {
  std::ifstream cpu("/proc/cpuinfo"), load("/proc/loadavg");
  std::string line, model = "unknown CPU", avg;
  while (std::getline(cpu, line))
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  std::getline(load, avg);
  return model + ", " + std::to_string(std::thread::hardware_concurrency()) +
         " logical CPUs; /proc/loadavg at the start: " + avg;
}

inline std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

}  // namespace brecq::bench
