#pragma once
// Layer analysis: which layers of a model cannot be quantized well, and why. For every layer of
// the BN-folded model, at given weight/activation bit-widths, with ONLY that layer quantized:
//   - the SQNR of its weights (the library's weight quantizer: L2.4 range search, round to
//     nearest), against the SQNR the same quantizer reaches on a Gaussian of the same shape;
//   - the SQNR of the model's logits and of the layer's own output on calibration batches, with
//     only its weights quantized, only its input activation, and both;
//   - weight outlier statistics (max|w| / std(w), per-output-channel range spread, the fraction
//     of channels wider than kWideChannelFactor x the median) and its input activation's range
//     statistics (min, max, 0.1 / 99.9th percentiles, tail ratio);
//   - on a held-out labelled set, the top-1 drop and the share of predictions that change.
// A layer with a measured symptom (low weight SQNR, low logit SQNR, an accuracy drop) is
// diagnosed: the causes found (weight outliers, wide per-channel spread, heavy-tailed input
// activations) and a suggestion for each; the thresholds are the named constants below.
//
//   quant::LayerAnalyzer a(model, calib_batches, {.w_bits = 2, .a_bits = 4});
//   a.measure_accuracy(val, indices);           // optional: top-1 drop per layer
//   std::printf("%s", quant::analysis_table(a.report()).c_str());
//   write_text(path, quant::analysis_json(a.report()));
//
// "Only layer L quantized" means: L's weights replaced by their quantized value, and the
// activation point that feeds L (the block input for a block's first layer and its shortcut, the
// previous layer's output inside a block, the image for the stem) fake-quantized; every other
// weight and point stays FP. The model structure is data (nn::Model): nothing here names an
// architecture.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <memory>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "brecq/autograd/tape.hpp"
#include "brecq/io/dataset.hpp"
#include "brecq/io/safetensors_core.hpp"
#include "brecq/nn/fold_bn.hpp"
#include "brecq/nn/model.hpp"
#include "brecq/quant/observer.hpp"
#include "brecq/quant/progress.hpp"
#include "brecq/quant/qmodel.hpp"
#include "brecq/quant/quantizer.hpp"
#include "brecq/tensor/rng.hpp"

