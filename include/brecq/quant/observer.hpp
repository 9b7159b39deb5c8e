#pragma once
// Range observers: what decides a quantizer's range from the data it will quantize. An observer
// sees any number of batches, then sets the quantizer's scale and zero point once. The family:
// min-max, its moving average (EMA), percentile, the L_p shrink search of the official BRECQ code
// (L2.4; with p = 2 the MSE search) and TensorRT's KL-divergence threshold; observer_factory
// makes one from a method name. Per channel means along dim 0 (weights [out, ...]).
#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "brecq/ops/shape.hpp"
#include "brecq/quant/quantizer.hpp"

namespace brecq::quant {

class RangeObserver {
 public:
  virtual ~RangeObserver() = default;
  /// One more batch of the values to quantize (dim 0 = channels for a per-channel quantizer).
  virtual void observe(const Tensor& x) = 0;
  /// Sets q's scale and zero point from everything observed.
  virtual void decide(UniformQuantizer& q) = 0;
};

/// Min-max over every batch seen (per channel or per tensor), the range widened to include 0.
class MinMaxObserver : public RangeObserver {
 public:
  explicit MinMaxObserver(QuantizerConfig c) : config_(c) {}

  void observe(const Tensor& x) override {
    check(x.numel() > 0, "min-max observer: empty tensor");
    Tensor xc = x.contiguous();
    const int64_t C = config_.per_channel ? x.dim(0) : 1, per = x.numel() / C;
    // Start from the extremes, not from one element: each channel has its own values.
    if (lo_.empty()) lo_.assign(static_cast<size_t>(C), INFINITY);
    if (hi_.empty()) hi_.assign(static_cast<size_t>(C), -INFINITY);
    check(static_cast<int64_t>(lo_.size()) == C, "min-max observer: ", lo_.size(),
          " channels before, now ", C);
    const float* p = xc.data<float>();
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < per; ++i) {
        const float v = p[c * per + i];
        lo_[static_cast<size_t>(c)] = std::min(lo_[static_cast<size_t>(c)], v);
        hi_[static_cast<size_t>(c)] = std::max(hi_[static_cast<size_t>(c)], v);
      }
  }

  void decide(UniformQuantizer& q) override {
    check(!lo_.empty(), "min-max observer: no batch observed");
    validate(q.config, "quantizer");
    const int64_t C = static_cast<int64_t>(lo_.size());
    q.scale = Tensor::empty(Shape{C});
    q.zero_point = Tensor::empty(Shape{C});
    for (int64_t c = 0; c < C; ++c)
      std::tie(q.scale.data<float>()[c], q.zero_point.data<float>()[c]) =
          detail::range_params(std::min(lo_[static_cast<size_t>(c)], 0.0f),
                               std::max(hi_[static_cast<size_t>(c)], 0.0f), q.config);
  }

 private:
  QuantizerConfig config_;
  std::vector<float> lo_, hi_;
};

/// The L_p shrink search (init_range) over every batch seen, stacked along dim 0: per-tensor
/// quantizers take any number of batches, per-channel ones (weights) a single tensor.
class LpSearchObserver : public RangeObserver {
 public:
  explicit LpSearchObserver(QuantizerConfig c) : config_(c) {}

  void observe(const Tensor& x) override {
    check(!config_.per_channel || seen_.empty(),
          "L_p search observer: a per-channel quantizer takes its range from one tensor");
    seen_.push_back(x.contiguous());
  }

  /// The search runs on q's grid (bits, symmetry, channels) with this observer's exponent and
  /// steps, so that one quantizer can be searched under another error (e.g. MSE).
  void decide(UniformQuantizer& q) override {
    check(!seen_.empty(), "L_p search observer: no batch observed");
    UniformQuantizer search{q.config};
    search.config.init = RangeInit::lp_search;
    search.config.lp = config_.lp;
    search.config.search_steps = config_.search_steps;
    if (seen_.size() == 1) {
      init_range(search, seen_.front());
    } else {
      std::vector<Tensor> flat;
      for (const Tensor& t : seen_) flat.push_back(reshape(t, {t.numel()}));  // [numel]
      init_range(search, cat(flat, 0));
    }
    q.scale = search.scale;
    q.zero_point = search.zero_point;
  }

 private:
  QuantizerConfig config_;
  std::vector<Tensor> seen_;
};

namespace detail {

/// Every value observed, per channel (dim 0 for a per-channel quantizer, else one): what the
/// percentile and KL rules need at the end. Exact, at 4 bytes per value observed.
class ChannelValues {
 public:
  ChannelValues(bool per_channel, std::string what)
      : per_channel_(per_channel), what_(std::move(what)) {}

