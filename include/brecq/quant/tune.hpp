#pragma once
// Tuning of the calibration baselines (calibrate.hpp): a seeded random or a grid search over
// quantization settings — activation observer, percentile value, per-channel or per-tensor
// weights, symmetric or asymmetric weights, weight range rule, bit-width of the first and last
// layers, bias correction — that keeps the setting with the best score on a held-out split of
// the calibration images. Each trial calibrates on the other part of the split.
//
// The images come through an ImageSource, the only way tune reads any: it takes no test data and
// has no parameter for any. The split is a seeded permutation of the source: its first `images`
// entries, of which the first `heldout` are held out and the rest calibrate, so the two parts are
// disjoint by construction (TuneReport records both). The held-out score is, by
// TuneParams::score:
// - agreement (default): top-1 agreement, in %, of the quantized model's predictions with the FP
//   model's on the held-out images; needs no label, as BRECQ's calibration images have none;
// - labels: top-1 accuracy, in %, against the source's labels (the class folders of an
//   ImageFolder calibration directory).
//
//   quant::FolderSource calib("calib/", ImagePreprocess::cifar());
//   quant::TuneReport r = quant::tune(fp_model, calib, {.bits = {.w_bits = 4, .a_bits = 4}});
//   quant::save_quantized(*r.best_model, options, "best.safetensors");
#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "brecq/autograd/tape.hpp"
#include "brecq/io/dataset.hpp"
#include "brecq/nn/evaluate.hpp"
#include "brecq/quant/calibrate.hpp"
#include "brecq/quant/observer.hpp"
#include "brecq/quant/qmodel.hpp"
#include "brecq/quant/serialize.hpp"

namespace brecq::quant {

// ---- image source -----------------------------------------------------------------------------

/// Numbered images with labels, read one at a time: all tune sees of the calibration data.
/// load and label must be safe to call concurrently.
class ImageSource {
 public:
  virtual ~ImageSource() = default;
  virtual int64_t size() const = 0;
  /// Image i as float [C, H, W], preprocessed.
  virtual Tensor load(int64_t i) const = 0;
  /// The label of image i (class folder index); read only with TuneScore::labels.
  virtual int label(int64_t i) const = 0;
  /// Where image i comes from (a path), for reports.
  virtual std::string name(int64_t i) const = 0;
};

/// An ImageFolder (root/<class>/<image>) as an ImageSource.
class FolderSource : public ImageSource {
 public:
  FolderSource(const std::string& root, ImagePreprocess preprocess) : folder_(root, preprocess) {}
  int64_t size() const override { return folder_.size(); }
  Tensor load(int64_t i) const override { return folder_.load(i, folder_.preprocess()); }
  int label(int64_t i) const override { return folder_.label(i); }
  std::string name(int64_t i) const override { return folder_.path(i); }
  const ImageFolder& folder() const { return folder_; }

 private:
  ImageFolder folder_;
};

// ---- search space -----------------------------------------------------------------------------

/// One point of the search space.
struct TuneSetting {
  std::string method = "kl";  ///< an observer_methods() name, or "datafree"
  float percentile = 99.99f;  ///< with method percentile
  bool per_channel = true;    ///< weights: one range per output channel, or one per layer
  bool symmetric = false;     ///< weights: zero point fixed at the middle of the grid
  RangeInit w_range = RangeInit::lp_search;  ///< weight ranges: L_p search or min-max
  int first_last_bits = 8;                   ///< first conv and last FC (and the stem's output)
  bool bias_correction = false;