namespace brecq::quant {

// ---- thresholds of the diagnosis ----------------------------------------------------------------

/// Weight outliers: max|w| / std(w) over the folded weight tensor above this. A Gaussian of
/// 10^3..10^6 values reaches 3.3..4.9, a Laplacian 4.5..9.8: above 12 a few weights set the range.
/// (The ratio cannot exceed sqrt(n) for n weights: tensors under 144 weights are never flagged.)
inline constexpr double kWeightOutlierRatio = 12.0;
/// A channel is "wide" when its weight range (max - min) exceeds this many times the median
/// channel range.
inline constexpr double kWideChannelFactor = 3.0;
/// Wide per-channel spread: largest channel range / median channel range above this. A symptom
/// only for per-tensor weight quantization (one range for every channel); per-channel
/// quantization, the library's default, is immune, and then it is reported but never a cause.
inline constexpr double kChannelSpreadRatio = 8.0;
/// Percentiles of the activation statistics (and of the suggested clipping).
inline constexpr double kActPercentileHigh = 99.9;
inline constexpr double kActPercentileLow = 0.1;
/// Heavy-tailed input activations: max|x| / max(|p0.1|, |p99.9|) above this: the range that
/// min-max or a search must cover is set by less than 0.1 % of the values.
inline constexpr double kActTailRatio = 2.5;
/// Low weight SQNR: more than this many dB below the SQNR the same quantizer reaches on a
/// Gaussian tensor of the same shape (2 bits: about 9 dB; each further bit about 5-6 dB more).
inline constexpr double kWeightSqnrMarginDb = 3.0;
/// Low output SQNR: the model's logits, with only this layer (weights and input) quantized, below
/// this many dB (noise above about 18 % of the logits' RMS).
inline constexpr double kLowLogitSqnrDb = 15.0;
/// An accuracy drop (top-1 points on the held-out images, only this layer quantized) above this.
inline constexpr double kAccuracyDropPoints = 1.0;

// ---- settings and results -----------------------------------------------------------------------

struct AnalysisParams {
  int w_bits = 4;
  int a_bits = 4;           ///< 0: weights only (no activation measurements)
  bool per_channel = true;  ///< weight quantizer granularity (the library's default: per channel)
  int64_t act_images = 64;  ///< first calibration images for activation ranges and statistics
  uint64_t seed = 1029;     ///< of the Gaussian reference tensors
  /// Rank by the share of changed predictions first instead of the top-1 drop (for models whose
  /// labels mean nothing, e.g. random weights, where the drop is noise around 0).
  bool rank_by_flips = false;
  ProgressSink progress{};  ///< {} = silent
};

inline void validate(const AnalysisParams& p) {
  check(p.w_bits >= 2 && p.w_bits <= 8, "layer analysis: weight bits must be in [2, 8], got ",
        p.w_bits);
  check(p.a_bits == 0 || (p.a_bits >= 2 && p.a_bits <= 8),
        "layer analysis: activation bits must be 0 (off) or in [2, 8], got ", p.a_bits);
  check(p.act_images >= 1, "layer analysis: activation images must be >= 1, got ", p.act_images);
}

struct WeightStats {
  double max_abs_over_std = 0;  ///< max|w| / std(w) over the tensor
  double channel_spread = 0;    ///< largest / median per-output-channel range (max - min)
  double wide_channels = 0;     ///< fraction of channels with range > kWideChannelFactor x median
  int64_t channels = 0;
};

struct ActStats {
  double min = 0, max = 0;
  double p_low = 0, p_high = 0;  ///< kActPercentileLow / kActPercentileHigh percentiles
  double tail_ratio = 0;         ///< max|x| / max(|p_low|, |p_high|)
  int64_t values = 0;
};

/// SQNR in dB = 10 log10(sum y^2 / sum (yq - y)^2); +inf when there is no noise.
struct Sqnr {
  double signal = 0, noise = 0;
  double db() const {
    if (noise <= 0) return std::numeric_limits<double>::infinity();
    if (signal <= 0) return -std::numeric_limits<double>::infinity();
    return 10.0 * std::log10(signal / noise);
  }
};

/// One layer's analysis. SQNR fields are in dB; "_w": only its weights quantized, "_a": only its
/// input activation, no suffix: both.
struct LayerAnalysis {
  std::string name;
  std::string kind;  ///< "conv", "depthwise", "grouped" or "linear"
  int id = -1;
  int64_t params = 0;
  int in_point = -1;          ///< activation point feeding it, -1 if none
  std::string in_point_name;  ///< QuantModel::point_name of in_point
  WeightStats weight;
  ActStats act;  ///< of the input activation (values = 0 when not measured)
  double weight_sqnr = 0, weight_sqnr_gauss = 0;
  double logit_sqnr_w = 0, logit_sqnr_a = 0, logit_sqnr = 0;
  double out_sqnr_w = 0, out_sqnr_a = 0, out_sqnr = 0;
  bool accuracy_measured = false;
  double top1 = 0;   ///< % on the held-out images, only this layer quantized
  double drop = 0;   ///< FP top-1 minus top1, points
  double flips = 0;  ///< % of held-out images whose top-1 differs from the FP model's
  double score = 0;  ///< predicted badness from calibration data: -logit_sqnr
  std::vector<std::string> symptoms, causes, suggestions;
  bool flagged() const { return !symptoms.empty() || !causes.empty(); }
};

struct AnalysisReport {
  std::string arch;
  int w_bits = 0, a_bits = 0;
  bool per_channel = true;
  int64_t calib_images = 0, act_images = 0;
  int64_t eval_images = 0;  ///< 0: accuracy not measured
  std::string eval_source;  ///< where the held-out images came from (set by the caller)
  double fp_top1 = 0;
  std::vector<LayerAnalysis> layers;  ///< forward order
  std::vector<size_t> ranking;  ///< layer indices, worst first (drop, flips, score; or flips first)
  bool rank_by_flips = false;
  double spearman_score_drop = 0, spearman_score_flips = 0;
};

// ---- small statistics
// -----------------------------------------------------------------------------

namespace detail {

/// Average ranks (1-based; ties share their mean rank).
inline std::vector<double> average_ranks(const std::vector<double>& v) {
  std::vector<size_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), size_t{0});
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return v[a] < v[b]; });
  std::vector<double> r(v.size());
  for (size_t i = 0; i < idx.size();) {
    size_t j = i;
    while (j + 1 < idx.size() && v[idx[j + 1]] == v[idx[i]]) ++j;
    for (size_t k = i; k <= j; ++k) r[idx[k]] = 0.5 * static_cast<double>(i + j) + 1.0;
    i = j + 1;
  }
  return r;
}

/// The value below which a fraction q of the sorted values lie (linear interpolation).
inline double quantile_sorted(const std::vector<float>& s, double q) {
  if (s.empty()) return 0;
  const double pos = q * static_cast<double>(s.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, s.size() - 1);
  return s[lo] + (pos - static_cast<double>(lo)) * (static_cast<double>(s[hi]) - s[lo]);
}

inline void accumulate_sqnr(Sqnr& s, const Tensor& ref, const Tensor& q) {
  check(ref.shape() == q.shape(), "layer analysis: SQNR of ", q.shape(), " against ", ref.shape());
  Tensor rc = ref.contiguous(), qc = q.contiguous();
  const float* pr = rc.data<float>();
  const float* pq = qc.data<float>();
  double sig = 0, noise = 0;
  for (int64_t i = 0; i < rc.numel(); ++i) {
    const double d = static_cast<double>(pq[i]) - pr[i];
    sig += static_cast<double>(pr[i]) * pr[i];
    noise += d * d;
  }
  s.signal += sig;
  s.noise += noise;
}

inline double sqnr_db(const Tensor& ref, const Tensor& q) {
  Sqnr s;
  accumulate_sqnr(s, ref, q);
  return s.db();
}

inline std::string layer_kind(const nn::Layer& l) {
  if (l.kind == nn::LayerKind::linear) return "linear";
  if (l.conv.groups == 1) return "conv";
  return l.conv.groups == l.out_channels() && l.weight.dim(1) == 1 ? "depthwise" : "grouped";
}