  void append(const Tensor& x) {
    check(x.numel() > 0, what_, ": empty tensor");
    const int64_t C = per_channel_ ? x.dim(0) : 1, per = x.numel() / C;
    if (values_.empty()) values_.resize(static_cast<size_t>(C));
    check(static_cast<int64_t>(values_.size()) == C, what_, ": ", values_.size(),
          " channels before, now ", C);
    Tensor xc = x.contiguous();
    const float* p = xc.data<float>();
    for (int64_t c = 0; c < C; ++c)
      values_[static_cast<size_t>(c)].insert(values_[static_cast<size_t>(c)].end(), p + c * per,
                                             p + (c + 1) * per);
  }

  bool empty() const { return values_.empty(); }
  int64_t channels() const { return static_cast<int64_t>(values_.size()); }
  std::vector<float>& channel(int64_t c) { return values_[static_cast<size_t>(c)]; }

 private:
  bool per_channel_;
  std::string what_;
  std::vector<std::vector<float>> values_;
};

/// Sets q's [C] scale and zero point from per-channel ranges (each widened to include 0).
inline void set_ranges(UniformQuantizer& q, const std::vector<float>& lo,
                       const std::vector<float>& hi) {
  const int64_t C = static_cast<int64_t>(lo.size());
  q.scale = Tensor::empty(Shape{C});
  q.zero_point = Tensor::empty(Shape{C});
  for (int64_t c = 0; c < C; ++c)
    std::tie(q.scale.data<float>()[c], q.zero_point.data<float>()[c]) =
        range_params(std::min(lo[static_cast<size_t>(c)], 0.0f),
                     std::max(hi[static_cast<size_t>(c)], 0.0f), q.config);
}

/// The q-quantile (q in [0, 1]) of v with linear interpolation between order statistics, as
/// numpy's default: position q * (n - 1). Reorders v.
inline float quantile(std::vector<float>& v, double q) {
  const double pos = q * static_cast<double>(v.size() - 1);
  const size_t k = static_cast<size_t>(std::floor(pos));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  const float a = v[k];
  if (k + 1 >= v.size()) return a;
  const float b = *std::min_element(v.begin() + static_cast<std::ptrdiff_t>(k) + 1, v.end());
  return static_cast<float>(a + (pos - static_cast<double>(k)) * (b - a));
}

/// KL(p || q) of two histograms (normalised here). q is zero only where the clipped mass was
/// folded into p's last bin and its group held nothing: a tiny floor keeps that finite but large
/// (the smoothing TensorRT's calibrator applies, reduced to the one case where it matters).
inline double kl_divergence(const std::vector<double>& p, const std::vector<double>& q) {
  double sp = 0, sq = 0;
  for (size_t i = 0; i < p.size(); ++i) sp += p[i], sq += q[i];
  if (sp <= 0 || sq <= 0) return INFINITY;
  double d = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] <= 0) continue;
    const double pi = p[i] / sp, qi = std::max(q[i] / sq, 1e-12);
    d += pi * std::log(pi / qi);
  }
  return d;
}

/// TensorRT's entropy calibration on a histogram h of |x| over [0, max): for every candidate
/// count i of bins kept (levels..bins), p = h[0, i) with the clipped mass h[i, bins) added to its
/// last bin, q = h[0, i) merged into `levels` equal groups and spread back evenly over the bins
/// that are non-zero in p; returns the i with the least KL(p || q). The threshold is i bin widths.
inline int64_t kl_threshold_bins(const std::vector<double>& h, int64_t levels) {
  const int64_t bins = static_cast<int64_t>(h.size());
  std::vector<double> suffix(static_cast<size_t>(bins) + 1, 0.0);  // mass at or above bin i
  for (int64_t i = bins - 1; i >= 0; --i)
    suffix[static_cast<size_t>(i)] = suffix[static_cast<size_t>(i) + 1] + h[static_cast<size_t>(i)];
  int64_t best = bins;
  double best_d = INFINITY;
  std::vector<double> p, q;
  for (int64_t i = levels; i <= bins; ++i) {
    p.assign(h.begin(), h.begin() + i);
    p.back() += suffix[static_cast<size_t>(i)];
    q.assign(static_cast<size_t>(i), 0.0);
    const int64_t per = i / levels;  // the last group also takes the remainder
    for (int64_t g = 0; g < levels; ++g) {
      const int64_t b0 = g * per, b1 = g + 1 == levels ? i : b0 + per;
      double mass = 0;
      int64_t nonzero = 0;
      for (int64_t j = b0; j < b1; ++j) {
        mass += h[static_cast<size_t>(j)];
        nonzero += p[static_cast<size_t>(j)] > 0;
      }
      if (nonzero == 0) continue;
      for (int64_t j = b0; j < b1; ++j)
        if (p[static_cast<size_t>(j)] > 0)
          q[static_cast<size_t>(j)] = mass / static_cast<double>(nonzero);
    }
    const double d = kl_divergence(p, q);
    if (d < best_d) best_d = d, best = i;
  }
  return best;
}

}  // namespace detail