  /// "method=kl per_channel=on symmetric=off w_range=lp first_last=8 bias_corr=off" (the
  /// percentile only with method percentile).
  std::string describe() const {
    std::ostringstream s;
    s << "method=" << method;
    if (method == "percentile") s << " percentile=" << percentile;
    s << " per_channel=" << (per_channel ? "on" : "off")
      << " symmetric=" << (symmetric ? "on" : "off")
      << " w_range=" << (w_range == RangeInit::minmax ? "minmax" : "lp")
      << " first_last=" << first_last_bits << " bias_corr=" << (bias_correction ? "on" : "off");
    return s.str();
  }
};

/// The values each setting takes; the space is their product (percentiles only with the
/// percentile method).
struct TuneSpace {
  std::vector<std::string> methods{"minmax", "ema", "percentile", "mse", "kl", "datafree"};
  std::vector<float> percentiles{99.9f, 99.99f, 99.999f};
  std::vector<bool> per_channel{true, false};
  std::vector<bool> symmetric{false, true};
  std::vector<RangeInit> w_range{RangeInit::lp_search, RangeInit::minmax};
  std::vector<int> first_last_bits{8};
  std::vector<bool> bias_correction{false, true};
};

inline void validate(const TuneSpace& s) {
  std::vector<std::string> known = observer_methods();
  known.push_back("datafree");
  check(!s.methods.empty() && !s.per_channel.empty() && !s.symmetric.empty() &&
            !s.w_range.empty() && !s.first_last_bits.empty() && !s.bias_correction.empty(),
        "tune: every dimension of the search space needs at least one value");
  for (const std::string& m : s.methods)
    check(std::find(known.begin(), known.end(), m) != known.end(), "tune: method '", m,
          "' is not one of minmax, ema, percentile, mse, kl, datafree");
  if (std::find(s.methods.begin(), s.methods.end(), "percentile") != s.methods.end())
    check(!s.percentiles.empty(), "tune: the percentile method needs at least one percentile");
  for (float p : s.percentiles)
    check(p > 0.0f && p <= 100.0f, "tune: percentile must be in (0, 100], got ", p);
  for (int b : s.first_last_bits)
    check(b >= 2 && b <= 8, "tune: first/last layer bits must be in [2, 8], got ", b);
}

/// Every setting of the space, in a fixed order (methods outermost, bias correction innermost).
inline std::vector<TuneSetting> enumerate(const TuneSpace& space) {
  validate(space);
  std::vector<TuneSetting> out;
  for (const std::string& m : space.methods) {
    const std::vector<float> ps =
        m == "percentile" ? space.percentiles : std::vector<float>{TuneSetting{}.percentile};
    for (float p : ps)
      for (bool pc : space.per_channel)
        for (bool sym : space.symmetric)
          for (RangeInit wr : space.w_range)
            for (int fl : space.first_last_bits)
              for (bool bc : space.bias_correction)
                out.push_back({.method = m,
                               .percentile = p,
                               .per_channel = pc,
                               .symmetric = sym,
                               .w_range = wr,
                               .first_last_bits = fl,
                               .bias_correction = bc});
  }
  return out;
}

// ---- the search -------------------------------------------------------------------------------

enum class TuneSearch { random, grid };
enum class TuneScore { agreement, labels };

inline const char* tune_search_name(TuneSearch s) {
  return s == TuneSearch::grid ? "grid" : "random";
}
inline const char* tune_score_name(TuneScore s) {
  return s == TuneScore::labels ? "labels" : "agreement";
}

struct TuneTrial {
  size_t index = 0;  ///< order of the trial
  TuneSetting setting{};
  double score = 0;    ///< held-out score, % (see TuneParams::score)
  double seconds = 0;  ///< wall time of the trial (calibration and scoring)
};

struct TuneParams {
  /// Weight, activation (2..8: tune searches activation observers) and input bits; the first /
  /// last layer bits come from the space.
  QuantSettings bits{.w_bits = 4, .a_bits = 4};
  TuneSpace space{};
  TuneSearch search = TuneSearch::random;
  int64_t trials = 16;    ///< random search: distinct settings drawn (at most the space's size)
  uint64_t seed = 1029;   ///< the split's permutation and the random search's draw
  int64_t images = 1024;  ///< images of the source used (split = its first `images`)
  int64_t heldout = 256;  ///< of those, held out for the score; the rest calibrate
  TuneScore score = TuneScore::agreement;
  int64_t batch = 64;         ///< images per calibration batch and per scoring pass
  ObserverParams observer{};  ///< momentum (ema), lp (mse), kl bins; percentile from the setting
  float bn_k = 3.0f;          ///< datafree: ranges = BatchNorm mean +- k std
  /// datafree with an input quantizer: the input image's range (from the preprocessing).
  std::optional<ActivationRange> input_range{};
  /// Called after every trial (progress, a table row).
  std::function<void(const TuneTrial&)> on_trial{};
};

struct TuneReport {
  std::vector<TuneTrial> trials;
  size_t best = 0;  ///< index into trials: the first trial with the highest score
  std::vector<int64_t> calib_indices;      ///< source indices the trials calibrate on
  std::vector<int64_t> heldout_indices;    ///< source indices scored
  double fp_score = 0;                     ///< the FP model's held-out score (100 for agreement)
  double seconds = 0;                      ///< the whole search, image loading included
  std::optional<QuantModel> best_model{};  ///< the best trial's model, biases on the int32 grid
};

namespace tune_detail {

/// An ImageSource as a LabeledDataset (for gather: parallel decoding).
struct SourceDataset {
  const ImageSource* source;
  bool labels;
  int64_t size() const { return source->size(); }
  std::pair<Tensor, int> get(int64_t i) const {
    return {source->load(i), labels ? source->label(i) : 0};
  }
};

/// Row-wise argmax of logits [N, K] (the lowest class on ties, as nn::score counts).
inline std::vector<int> argmax_rows(const Tensor& logits) {
  const Tensor l = logits.contiguous();
  const int64_t N = l.dim(0), K = l.dim(1);
  std::vector<int> out(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) {
    const float* r = l.data<float>() + i * K;
    out[static_cast<size_t>(i)] = static_cast<int>(std::max_element(r, r + K) - r);
  }
  return out;
}

inline std::vector<Tensor> split_batches(const Tensor& x, int64_t batch) {
  std::vector<Tensor> out;
  for (int64_t b0 = 0; b0 < x.dim(0); b0 += batch)
    out.push_back(x.narrow(0, b0, std::min(batch, x.dim(0) - b0)));
  return out;
}

/// Top-1 (%) of `forward` on images [N, ...] against `labels`, batch by batch.
template <class F>
inline double top1_percent(F&& forward, const Tensor& images, const std::vector<int>& labels,
                           int64_t batch) {
  NoGrad ng;
  nn::Accuracy a;
  for (int64_t b0 = 0; b0 < images.dim(0); b0 += batch) {
    const int64_t n = std::min(batch, images.dim(0) - b0);
    nn::score(forward(images.narrow(0, b0, n)),
              std::vector<int>(labels.begin() + b0, labels.begin() + b0 + n), a);
  }
  return a.top1_percent();
}

}  // namespace tune_detail

/// The calibration baseline of setting s on `fp` (its BatchNorm unfolded; datafree reads its
/// statistics): weights rounded to nearest on ranges per s, activation ranges from s's observer
/// over `calib` (or the BatchNorm statistics), optionally bias correction on `calib`, and the
/// conv biases snapped to the int32 grid (what save_quantized writes). bits.a_bits must be > 0.
inline QuantModel calibrate_setting(const nn::Model& fp, const TuneSetting& s,
                                    const QuantSettings& bits, const Tensor& calib,
                                    const TuneParams& p = {}) {
  QuantSettings qs = bits;
  qs.first_last_bits = s.first_last_bits;
  qs.w_symmetric = s.symmetric;
  qs.w_init = s.w_range;
  QuantModel qm(fp, qs);
  round_weights_to_nearest(qm, {.per_channel = s.per_channel, .init = s.w_range});
  if (s.method == "datafree") {
    check(!(qm.model.input_point >= 0 && qs.input_bits > 0) || p.input_range.has_value(),
          "tune: method datafree with an input quantizer needs TuneParams::input_range");
    init_activations_from_batchnorm(qm, fp, {.k = p.bn_k, .input = p.input_range});
  } else {
    ObserverParams op = p.observer;
    op.percentile = s.percentile;
    calibrate_activations(qm, tune_detail::split_batches(calib, p.batch),
                          observer_factory(s.method, op));
  }
  if (s.bias_correction) correct_biases(qm, calib, {.batch = p.batch});
  snap_biases(qm);
  return qm;
}

/// The settings a search of p tries, in trial order: the whole space (grid), or p.trials distinct
/// settings drawn from it by a permutation seeded by p.seed (random).
inline std::vector<TuneSetting> tune_settings(const TuneParams& p) {
  std::vector<TuneSetting> all = enumerate(p.space);
  if (p.search == TuneSearch::grid) return all;
  check(p.trials >= 1 && p.trials <= static_cast<int64_t>(all.size()),
        "tune: trials must be in [1, ", all.size(), "] (the size of the search space), got ",
        p.trials);
  const std::vector<int64_t> order = seeded_permutation(static_cast<int64_t>(all.size()), p.seed);
  std::vector<TuneSetting> out;
  for (int64_t k = 0; k < p.trials; ++k) out.push_back(all[static_cast<size_t>(order[k])]);
  return out;
}

/// Searches the settings of p on `fp` (BatchNorm unfolded) with images from `source` only; see
/// the top of this file. Deterministic for a given source, p and thread count.
inline TuneReport tune(const nn::Model& fp, const ImageSource& source, const TuneParams& p = {}) {
  const auto start = std::chrono::steady_clock::now();
  validate(p.bits);
  check(p.bits.a_bits > 0,
        "tune: activation bits must be in [2, 8] (tune searches activation "
        "observers), got ",
        p.bits.a_bits);
  check(p.batch >= 1, "tune: batch must be >= 1, got ", p.batch);
  check(p.images >= 2 && p.images <= source.size(), "tune: images must be in [2, ", source.size(),
        "] (the source's size), got ", p.images);
  check(p.heldout >= 1 && p.heldout < p.images, "tune: heldout must be in [1, ", p.images - 1,
        "] (images - 1), got ", p.heldout);
  const std::vector<TuneSetting> settings = tune_settings(p);

  TuneReport r;
  const std::vector<int64_t> order = seeded_permutation(source.size(), p.seed);
  r.heldout_indices.assign(order.begin(), order.begin() + p.heldout);
  r.calib_indices.assign(order.begin() + p.heldout, order.begin() + p.images);
  const bool labels = p.score == TuneScore::labels;
  const tune_detail::SourceDataset ds{&source, labels};
  const Batch heldout = gather(ds, r.heldout_indices);
  const Batch calib = gather(ds, r.calib_indices);

  std::vector<int> target = heldout.labels;
  if (!labels) {
    NoGrad ng;
    target.clear();
    for (const Tensor& b : tune_detail::split_batches(heldout.images, p.batch)) {
      const std::vector<int> am = tune_detail::argmax_rows(fp.forward(b));
      target.insert(target.end(), am.begin(), am.end());
    }
  } else {
    for (int l : target)
      check(l >= 0 && l < fp.num_classes, "tune: label ", l, " of a held-out image is outside [0, ",
            fp.num_classes, ") (the model's classes)");
  }
  r.fp_score = tune_detail::top1_percent([&](const Tensor& x) { return fp.forward(x); },
                                         heldout.images, target, p.batch);

  for (size_t t = 0; t < settings.size(); ++t) {
    const auto t0 = std::chrono::steady_clock::now();
    QuantModel qm = calibrate_setting(fp, settings[t], p.bits, calib.images, p);
    TuneTrial trial{.index = t, .setting = settings[t]};
    trial.score = tune_detail::top1_percent([&](const Tensor& x) { return qm.forward(x); },
                                            heldout.images, target, p.batch);
    trial.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r.trials.empty() || trial.score > r.trials[r.best].score) {
      r.best = t;
      r.best_model.emplace(std::move(qm));
    }
    r.trials.push_back(trial);
    if (p.on_trial) p.on_trial(trial);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

namespace tune_detail {

inline std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      out += ' ';
      continue;
    }
    out += c;
  }
  return out + "\"";
}

}  // namespace tune_detail