/// Top-1 class of every row of logits [N, classes].
inline std::vector<int64_t> argmax_rows(const Tensor& logits) {
  Tensor lc = logits.contiguous();
  const int64_t n = logits.dim(0), c = logits.dim(1);
  std::vector<int64_t> out(static_cast<size_t>(n));
  const float* p = lc.data<float>();
  for (int64_t i = 0; i < n; ++i)
    out[static_cast<size_t>(i)] = std::max_element(p + i * c, p + (i + 1) * c) - (p + i * c);
  return out;
}

}  // namespace detail

/// Spearman rank correlation of a and b (average ranks for ties); 0 when either is constant.
inline double spearman(const std::vector<double>& a, const std::vector<double>& b) {
  check(a.size() == b.size(), "spearman: ", a.size(), " values against ", b.size());
  if (a.size() < 2) return 0;
  const std::vector<double> ra = detail::average_ranks(a), rb = detail::average_ranks(b);
  const double n = static_cast<double>(a.size()), mean = (n + 1) / 2;
  double sab = 0, saa = 0, sbb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    sab += (ra[i] - mean) * (rb[i] - mean);
    saa += (ra[i] - mean) * (ra[i] - mean);
    sbb += (rb[i] - mean) * (rb[i] - mean);
  }
  return saa > 0 && sbb > 0 ? sab / std::sqrt(saa * sbb) : 0.0;
}

/// Outlier statistics of a weight tensor (dim 0 = output channels).
inline WeightStats weight_stats(const Tensor& w) {
  check(w.ndim() >= 2 && w.numel() > 0, "weight_stats: expected a weight [out, ...], got ",
        w.shape());
  Tensor wc = w.contiguous();
  const float* p = wc.data<float>();
  const int64_t n = w.numel(), C = w.dim(0), per = n / C;
  double sum = 0, sq = 0, max_abs = 0;
  for (int64_t i = 0; i < n; ++i) {
    sum += p[i];
    max_abs = std::max(max_abs, std::fabs(static_cast<double>(p[i])));
  }
  const double mean = sum / static_cast<double>(n);
  for (int64_t i = 0; i < n; ++i) sq += (p[i] - mean) * (p[i] - mean);
  const double sd = std::sqrt(sq / static_cast<double>(n));
  std::vector<double> range(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) {
    const auto [lo, hi] = std::minmax_element(p + c * per, p + (c + 1) * per);
    range[static_cast<size_t>(c)] = static_cast<double>(*hi) - *lo;
  }
  std::vector<double> sorted = range;
  std::sort(sorted.begin(), sorted.end());
  const size_t m = sorted.size();
  const double median = m % 2 ? sorted[m / 2] : 0.5 * (sorted[m / 2 - 1] + sorted[m / 2]);
  WeightStats s;
  s.channels = C;
  s.max_abs_over_std = sd > 0 ? max_abs / sd : (max_abs > 0 ? INFINITY : 0.0);
  s.channel_spread = median > 0 ? sorted.back() / median : (sorted.back() > 0 ? INFINITY : 1.0);
  int64_t wide = 0;
  for (double r : range) wide += r > kWideChannelFactor * median;
  s.wide_channels = static_cast<double>(wide) / static_cast<double>(C);
  return s;
}

/// Range statistics of activation values (consumed: sorted in place).
inline ActStats act_stats(std::vector<float>& v) {
  ActStats s;
  s.values = static_cast<int64_t>(v.size());
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.min = v.front(), s.max = v.back();
  s.p_low = detail::quantile_sorted(v, kActPercentileLow / 100.0);
  s.p_high = detail::quantile_sorted(v, kActPercentileHigh / 100.0);
  const double peak = std::max(std::fabs(s.min), std::fabs(s.max));
  const double bulk = std::max(std::fabs(s.p_low), std::fabs(s.p_high));
  s.tail_ratio = bulk > 0 ? peak / bulk : (peak > 0 ? INFINITY : 1.0);
  return s;
}

/// Sets the symptoms, causes and suggestions of a layer from its measurements and the constants
/// above (called by LayerAnalyzer after each measurement; idempotent). Symptoms are measured (low
/// weight SQNR, low logit SQNR, an accuracy drop); causes are statistics over their thresholds
/// (weight outliers, wide per-channel spread, heavy-tailed input activations). A layer with
/// either is flagged; a symptom without a statistical cause gets the cause "low SQNR".
inline void diagnose(LayerAnalysis& l, const AnalysisReport& r) {
  l.symptoms.clear(), l.causes.clear(), l.suggestions.clear();
  auto add = [](std::vector<std::string>& v, const std::string& s) {
    if (std::find(v.begin(), v.end(), s) == v.end()) v.push_back(s);
  };
  if (l.weight_sqnr < l.weight_sqnr_gauss - kWeightSqnrMarginDb) add(l.symptoms, "low weight SQNR");
  if (l.logit_sqnr < kLowLogitSqnrDb) add(l.symptoms, "low output SQNR");
  if (l.accuracy_measured && l.drop > kAccuracyDropPoints) add(l.symptoms, "accuracy drop");
  const bool act_measured = r.a_bits > 0 && l.act.values > 0;
  if (l.weight.max_abs_over_std > kWeightOutlierRatio) {
    add(l.causes, "weight outliers");
    add(l.suggestions, "keep weights at 8 bits");
  }
  if (!r.per_channel && l.weight.channel_spread > kChannelSpreadRatio) {
    add(l.causes, "wide per-channel spread");
    add(l.suggestions, "per-channel weights");
  }
  if (act_measured && l.act.tail_ratio > kActTailRatio) {
    add(l.causes, "heavy-tailed activations");
    add(l.suggestions, "clip activations at the 99.9th percentile");
  }
  if (l.causes.empty() && !l.symptoms.empty()) {
    add(l.causes, "low SQNR");
    // The part whose noise dominates the logits is the one to keep wider.
    if (act_measured && l.logit_sqnr_a < l.logit_sqnr_w)
      add(l.suggestions, "keep its input activation at 8 bits");
    else
      add(l.suggestions, "keep weights at 8 bits");
  }
}