/// Min-max as an exponential moving average over batches: each batch's min and max (per
/// channel) move the running ones by lo = momentum * lo + (1 - momentum) * batch_min (the first
/// batch sets them), so that rare extreme batches weigh less than in plain min-max.
class EmaMinMaxObserver : public RangeObserver {
 public:
  explicit EmaMinMaxObserver(QuantizerConfig c, float momentum = 0.9f)
      : config_(c), momentum_(momentum) {
    check(momentum >= 0.0f && momentum < 1.0f, "EMA observer: momentum must be in [0, 1), got ",
          momentum);
  }

  void observe(const Tensor& x) override {
    check(x.numel() > 0, "EMA observer: empty tensor");
    Tensor xc = x.contiguous();
    const int64_t C = config_.per_channel ? x.dim(0) : 1, per = x.numel() / C;
    check(lo_.empty() || static_cast<int64_t>(lo_.size()) == C, "EMA observer: ", lo_.size(),
          " channels before, now ", C);
    const bool first = lo_.empty();
    lo_.resize(static_cast<size_t>(C)), hi_.resize(static_cast<size_t>(C));
    const float* p = xc.data<float>();
    for (int64_t c = 0; c < C; ++c) {
      const auto [mn, mx] = std::minmax_element(p + c * per, p + (c + 1) * per);
      float& lo = lo_[static_cast<size_t>(c)];
      float& hi = hi_[static_cast<size_t>(c)];
      lo = first ? *mn : momentum_ * lo + (1.0f - momentum_) * *mn;
      hi = first ? *mx : momentum_ * hi + (1.0f - momentum_) * *mx;
    }
  }

  void decide(UniformQuantizer& q) override {
    check(!lo_.empty(), "EMA observer: no batch observed");
    validate(q.config, "quantizer");
    detail::set_ranges(q, lo_, hi_);
  }

 private:
  QuantizerConfig config_;
  float momentum_;
  std::vector<float> lo_, hi_;
};

/// Percentile clipping: the range [P_(100 - p), P_p] of every value seen (per channel or per
/// tensor), exact (all values are kept; linear interpolation between order statistics), widened
/// to include 0. p = 100 is min-max.
class PercentileObserver : public RangeObserver {
 public:
  explicit PercentileObserver(QuantizerConfig c, float percentile = 99.99f)
      : values_(c.per_channel, "percentile observer"), percentile_(percentile) {
    check(percentile > 0.0f && percentile <= 100.0f,
          "percentile observer: percentile must be in (0, 100], got ", percentile);
  }

  void observe(const Tensor& x) override { values_.append(x); }

  void decide(UniformQuantizer& q) override {
    check(!values_.empty(), "percentile observer: no batch observed");
    validate(q.config, "quantizer");
    const int64_t C = values_.channels();
    std::vector<float> lo(static_cast<size_t>(C)), hi(static_cast<size_t>(C));
    const double top = static_cast<double>(percentile_) / 100.0;
    for (int64_t c = 0; c < C; ++c) {
      hi[static_cast<size_t>(c)] = detail::quantile(values_.channel(c), top);
      lo[static_cast<size_t>(c)] = detail::quantile(values_.channel(c), 1.0 - top);
    }
    detail::set_ranges(q, lo, hi);
  }

 private:
  detail::ChannelValues values_;
  float percentile_;
};

/// KL-divergence (entropy) calibration as TensorRT does it: a histogram of `bins` (2048) bins
/// over [0, max], the threshold whose clipped-and-merged distribution is closest in KL to the
/// data. TensorRT is symmetric int8 (128 levels on [0, T]); adapted here to q's grid:
/// - non-negative data (after ReLU): the histogram of x over [0, max], merged into 2^bits - 1
///   groups (the intervals of the unsigned grid on [0, T]); range [0, T];
/// - data with negative values: the histogram of |x|, merged into 2^(bits-1) groups (the half
///   grid on one side, as TensorRT); range [-T, T] cut to the observed [min, max], so that an
///   asymmetric quantizer does not spend levels on values that never occur.
/// Exact zeros are not counted (see threshold). All values are kept; the histogram is built at
/// decide from their exact maximum.
class KlObserver : public RangeObserver {
 public:
  explicit KlObserver(QuantizerConfig c, int64_t bins = 2048)
      : values_(c.per_channel, "KL observer"), bins_(bins) {
    check(bins >= 256 && bins <= (1 << 20), "KL observer: bins must be in [256, 1048576], got ",
          bins);
  }

