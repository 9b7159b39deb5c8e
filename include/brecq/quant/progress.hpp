#pragma once
// Progress of long work (a unit's optimisation, an evaluation) with ETA, sent to one sink: the
// terminal bar by default, or whatever a program embedding the library wants (a log, a GUI), or
// nowhere (an empty sink).
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace brecq::quant {

/// One report: `done` of `total` steps of the work called `label`, `status` its caller's words
/// (e.g. the current losses). `finished` marks the last report of that work.
struct ProgressEvent {
  std::string_view label;
  int64_t done = 0, total = 0;
  double elapsed_s = 0.0, eta_s = 0.0;
  std::string_view status;
  bool finished = false;
};

/// Where progress reports go; an empty sink means none are made.
using ProgressSink = std::function<void(const ProgressEvent&)>;

inline std::string format_time(double s) {
  char buf[32];
  const long t = static_cast<long>(s + 0.5);
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%ld:%02ld", t / 60, t % 60);
  return buf;
}

/// The default sink: a bar on stderr, redrawn in place on a terminal; in a log (not a terminal)
/// one line per 10 % of each work, so that logs stay short.
inline ProgressSink terminal_progress() {
  struct State {
    bool tty = isatty(fileno(stderr)) != 0;
    std::string label;
    int decile = -1;
  };
  auto st = std::make_shared<State>();
  return [st](const ProgressEvent& e) {
    if (e.total <= 0) return;
    if (e.finished) {
      if (st->tty) std::fputc('\n', stderr);
      st->decile = -1;
      return;
    }
    const int decile = static_cast<int>(10 * e.done / e.total);
    if (!st->tty) {
      if (e.label == st->label && decile <= st->decile && e.done < e.total) return;
      st->label = e.label;
      st->decile = decile;
    }
    constexpr int width = 24;
    const int fill = static_cast<int>(width * e.done / e.total);
    std::string bar(static_cast<size_t>(fill), '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "%s%.*s [%s] %3d%% %lld/%lld %s ETA %s %.*s%s", st->tty ? "\r" : "",
                 static_cast<int>(e.label.size()), e.label.data(), bar.c_str(),
                 static_cast<int>(100 * e.done / e.total), static_cast<long long>(e.done),
                 static_cast<long long>(e.total), format_time(e.elapsed_s).c_str(),
                 format_time(e.eta_s).c_str(), static_cast<int>(e.status.size()), e.status.data(),
                 st->tty ? "\033[K" : "\n");
    std::fflush(stderr);
  };
}

/// One piece of work reporting to a sink: measures elapsed time and ETA, and reports at most
/// every 0.25 s (and always the last step), so that a sink is never the bottleneck.
class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total, ProgressSink sink)
      : label_(std::move(label)),
        total_(total),
        sink_(std::move(sink)),
        start_(clock::now()),
        last_(start_ - std::chrono::seconds(1)) {}

  /// Whether reports are made (callers skip building a status string otherwise).
  bool active() const { return sink_ && total_ > 0; }

  void update(int64_t done, std::string_view status) {
    if (!active()) return;
    const auto now = clock::now();
    if (seconds(now - last_) < 0.25 && done < total_) return;
    last_ = now;
    const double elapsed = seconds(now - start_);
    const double eta =
        done > 0 ? elapsed * static_cast<double>(total_ - done) / static_cast<double>(done) : 0.0;
    sink_({.label = label_,
           .done = done,
           .total = total_,
           .elapsed_s = elapsed,
           .eta_s = eta,
           .status = status});
  }

  void finish() {
    if (active())
      sink_({.label = label_,
             .done = total_,
             .total = total_,
             .elapsed_s = seconds(clock::now() - start_),
             .status = {},
             .finished = true});
  }

 private:
  using clock = std::chrono::steady_clock;
  static double seconds(clock::duration d) { return std::chrono::duration<double>(d).count(); }
  std::string label_;
  int64_t total_;
  ProgressSink sink_;
  clock::time_point start_, last_;
};

}  // namespace brecq::quant