// ---- the analyzer
// ---------------------------------------------------------------------------------

/// Holds the BN-folded model, every layer's quantized weight and every input point's quantizer,
/// so that "only layer i quantized" passes can be run on any data.
class LayerAnalyzer {
 public:
  /// Folds BatchNorm, quantizes every weight, sets activation ranges on the first act_images
  /// calibration images (the library's observer, FP activations upstream) and measures the SQNRs
  /// on every batch of `calib` ([N, C, H, W] each).
  LayerAnalyzer(const nn::Model& fp, const std::vector<Tensor>& calib, const AnalysisParams& p)
      : model_(fp.clone()), params_(p) {
    validate(p);
    check(!calib.empty(), "layer analysis: no calibration batch");
    for (const Tensor& b : calib)
      check(b.ndim() == 4 && b.dim(0) >= 1 && b.dim(1) == fp.in_channels,
            "layer analysis: calibration batches must be [N, ", fp.in_channels, ", H, W], got ",
            b.shape());
    NoGrad ng;
    nn::fold_batchnorm(model_);
    report_.arch = model_.arch;
    report_.w_bits = p.w_bits, report_.a_bits = p.a_bits, report_.per_channel = p.per_channel;
    report_.rank_by_flips = p.rank_by_flips;
    for (const Tensor& b : calib) report_.calib_images += b.dim(0);
    const std::vector<nn::Layer*> layers = model_.layers();
    check(!layers.empty(), "layer analysis: model ", model_.arch, " has no layers");
    const std::vector<int> in_points = input_points();
    // Point names as QuantModel gives them (for --out and the report).
    const QuantModel names(model_, QuantSettings{.fold_batchnorm = false}, false);
    for (const nn::Layer* l : layers) {
      LayerAnalysis a;
      a.name = l->name, a.kind = detail::layer_kind(*l), a.id = l->id;
      a.params = l->weight.numel() + (l->bias.defined() ? l->bias.numel() : 0);
      a.in_point = in_points[static_cast<size_t>(l->id)];
      if (a.in_point >= 0) a.in_point_name = names.point_name(a.in_point);
      a.weight = weight_stats(l->weight);
      report_.layers.push_back(std::move(a));
    }
    quantize_weights();
    if (p.a_bits > 0) init_activations(calib);
    measure_sqnr(calib);
    for (LayerAnalysis& a : report_.layers) diagnose(a, report_);
  }

  const AnalysisReport& report() const { return report_; }
  AnalysisReport& report() { return report_; }
  const nn::Model& folded_model() const { return model_; }

  /// The model's logits with only layer `index` (forward order) quantized: its weights if
  /// `weights`, its input activation if `act`.
  Tensor forward_only(const Tensor& x, size_t index, bool weights, bool act,
                      const std::function<void(const Tensor&)>& layer_out = {}) const {
    return model_.forward(x, only_hooks(index, weights, act, layer_out));
  }

  /// Top-1 on ds[indices] of the FP model and of every "only layer i quantized" model (weights
  /// and input activation), the share of changed predictions, the ranking and the Spearman rank
  /// correlation of the calibration score with the measured drop.
  template <LabeledDataset D>
  void measure_accuracy(const D& ds, std::span<const int64_t> indices, int64_t batch = 100) {
    check(!indices.empty(), "layer analysis: no held-out image to measure accuracy on");
    check(batch >= 1, "layer analysis: batch must be >= 1, got ", batch);
    NoGrad ng;
    const size_t L = report_.layers.size();
    std::vector<int64_t> hits(L, 0), flips(L, 0);
    int64_t fp_hits = 0, n = 0, done = 0;
    const int64_t total = static_cast<int64_t>(indices.size());
    ProgressBar bar("[analyze accuracy]", total * static_cast<int64_t>(L + 1), params_.progress);
    for (int64_t b = 0; b < total; b += batch) {
      const int64_t m = std::min(batch, total - b);
      const Batch x = gather(ds, indices.subspan(static_cast<size_t>(b), static_cast<size_t>(m)));
      for (int label : x.labels)
        check(label >= 0 && label < model_.num_classes, "layer analysis: label ", label,
              " outside the model's ", model_.num_classes, " classes");
      const std::vector<int64_t> fp = detail::argmax_rows(model_.forward(x.images));
      for (int64_t i = 0; i < m; ++i)
        fp_hits += fp[static_cast<size_t>(i)] == x.labels[static_cast<size_t>(i)];
      bar.update(done += m, "FP");
      for (size_t l = 0; l < L; ++l) {
        const std::vector<int64_t> q =
            detail::argmax_rows(forward_only(x.images, l, true, params_.a_bits > 0));
        for (int64_t i = 0; i < m; ++i) {
          hits[l] += q[static_cast<size_t>(i)] == x.labels[static_cast<size_t>(i)];
          flips[l] += q[static_cast<size_t>(i)] != fp[static_cast<size_t>(i)];
        }
        bar.update(done += m, report_.layers[l].name);
      }
      n += m;
    }
    bar.finish();
    const double dn = static_cast<double>(n);
    report_.eval_images = n;
    report_.fp_top1 = 100.0 * static_cast<double>(fp_hits) / dn;
    for (size_t l = 0; l < L; ++l) {
      LayerAnalysis& a = report_.layers[l];
      a.accuracy_measured = true;
      a.top1 = 100.0 * static_cast<double>(hits[l]) / dn;
      a.drop = report_.fp_top1 - a.top1;
      a.flips = 100.0 * static_cast<double>(flips[l]) / dn;
      diagnose(a, report_);
    }
    rank();
  }