  void observe(const Tensor& x) override { values_.append(x); }

  void decide(UniformQuantizer& q) override {
    check(!values_.empty(), "KL observer: no batch observed");
    validate(q.config, "quantizer");
    const int64_t C = values_.channels();
    std::vector<float> lo(static_cast<size_t>(C)), hi(static_cast<size_t>(C));
    for (int64_t c = 0; c < C; ++c) {
      const std::vector<float>& v = values_.channel(c);
      const auto [mn, mx] = std::minmax_element(v.begin(), v.end());
      const bool unsigned_data = *mn >= 0.0f;
      const float top = unsigned_data ? *mx : std::max(-*mn, *mx);
      const float t =
          threshold(v, top, unsigned_data ? (1 << q.config.bits) - 1 : 1 << (q.config.bits - 1));
      lo[static_cast<size_t>(c)] = unsigned_data ? 0.0f : std::max(*mn, -t);
      hi[static_cast<size_t>(c)] = std::min(*mx, t);
    }
    detail::set_ranges(q, lo, hi);
  }

 private:
  /// Threshold for |v| over [0, top] with `levels` groups. Exact zeros are left out: every grid
  /// here holds 0 exactly, and after ReLU they are half the data, a spike in the first bin that
  /// the merging would smear over its group and so push the threshold down.
  float threshold(const std::vector<float>& v, float top, int64_t levels) const {
    if (!(top > 0.0f)) return 0.0f;
    std::vector<double> h(static_cast<size_t>(bins_), 0.0);
    const double width = static_cast<double>(top) / static_cast<double>(bins_);
    for (float x : v) {
      if (x == 0.0f) continue;
      const int64_t b = static_cast<int64_t>(std::fabs(static_cast<double>(x)) / width);
      h[static_cast<size_t>(std::min(b, bins_ - 1))] += 1;
    }
    return static_cast<float>(static_cast<double>(detail::kl_threshold_bins(h, levels)) * width);
  }

  detail::ChannelValues values_;
  int64_t bins_;
};

/// Makes the observer of a quantizer from its configuration.
using ObserverFactory = std::function<std::unique_ptr<RangeObserver>(const QuantizerConfig&)>;

/// The observer named by config.init.
inline std::unique_ptr<RangeObserver> make_observer(const QuantizerConfig& c) {
  if (c.init == RangeInit::minmax) return std::make_unique<MinMaxObserver>(c);
  return std::make_unique<LpSearchObserver>(c);
}

/// Parameters of the observers observer_factory makes (each method reads its own).
struct ObserverParams {
  float momentum = 0.9f;      ///< ema: weight of the running range
  float percentile = 99.99f;  ///< percentile: in (0, 100]
  float lp = 2.0f;            ///< mse: exponent of the error searched (2: MSE, 2.4: BRECQ's)
  int search_steps = 80;      ///< mse: shrink candidates range * (1 - 0.01 i), i < steps
  int64_t kl_bins = 2048;     ///< kl: histogram bins
};

/// The method names observer_factory accepts.
inline std::vector<std::string> observer_methods() {
  return {"minmax", "ema", "percentile", "mse", "kl"};
}

/// A factory of the observer called `method` (one of observer_methods()); its parameters are
/// checked here, before any data is seen.
inline ObserverFactory observer_factory(const std::string& method, const ObserverParams& p = {}) {
  std::string names;
  for (const std::string& m : observer_methods()) names += (names.empty() ? "" : ", ") + m;
  if (method == "minmax")
    return [](const QuantizerConfig& c) { return std::make_unique<MinMaxObserver>(c); };
  if (method == "ema") {
    EmaMinMaxObserver({}, p.momentum);  // validates
    return [p](const QuantizerConfig& c) {
      return std::make_unique<EmaMinMaxObserver>(c, p.momentum);
    };
  }
  if (method == "percentile") {
    PercentileObserver({}, p.percentile);
    return [p](const QuantizerConfig& c) {
      return std::make_unique<PercentileObserver>(c, p.percentile);
    };
  }
  if (method == "mse") {
    QuantizerConfig search{
        .init = RangeInit::lp_search, .lp = p.lp, .search_steps = p.search_steps};
    validate(search, "mse observer");
    return [search](const QuantizerConfig& c) {
      QuantizerConfig s = c;
      s.init = RangeInit::lp_search, s.lp = search.lp, s.search_steps = search.search_steps;
      return std::make_unique<LpSearchObserver>(s);
    };
  }
  if (method == "kl") {
    KlObserver({}, p.kl_bins);
    return [p](const QuantizerConfig& c) { return std::make_unique<KlObserver>(c, p.kl_bins); };
  }
  fail("observer method: expected one of ", names, "; got '", method, "'");
}

}  // namespace brecq::quant
