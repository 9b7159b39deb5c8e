#pragma once
// Range observers: what decides a quantizer's range from the data it will quantize. An observer
// sees any number of batches, then sets the quantizer's scale and zero point once, so that
// percentile, KL or moving-average rules fit beside the two given here (min-max and the L2.4
// shrink search of the official BRECQ code).
#include <functional>
#include <memory>
#include <tuple>
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
    if (lo_.empty()) lo_.assign(static_cast<size_t>(C), xc.data<float>()[0]);
    if (hi_.empty()) hi_.assign(static_cast<size_t>(C), xc.data<float>()[0]);
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

  void decide(UniformQuantizer& q) override {
    check(!seen_.empty(), "L_p search observer: no batch observed");
    if (seen_.size() == 1) return init_range(q, seen_.front());
    std::vector<Tensor> flat;
    for (const Tensor& t : seen_) flat.push_back(reshape(t, {t.numel()}));  // [numel]
    init_range(q, cat(flat, 0));
  }

 private:
  QuantizerConfig config_;
  std::vector<Tensor> seen_;
};

/// Makes the observer of a quantizer from its configuration.
using ObserverFactory = std::function<std::unique_ptr<RangeObserver>(const QuantizerConfig&)>;

/// The observer named by config.init.
inline std::unique_ptr<RangeObserver> make_observer(const QuantizerConfig& c) {
  if (c.init == RangeInit::minmax) return std::make_unique<MinMaxObserver>(c);
  return std::make_unique<LpSearchObserver>(c);
}

}  // namespace brecq::quant