 private:
  /// The activation point feeding each layer (by id), -1 where none does.
  std::vector<int> input_points() const {
    std::vector<int> out(model_.layers().size(), -1);
    int prev = model_.input_point;
    for (const nn::Block& b : model_.blocks) {
      int in = prev;
      for (const nn::Layer& l : b.layers) {
        out[static_cast<size_t>(l.id)] = in;
        in = l.act_point;
      }
      in = prev;
      for (const nn::Layer& l : b.shortcut_layers) {
        out[static_cast<size_t>(l.id)] = in;
        in = l.act_point;
      }
      prev = b.out_point;
    }
    return out;
  }

  void quantize_weights() {
    Rng rng(params_.seed);
    for (const nn::Layer* l : model_.layers()) {
      const QuantizerConfig c{.bits = params_.w_bits, .per_channel = params_.per_channel};
      UniformQuantizer q{.config = c};
      std::unique_ptr<RangeObserver> o = make_observer(c);
      o->observe(l->weight);
      o->decide(q);
      wq_.push_back(nearest_weight(l->weight, q));
      // The same quantizer on a Gaussian tensor of the same shape: what "normal" weights reach.
      const Tensor g = Tensor::randn(l->weight.shape(), rng);
      UniformQuantizer qg{.config = c};
      init_range(qg, g);
      LayerAnalysis& a = report_.layers[static_cast<size_t>(l->id)];
      a.weight_sqnr = detail::sqnr_db(l->weight, wq_.back());
      a.weight_sqnr_gauss = detail::sqnr_db(g, nearest_weight(g, qg));
    }
  }

  /// Ranges (QuantModel's convention: the image min-max, every other point by the L2.4 search)
  /// and statistics of every input point, from FP activations of the first act_images images.
  void init_activations(const std::vector<Tensor>& calib) {
    const int P = model_.num_points();
    aq_.assign(static_cast<size_t>(P), UniformQuantizer{});
    std::vector<bool> used(static_cast<size_t>(P), false);
    for (const LayerAnalysis& a : report_.layers)
      if (a.in_point >= 0) used[static_cast<size_t>(a.in_point)] = true;
    std::vector<std::unique_ptr<RangeObserver>> obs(static_cast<size_t>(P));
    std::vector<std::vector<float>> values(static_cast<size_t>(P));
    for (int p = 0; p < P; ++p) {
      if (!used[static_cast<size_t>(p)]) continue;
      QuantizerConfig& c = aq_[static_cast<size_t>(p)].config;
      c = {.bits = params_.a_bits,
           .init = p == model_.input_point ? RangeInit::minmax : RangeInit::lp_search};
      obs[static_cast<size_t>(p)] = make_observer(c);
    }
    nn::ForwardHooks h;
    h.activation = [&](int p, const Tensor& x) {
      if (!used[static_cast<size_t>(p)]) return x;
      obs[static_cast<size_t>(p)]->observe(x);
      Tensor xc = x.contiguous();
      std::vector<float>& v = values[static_cast<size_t>(p)];
      v.insert(v.end(), xc.data<float>(), xc.data<float>() + xc.numel());
      return x;
    };
    int64_t left = params_.act_images;
    for (const Tensor& b : calib) {
      if (left <= 0) break;
      const int64_t m = std::min(left, b.dim(0));
      model_.forward(b.narrow(0, 0, m), h);
      left -= m;
    }
    report_.act_images = params_.act_images - std::max<int64_t>(left, 0);
    for (int p = 0; p < P; ++p) {
      if (!used[static_cast<size_t>(p)]) continue;
      obs[static_cast<size_t>(p)]->decide(aq_[static_cast<size_t>(p)]);
      const ActStats s = act_stats(values[static_cast<size_t>(p)]);
      std::vector<float>().swap(values[static_cast<size_t>(p)]);
      for (LayerAnalysis& a : report_.layers)
        if (a.in_point == p) a.act = s;
    }
  }