/// The report as one JSON object: the search (kind, score, split sizes, seed, bits), the FP
/// model's held-out score, every trial (setting, score, seconds), the best trial's index and
/// setting, and the total time. `extra` entries (already JSON values) are added at the top.
inline std::string tune_report_json(
    const TuneReport& r, const TuneParams& p,
    const std::vector<std::pair<std::string, std::string>>& extra = {}) {
  std::ostringstream j;
  j.precision(10);
  j << "{";
  for (const auto& [k, v] : extra) j << tune_detail::json_string(k) << ": " << v << ", ";
  j << "\"search\": " << tune_detail::json_string(tune_search_name(p.search))
    << ", \"score\": " << tune_detail::json_string(tune_score_name(p.score))
    << ", \"seed\": " << p.seed << ", \"w_bits\": " << p.bits.w_bits
    << ", \"a_bits\": " << p.bits.a_bits << ", \"input_bits\": " << p.bits.input_bits
    << ", \"calibration_images\": " << r.calib_indices.size()
    << ", \"heldout_images\": " << r.heldout_indices.size() << ", \"fp_score\": " << r.fp_score
    << ", \"trials\": [";
  for (size_t t = 0; t < r.trials.size(); ++t) {
    const TuneTrial& x = r.trials[t];
    const TuneSetting& s = x.setting;
    j << (t ? ", " : "") << "{\"index\": " << x.index
      << ", \"method\": " << tune_detail::json_string(s.method) << ", \"percentile\": ";
    if (s.method == "percentile")
      j << s.percentile;
    else
      j << "null";
    j << ", \"per_channel\": " << (s.per_channel ? "true" : "false")
      << ", \"symmetric\": " << (s.symmetric ? "true" : "false") << ", \"w_range\": "
      << tune_detail::json_string(s.w_range == RangeInit::minmax ? "minmax" : "lp")
      << ", \"first_last_bits\": " << s.first_last_bits
      << ", \"bias_correction\": " << (s.bias_correction ? "true" : "false")
      << ", \"score\": " << x.score << ", \"seconds\": " << x.seconds << "}";
  }
  j << "], \"best\": " << r.best;
  if (!r.trials.empty())
    j << ", \"best_setting\": " << tune_detail::json_string(r.trials[r.best].setting.describe())
      << ", \"best_score\": " << r.trials[r.best].score;
  j << ", \"seconds\": " << r.seconds << "}\n";
  return j.str();
}

}  // namespace brecq::quant
