#pragma once
// A terminal progress bar with ETA and a caller-supplied status (e.g. the current losses).
// On a terminal it redraws one line; otherwise (logs, CI) it prints a line every 10 %.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

namespace brecq::quant {

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total, bool enabled = true)
      : label_(std::move(label)),
        total_(total),
        enabled_(enabled),
        tty_(isatty(fileno(stderr)) != 0),
        start_(clock::now()),
        last_(start_) {}

  void update(int64_t done, const std::string& status) {
    if (!enabled_ || total_ <= 0) return;
    const auto now = clock::now();
    const int decile = static_cast<int>(10 * done / total_);
    const bool due = tty_ ? seconds(now - last_) >= 0.25 : decile > last_decile_;
    if (!due && done < total_) return;
    last_ = now;
    last_decile_ = decile;
    const double elapsed = seconds(now - start_);
    const double eta =
        done > 0 ? elapsed * static_cast<double>(total_ - done) / static_cast<double>(done) : 0.0;
    constexpr int width = 24;
    const int fill = static_cast<int>(width * done / total_);
    std::string bar(static_cast<size_t>(fill), '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "%s%s [%s] %3d%% %lld/%lld %s ETA %s %s%s", tty_ ? "\r" : "",
                 label_.c_str(), bar.c_str(), static_cast<int>(100 * done / total_),
                 static_cast<long long>(done), static_cast<long long>(total_),
                 format_time(elapsed).c_str(), format_time(eta).c_str(), status.c_str(),
                 tty_ ? "\033[K" : "\n");
    std::fflush(stderr);
  }

  void finish() {
    if (enabled_ && tty_) std::fputc('\n', stderr);
  }

  static std::string format_time(double s) {
    char buf[32];
    const long t = static_cast<long>(s + 0.5);
    if (t >= 3600)
      std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
      std::snprintf(buf, sizeof buf, "%ld:%02ld", t / 60, t % 60);
    return buf;
  }

 private:
  using clock = std::chrono::steady_clock;
  static double seconds(clock::duration d) { return std::chrono::duration<double>(d).count(); }
  std::string label_;
  int64_t total_;
  bool enabled_, tty_;
  clock::time_point start_, last_;
  int last_decile_ = -1;
};

}  // namespace brecq::quant