  nn::ForwardHooks only_hooks(size_t index, bool weights, bool act,
                              const std::function<void(const Tensor&)>& layer_out) const {
    const int id = report_.layers[index].id;
    const int point = act && params_.a_bits > 0 ? report_.layers[index].in_point : -1;
    nn::ForwardHooks h;
    if (weights)
      h.weight = [this, id](const nn::Layer& l) {
        return l.id == id ? wq_[static_cast<size_t>(id)] : l.weight;
      };
    if (point >= 0)
      h.activation = [this, point](int p, const Tensor& x) {
        return p == point ? fake_quantize(x, aq_[static_cast<size_t>(p)]) : x;
      };
    if (layer_out)
      h.layer_output = [id, layer_out](const nn::Layer& l, const Tensor&, const Tensor& y) {
        if (l.id == id) layer_out(y);
        return y;
      };
    return h;
  }

  void measure_sqnr(const std::vector<Tensor>& calib) {
    const size_t L = report_.layers.size();
    const bool act = params_.a_bits > 0;
    // [layer][mode]: logits and layer output; modes weights, activation, both.
    std::vector<std::array<Sqnr, 3>> logit(L), out(L);
    ProgressBar bar("[analyze SQNR]", static_cast<int64_t>(calib.size() * L), params_.progress);
    int64_t done = 0;
    for (const Tensor& x : calib) {
      std::vector<Tensor> fp_out(L);
      nn::ForwardHooks rec;
      rec.layer_output = [&](const nn::Layer& l, const Tensor&, const Tensor& y) {
        fp_out[static_cast<size_t>(l.id)] = y;
        return y;
      };
      const Tensor fp = model_.forward(x, rec);
      for (size_t l = 0; l < L; ++l) {
        const Tensor& ref = fp_out[static_cast<size_t>(report_.layers[l].id)];
        for (int mode = 0; mode < 3; ++mode) {
          const bool w = mode != 1, a = mode != 0;
          if (a && (!act || report_.layers[l].in_point < 0)) continue;
          Tensor y;
          const Tensor logits = forward_only(x, l, w, a, [&](const Tensor& t) { y = t; });
          detail::accumulate_sqnr(logit[l][static_cast<size_t>(mode)], fp, logits);
          detail::accumulate_sqnr(out[l][static_cast<size_t>(mode)], ref, y);
        }
        bar.update(++done, report_.layers[l].name);
      }
    }
    bar.finish();
    for (size_t l = 0; l < L; ++l) {
      LayerAnalysis& a = report_.layers[l];
      const bool has_a = act && a.in_point >= 0;
      a.logit_sqnr_w = logit[l][0].db(), a.out_sqnr_w = out[l][0].db();
      a.logit_sqnr_a = has_a ? logit[l][1].db() : INFINITY;
      a.out_sqnr_a = has_a ? out[l][1].db() : INFINITY;
      a.logit_sqnr = has_a ? logit[l][2].db() : a.logit_sqnr_w;
      a.out_sqnr = has_a ? out[l][2].db() : a.out_sqnr_w;
      a.score = -a.logit_sqnr;
    }
    rank();
  }

  void rank() {
    AnalysisReport& r = report_;
    r.ranking.resize(r.layers.size());
    std::iota(r.ranking.begin(), r.ranking.end(), size_t{0});
    std::stable_sort(r.ranking.begin(), r.ranking.end(), [&](size_t i, size_t j) {
      const LayerAnalysis &a = r.layers[i], &b = r.layers[j];
      if (r.rank_by_flips && a.flips != b.flips) return a.flips > b.flips;
      if (a.drop != b.drop) return a.drop > b.drop;
      if (a.flips != b.flips) return a.flips > b.flips;
      return a.score > b.score;
    });
    if (r.eval_images == 0) return;
    std::vector<double> score, drop, flips;
    for (const LayerAnalysis& a : r.layers) {
      score.push_back(a.score), drop.push_back(a.drop), flips.push_back(a.flips);
    }
    r.spearman_score_drop = spearman(score, drop);
    r.spearman_score_flips = spearman(score, flips);
  }

  nn::Model model_;
  AnalysisParams params_;
  AnalysisReport report_;
  std::vector<Tensor> wq_;            ///< quantized weights, by layer id
  std::vector<UniformQuantizer> aq_;  ///< by activation point (initialised where used)
};

// ---- output
// ---------------------------------------------------------------------------------------

inline constexpr const char* kAnalysisFormat = "brecq-analysis-1";

namespace detail {

/// A finite number as JSON (%.6g), null for inf / NaN.
inline std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

inline std::string json_string(const std::string& s) {
  std::string out;
  brecq::detail::io::json_append_string(out, s);
  return out;
}

inline std::string json_strings(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + json_string(v[i]);
  return out + "]";
}

}  // namespace detail

/// The report as JSON (format kAnalysisFormat): settings, thresholds, one object per layer in
/// forward order, the ranking (layer names, worst first) and the rank correlations.
inline std::string analysis_json(const AnalysisReport& r) {
  using detail::json_number;
  using detail::json_string;
  std::string s = "{\n  \"format\": " + json_string(kAnalysisFormat);
  s += ",\n  \"arch\": " + json_string(r.arch);
  s += ",\n  \"w_bits\": " + std::to_string(r.w_bits) + ", \"a_bits\": " + std::to_string(r.a_bits);
  s += ",\n  \"weight_granularity\": " + json_string(r.per_channel ? "channel" : "tensor");
  s += ",\n  \"calib_images\": " + std::to_string(r.calib_images) +
       ", \"act_images\": " + std::to_string(r.act_images);
  s += ",\n  \"eval_images\": " + std::to_string(r.eval_images) +
       ", \"eval_source\": " + json_string(r.eval_source);
  s += ",\n  \"ranked_by\": " + json_string(r.rank_by_flips ? "flips" : "drop");
  s += ",\n  \"fp_top1\": " + (r.eval_images ? json_number(r.fp_top1) : "null");
  s += ",\n  \"thresholds\": {\"weight_outlier_ratio\": " + json_number(kWeightOutlierRatio) +
       ", \"wide_channel_factor\": " + json_number(kWideChannelFactor) +
       ", \"channel_spread_ratio\": " + json_number(kChannelSpreadRatio) +
       ", \"act_percentile_low\": " + json_number(kActPercentileLow) +
       ", \"act_percentile_high\": " + json_number(kActPercentileHigh) +
       ", \"act_tail_ratio\": " + json_number(kActTailRatio) +
       ", \"weight_sqnr_margin_db\": " + json_number(kWeightSqnrMarginDb) +
       ", \"low_logit_sqnr_db\": " + json_number(kLowLogitSqnrDb) +
       ", \"accuracy_drop_points\": " + json_number(kAccuracyDropPoints) + "}";
  s += ",\n  \"layers\": [";
  for (size_t i = 0; i < r.layers.size(); ++i) {
    const LayerAnalysis& a = r.layers[i];
    s += std::string(i ? "," : "") + "\n    {\"name\": " + json_string(a.name) +
         ", \"kind\": " + json_string(a.kind) + ", \"params\": " + std::to_string(a.params) +
         ", \"input_point\": " + (a.in_point >= 0 ? json_string(a.in_point_name) : "null");
    s += ",\n     \"weight\": {\"max_abs_over_std\": " + json_number(a.weight.max_abs_over_std) +
         ", \"channel_spread\": " + json_number(a.weight.channel_spread) +
         ", \"wide_channel_fraction\": " + json_number(a.weight.wide_channels) +
         ", \"channels\": " + std::to_string(a.weight.channels) + "}";
    if (a.act.values > 0)
      s += ",\n     \"activation\": {\"min\": " + json_number(a.act.min) +
           ", \"max\": " + json_number(a.act.max) + ", \"p0.1\": " + json_number(a.act.p_low) +
           ", \"p99.9\": " + json_number(a.act.p_high) +
           ", \"tail_ratio\": " + json_number(a.act.tail_ratio) +
           ", \"values\": " + std::to_string(a.act.values) + "}";
    else
      s += ",\n     \"activation\": null";
    s += ",\n     \"sqnr_db\": {\"weight\": " + json_number(a.weight_sqnr) +
         ", \"weight_gaussian\": " + json_number(a.weight_sqnr_gauss) +
         ", \"logits_w\": " + json_number(a.logit_sqnr_w) +
         ", \"logits_a\": " + json_number(a.logit_sqnr_a) +
         ", \"logits\": " + json_number(a.logit_sqnr) +
         ", \"output_w\": " + json_number(a.out_sqnr_w) +
         ", \"output_a\": " + json_number(a.out_sqnr_a) +
         ", \"output\": " + json_number(a.out_sqnr) + "}";
    s += ",\n     \"score\": " + json_number(a.score);
    if (a.accuracy_measured)
      s += ", \"top1\": " + json_number(a.top1) + ", \"drop\": " + json_number(a.drop) +
           ", \"flips_percent\": " + json_number(a.flips);
    s += ",\n     \"flagged\": " + std::string(a.flagged() ? "true" : "false") +
         ", \"symptoms\": " + detail::json_strings(a.symptoms) +
         ", \"causes\": " + detail::json_strings(a.causes) +
         ", \"suggestions\": " + detail::json_strings(a.suggestions) + "}";
  }
  s += "\n  ],\n  \"ranking\": [";
  for (size_t i = 0; i < r.ranking.size(); ++i)
    s += (i ? ", " : "") + json_string(r.layers[r.ranking[i]].name);
  s += "]";
  if (r.eval_images)
    s += ",\n  \"spearman_score_drop\": " + json_number(r.spearman_score_drop) +
         ",\n  \"spearman_score_flips\": " + json_number(r.spearman_score_flips);
  return s + "\n}\n";
}

/// The report as an aligned text table (one row per layer, worst first when accuracy was
/// measured, forward order otherwise), then the diagnosis of every flagged layer.
inline std::string analysis_table(const AnalysisReport& r) {
  auto num = [](double v, const char* fmt) {
    if (std::isinf(v)) return std::string(v > 0 ? "inf" : "-inf");
    char buf[32];
    std::snprintf(buf, sizeof buf, fmt, v);
    return std::string(buf);
  };
  size_t w = 5;
  for (const LayerAnalysis& a : r.layers) w = std::max(w, a.name.size());
  const bool acc = r.eval_images > 0, act = r.a_bits > 0;
  char line[512];
  std::string s;
  std::snprintf(line, sizeof line, "%-4s %-*s %-9s %7s %7s %7s %7s %7s %7s %7s %6s %6s %5s", "rank",
                static_cast<int>(w), "layer", "kind", "W-SQNR", "gauss", "L-SQNRw", "L-SQNRa",
                "L-SQNR", "O-SQNR", "max/std", "spread", "wide", "tail");
  s += line;
  if (acc) {
    std::snprintf(line, sizeof line, " %7s %6s %6s", "top-1", "drop", "flips");
    s += line;
  }
  s += "  diagnosis\n";
  for (size_t k = 0; k < r.layers.size(); ++k) {
    const LayerAnalysis& a = r.layers[acc ? r.ranking[k] : k];
    std::snprintf(line, sizeof line, "%-4zu %-*s %-9s %7s %7s %7s %7s %7s %7s %7s %6s %6s %5s",
                  k + 1, static_cast<int>(w), a.name.c_str(), a.kind.c_str(),
                  num(a.weight_sqnr, "%.2f").c_str(), num(a.weight_sqnr_gauss, "%.2f").c_str(),
                  num(a.logit_sqnr_w, "%.2f").c_str(),
                  act && a.in_point >= 0 ? num(a.logit_sqnr_a, "%.2f").c_str() : "-",
                  num(a.logit_sqnr, "%.2f").c_str(), num(a.out_sqnr, "%.2f").c_str(),
                  num(a.weight.max_abs_over_std, "%.1f").c_str(),
                  num(a.weight.channel_spread, "%.1f").c_str(),
                  num(100 * a.weight.wide_channels, "%.0f%%").c_str(),
                  a.act.values ? num(a.act.tail_ratio, "%.2f").c_str() : "-");
    s += line;
    if (acc) {
      std::snprintf(line, sizeof line, " %7.2f %6.2f %6.2f", a.top1, a.drop, a.flips);
      s += line;
    }
    std::string d;
    for (size_t i = 0; i < a.causes.size(); ++i) d += (i ? ", " : "") + a.causes[i];
    s += "  " + (a.flagged() ? d : std::string("ok")) + "\n";
  }
  if (act) {
    s += "\ninput activations (first " + std::to_string(r.act_images) + " calibration images):\n";
    std::snprintf(line, sizeof line, "%-*s %-*s %9s %9s %9s %9s %6s\n", static_cast<int>(w),
                  "layer", static_cast<int>(w), "point", "min", "max", "p0.1", "p99.9", "tail");
    s += line;
    for (const LayerAnalysis& a : r.layers) {
      if (!a.act.values) continue;
      std::snprintf(line, sizeof line, "%-*s %-*s %9.4g %9.4g %9.4g %9.4g %6s\n",
                    static_cast<int>(w), a.name.c_str(), static_cast<int>(w),
                    a.in_point_name.c_str(), a.act.min, a.act.max, a.act.p_low, a.act.p_high,
                    num(a.act.tail_ratio, "%.2f").c_str());
      s += line;
    }
  }
  s += "\ndiagnosis (layers that cannot be quantized well):\n";
  int flagged = 0;
  for (size_t k = 0; k < r.layers.size(); ++k) {
    const LayerAnalysis& a = r.layers[acc ? r.ranking[k] : k];
    if (!a.flagged()) continue;
    ++flagged;
    std::string sym, sug, cau;
    for (const std::string& x : a.symptoms) sym += (sym.empty() ? "" : ", ") + x;
    for (const std::string& x : a.causes) cau += (cau.empty() ? "" : ", ") + x;
    for (const std::string& x : a.suggestions) sug += (sug.empty() ? "" : "; ") + x;
    s += "  " + a.name + ": " + sym + " <- " + cau + "; suggestion: " + sug + "\n";
  }
  if (!flagged) s += "  none\n";
  return s;
}

/// The settings of a quantized model with the suggestions of a report applied where a
/// QuantModel can express them, for the `max_layers` worst flagged layers in the report's ranking
/// whose suggestions change the settings (0: every flagged layer): the weights of layers told
/// "keep weights at 8 bits" at 8 bits, the input point of layers told "keep its input activation
/// at 8 bits" or to clip heavy-tailed activations at 8 bits (percentile clipping itself is an
/// observer choice, not a setting). The first and last layers' weights (base.first_last_bits)
/// and the image (base.input_bits) keep their own settings.
inline QuantSettings suggested_settings(const AnalysisReport& r, QuantSettings base,
                                        size_t max_layers = 0) {
  size_t applied = 0;
  for (size_t k : r.ranking) {
    const LayerAnalysis& a = r.layers[k];
    if (!a.flagged()) continue;
    if (max_layers > 0 && applied == max_layers) break;
    const bool edge = k == 0 || k + 1 == r.layers.size();
    bool changed = false;
    for (const std::string& s : a.suggestions) {
      if (s == "keep weights at 8 bits" && !edge && !base.layer_w_bits.count(a.name) &&
          base.w_bits < 8) {
        base.layer_w_bits[a.name] = 8;
        changed = true;
      }
      const bool act = s == "keep its input activation at 8 bits" || s.starts_with("clip");
      if (act && base.a_bits > 0 && base.a_bits < 8 && a.in_point >= 0 &&
          a.in_point_name != "input" && !base.point_a_bits.count(a.in_point_name)) {
        base.point_a_bits[a.in_point_name] = 8;
        changed = true;
      }
    }
    applied += changed;
  }
  return base;
}

}  // namespace brecq::quant
