#pragma once
// Quantization without back-propagation, the baselines BRECQ is measured against:
// - data-free: round-to-nearest weights on min-max ranges, activation ranges from the BatchNorm
//   statistics of the model before folding (no image needed);
// - calibration: activation ranges from an observer (observer_factory) over calibration batches;
// - bias correction (Nagel et al. 2019, the empirical variant): each layer's mean output shift
//   E[W_q x] - E[W x], measured on calibration data through the quantized model, removed from its
//   bias, layer by layer in forward order.
// Everything walks the model description (blocks, layers, activation points), never a named
// architecture.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "brecq/autograd/tape.hpp"
#include "brecq/nn/model.hpp"
#include "brecq/ops/conv.hpp"
#include "brecq/ops/elementwise.hpp"
#include "brecq/ops/matmul.hpp"
#include "brecq/quant/observer.hpp"
#include "brecq/quant/qmodel.hpp"

namespace brecq::quant {

// ---- weights ----------------------------------------------------------------------------------

struct WeightRangeParams {
  bool per_channel = true;             ///< false: one range for the whole weight tensor
  RangeInit init = RangeInit::minmax;  ///< or the L_p shrink search (QuantizerConfig::lp)
};

/// Sets every layer's weight range by p (min-max or the L_p search, per output channel or one
/// range for the whole tensor) and its weight to round-to-nearest on that grid. A per-tensor
/// range is stored as equal per-channel scales, so the file format and the integer runtime take
/// it unchanged.
inline void round_weights_to_nearest(QuantModel& qm, const WeightRangeParams& p = {}) {
  for (nn::Layer* l : qm.model.layers()) {
    UniformQuantizer& q = qm.weight_q[static_cast<size_t>(l->id)];
    QuantizerConfig c = q.config;
    c.init = p.init;
    c.per_channel = p.per_channel;
    UniformQuantizer decided{c};
    std::unique_ptr<RangeObserver> o = make_observer(c);
    o->observe(l->weight);
    o->decide(decided);
    const int64_t C = l->out_channels(), per = l->weight.numel() / C;
    q.config.init = p.init;
    q.scale = Tensor::empty(Shape{C});
    q.zero_point = Tensor::empty(Shape{C});
    for (int64_t ch = 0; ch < C; ++ch) {
      const int64_t from = p.per_channel ? ch : 0;
      q.scale.data<float>()[ch] = decided.scale.data<float>()[from];
      q.zero_point.data<float>()[ch] = decided.zero_point.data<float>()[from];
    }
    Tensor w = l->weight.contiguous(), levels = Tensor::empty(w.shape(), DType::u8);
    for (int64_t k = 0; k < w.numel(); ++k) {
      const int64_t ch = k / per;
      const float v = std::nearbyint(w.data<float>()[k] / q.scale.data<float>()[ch]) +
                      q.zero_point.data<float>()[ch];
      levels.data<uint8_t>()[k] = static_cast<uint8_t>(std::clamp(v, 0.0f, q.qmax()));
    }
    qm.set_weight_levels(*l, levels);
  }
}

// ---- data-free activation ranges --------------------------------------------------------------

/// An activation point's range [lo, hi].
struct ActivationRange {
  float lo = 0.0f, hi = 0.0f;
};

struct BatchNormRangeParams {
  float k = 3.0f;  ///< range = mean +- k std of the pre-activation, per channel
  /// Range of the model input (the image; e.g. from the preprocessing: (0 - mean) / std to
  /// (1 - mean) / std). Required when the input point is quantized: BatchNorm says nothing of it.
  std::optional<ActivationRange> input{};
};

namespace detail {

/// What is known of a tensor, per channel: clip(X, clip_lo, clip_hi) with X ~ N(mean, var). The
/// clip is the activation applied to a BatchNorm output (ReLU: [0, inf), ReLU6: [0, 6]).
struct ChannelEstimate {
  std::vector<double> mean{}, var{};
  double clip_lo = -std::numeric_limits<double>::infinity();
  double clip_hi = std::numeric_limits<double>::infinity();
  std::string source = "";  ///< where it is unknown (empty mean): why, for the error message

  bool known() const { return !mean.empty(); }
  size_t channels() const { return mean.size(); }
};

inline ChannelEstimate unknown_estimate(std::string why) {
  ChannelEstimate e;
  e.source = std::move(why);
  return e;
}

/// The pre-activation of layer l: N(beta, gamma^2) per channel when a BatchNorm follows the conv
/// (its running statistics make the normalised output zero-mean, unit-variance).
inline ChannelEstimate pre_activation(const nn::Layer& l) {
  if (!l.bn) return unknown_estimate("layer " + l.name + " has no BatchNorm");
  ChannelEstimate e;
  const int64_t C = l.bn->weight.numel();
  for (int64_t c = 0; c < C; ++c) {
    const double g = l.bn->weight.data<float>()[c];
    e.mean.push_back(l.bn->bias.data<float>()[c]);
    e.var.push_back(g * g);
  }
  return e;
}

inline ChannelEstimate apply_activation(ChannelEstimate e, nn::Activation a) {
  if (a == nn::Activation::relu || a == nn::Activation::relu6) e.clip_lo = std::max(e.clip_lo, 0.0);
  if (a == nn::Activation::relu6) e.clip_hi = std::min(e.clip_hi, 6.0);
  return e;
}

/// Mean and variance of channel c of e: clip(X, a, b) for X ~ N(mu, sigma^2) (the rectified
/// Gaussian for ReLU), with a, b the estimate's clip.
inline std::pair<double, double> clipped_moments(const ChannelEstimate& e, size_t c) {
  const double mu = e.mean[c], sigma = std::sqrt(e.var[c]), a = e.clip_lo, b = e.clip_hi;
  if (sigma <= 0) return {std::clamp(mu, a, b), 0.0};
  auto Phi = [](double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); };
  auto phi = [](double z) { return std::exp(-0.5 * z * z) / std::sqrt(2.0 * std::numbers::pi); };
  const bool fa = std::isfinite(a), fb = std::isfinite(b);
  const double al = fa ? (a - mu) / sigma : 0, be = fb ? (b - mu) / sigma : 0;
  const double Pa = fa ? Phi(al) : 0.0, Pb = fb ? Phi(be) : 1.0;
  const double pa = fa ? phi(al) : 0.0, pb = fb ? phi(be) : 0.0;
  const double ta = fa ? a : 0.0, tb = fb ? b : 0.0;  // a*Phi(alpha) -> 0 as a -> -inf
  const double m1 = ta * Pa + tb * (1 - Pb) + mu * (Pb - Pa) + sigma * (pa - pb);
  const double m2 = ta * ta * Pa + tb * tb * (1 - Pb) + (mu * mu + sigma * sigma) * (Pb - Pa) +
                    sigma * ((ta + mu) * pa - (tb + mu) * pb);
  return {m1, std::max(m2 - m1 * m1, 0.0)};
}

/// The estimate as a plain (unclipped) Gaussian: the moments of the clipped variable, for a sum.
inline ChannelEstimate as_gaussian(const ChannelEstimate& e) {
  if (!e.known()) return e;
  ChannelEstimate g;
  for (size_t c = 0; c < e.channels(); ++c) {
    const auto [m, v] = clipped_moments(e, c);
    g.mean.push_back(m);
    g.var.push_back(v);
  }
  return g;
}

/// The residual sum main + shortcut, taking the two as independent (variances add).
inline ChannelEstimate sum_estimate(const ChannelEstimate& main, const ChannelEstimate& shortcut,
                                    const std::string& block) {
  if (!main.known()) return main;
  if (!shortcut.known()) return unknown_estimate(shortcut.source);
  check(main.channels() == shortcut.channels(), "data-free ranges: block ", block, " adds ",
        main.channels(), " main-path channels to ", shortcut.channels(), " shortcut channels");
  ChannelEstimate a = as_gaussian(main), b = as_gaussian(shortcut);
  for (size_t c = 0; c < a.channels(); ++c) a.mean[c] += b.mean[c], a.var[c] += b.var[c];
  return a;
}

/// Per-tensor range of a point: per channel mean +- k std, clipped, then the union over channels.
inline ActivationRange point_range(const ChannelEstimate& e, float k) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (size_t c = 0; c < e.channels(); ++c) {
    const double s = std::sqrt(e.var[c]);
    lo = std::min(lo, std::clamp(e.mean[c] - k * s, e.clip_lo, e.clip_hi));
    hi = std::max(hi, std::clamp(e.mean[c] + k * s, e.clip_lo, e.clip_hi));
  }
  return {static_cast<float>(lo), static_cast<float>(hi)};
}

}  // namespace detail

/// The range of every activation point of `model` (with its BatchNorm layers, i.e. before
/// folding) from the BatchNorm statistics alone, for std multiple k; empty where no statistics
/// reach the point (the model input, a layer without BatchNorm). The estimate of each tensor is
/// per channel: a BatchNorm output is N(beta, gamma^2) (the running statistics normalise the
/// conv output), a following activation clips it, a residual add sums the means and variances of
/// its two (clipped) inputs as if independent; option A's zero-padded channels are exactly zero;
/// global and max pooling keep the estimate (it bounds their output's spread). `why` (if given)
/// receives the reason of each empty entry.
inline std::vector<std::optional<ActivationRange>> batchnorm_ranges(
    const nn::Model& model, float k, std::vector<std::string>* why = nullptr) {
  check(std::isfinite(k) && k > 0, "data-free ranges: k (std multiples) must be > 0, got ", k);
  const size_t P = static_cast<size_t>(model.num_points());
  std::vector<std::optional<ActivationRange>> out(P);
  std::vector<std::string> reasons(P);
  // A main path or shortcut from estimate x, recording the range at each layer's point.
  auto run_layers = [&](const std::vector<nn::Layer>& layers, detail::ChannelEstimate x) {
    for (const nn::Layer& l : layers) {
      x = detail::apply_activation(detail::pre_activation(l), l.activation);
      if (l.act_point < 0) continue;
      if (x.known())
        out[static_cast<size_t>(l.act_point)] = detail::point_range(x, k);
      else
        reasons[static_cast<size_t>(l.act_point)] = x.source;
    }
    return x;
  };
  detail::ChannelEstimate x = detail::unknown_estimate("the model input has no statistics");
  for (const nn::Block& b : model.blocks) {
    detail::ChannelEstimate y = run_layers(b.layers, x);
    switch (b.shortcut) {
      case nn::ShortcutKind::none:
        break;
      case nn::ShortcutKind::identity:
        y = detail::sum_estimate(y, x, b.name);
        break;
      case nn::ShortcutKind::option_a: {
        detail::ChannelEstimate s = detail::as_gaussian(x);
        if (s.known()) {  // subsampling keeps the moments; the padding adds exact zeros
          const size_t pad = static_cast<size_t>(b.option_a_pad);
          s.mean.insert(s.mean.begin(), pad, 0.0), s.mean.insert(s.mean.end(), pad, 0.0);
          s.var.insert(s.var.begin(), pad, 0.0), s.var.insert(s.var.end(), pad, 0.0);
        }
        y = detail::sum_estimate(y, s, b.name);
        break;
      }
      case nn::ShortcutKind::projection:
        y = detail::sum_estimate(y, run_layers(b.shortcut_layers, x), b.name);
        break;
    }
    y = detail::apply_activation(y, b.out_activation);
    if (b.out_point >= 0) {
      if (y.known())
        out[static_cast<size_t>(b.out_point)] = detail::point_range(y, k);
      else
        reasons[static_cast<size_t>(b.out_point)] = y.source;
    }
    x = y;
  }
  if (model.input_point >= 0)
    reasons[static_cast<size_t>(model.input_point)] = "the model input has no statistics";
  if (why) *why = reasons;
  return out;
}

/// Data-free activation ranges: every enabled point of qm from the BatchNorm statistics of
/// `unfolded` (qm's model before folding: same blocks, layers and points), the input point from
/// p.input. Points that no statistics reach are refused by name.
inline void init_activations_from_batchnorm(QuantModel& qm, const nn::Model& unfolded,
                                            const BatchNormRangeParams& p = {}) {
  const auto ql = qm.model.layers();
  const auto ul = unfolded.layers();
  check(ql.size() == ul.size() && qm.model.num_points() == unfolded.num_points(),
        "data-free ranges: the model ", unfolded.arch, " (", ul.size(), " layers, ",
        unfolded.num_points(), " points) is not the quantized one (", ql.size(), " layers, ",
        qm.model.num_points(), " points)");
  for (size_t i = 0; i < ql.size(); ++i)
    check(ql[i]->name == ul[i]->name && ql[i]->weight.shape() == ul[i]->weight.shape(),
          "data-free ranges: layer ", i, " is '", ul[i]->name, "' ", ul[i]->weight.shape(),
          " in the model, '", ql[i]->name, "' ", ql[i]->weight.shape(), " in the quantized one");
  if (p.input) {
    check(std::isfinite(p.input->lo) && std::isfinite(p.input->hi) && p.input->lo <= p.input->hi,
          "data-free ranges: the input range must be finite with lo <= hi, got [", p.input->lo,
          ", ", p.input->hi, "]");
  }
  std::vector<std::string> why;
  std::vector<std::optional<ActivationRange>> r = batchnorm_ranges(unfolded, p.k, &why);
  if (unfolded.input_point >= 0 && p.input) r[static_cast<size_t>(unfolded.input_point)] = p.input;
  for (int pt = 0; pt < qm.model.num_points(); ++pt) {
    const size_t i = static_cast<size_t>(pt);
    if (!qm.act_enabled[i]) continue;
    check(r[i].has_value(), "data-free ranges: no range for activation point ", pt, " (",
          qm.point_name(pt), "): ", why[i],
          pt == unfolded.input_point ? " (give BatchNormRangeParams::input)" : "");
    UniformQuantizer& q = qm.act_q[i];
    validate(q.config, "activation point " + qm.point_name(pt));
    q.scale = Tensor::empty(Shape{1});
    q.zero_point = Tensor::empty(Shape{1});
    std::tie(q.scale.data<float>()[0], q.zero_point.data<float>()[0]) =
        detail::range_params(std::min(r[i]->lo, 0.0f), std::max(r[i]->hi, 0.0f), q.config);
  }
}

// ---- calibration ------------------------------------------------------------------------------

/// Activation ranges by the observers of `observer` (e.g. observer_factory("kl")) over
/// calibration batches, each point seeing every batch through the model quantized before it.
/// The model input keeps its min-max range (QuantSettings::input_bits): it is the image, not what
/// a method is compared on; the other points are calibrated with the input in FP.
inline void calibrate_activations(QuantModel& qm, const std::vector<Tensor>& batches,
                                  const ObserverFactory& observer) {
  check(static_cast<bool>(observer), "calibrate_activations: no observer factory");
  check(!batches.empty(), "calibrate_activations: no calibration batch");
  const int in = qm.model.input_point;
  const bool input_on = in >= 0 && qm.act_enabled[static_cast<size_t>(in)];
  if (input_on) qm.act_enabled[static_cast<size_t>(in)] = false;
  try {
    qm.init_activations(batches, {.observer = observer});
  } catch (...) {
    if (input_on) qm.act_enabled[static_cast<size_t>(in)] = true;
    throw;
  }
  if (!input_on) return;
  qm.act_enabled[static_cast<size_t>(in)] = true;
  UniformQuantizer& q = qm.act_q[static_cast<size_t>(in)];
  MinMaxObserver o(q.config);
  for (const Tensor& b : batches) o.observe(b);
  o.decide(q);
}

// ---- bias correction --------------------------------------------------------------------------

struct BiasCorrectionParams {
  int64_t batch = 64;  ///< images per forward pass
};

/// What bias correction changed in one layer.
struct BiasShift {
  std::string layer;
  double max_abs = 0;   ///< largest |shift| over output channels
  double mean_abs = 0;  ///< mean |shift| over output channels
};

/// Empirical bias correction: for every layer in forward order, the mean over calibration images
/// (and positions) of (W_q - W) x per output channel, x the layer's input in the quantized model
/// (deployed mode: quantized weights, enabled activation points, biases corrected so far), is
/// subtracted from the layer's bias (created if absent). Layer by layer, because correcting one
/// changes the inputs of the next. Call it after the activation ranges are set.
inline std::vector<BiasShift> correct_biases(QuantModel& qm, const Tensor& calib,
                                             const BiasCorrectionParams& p = {}) {
  check(calib.ndim() == 4 && calib.dim(0) > 0,
        "bias correction: calibration images must be [N, C, H, W] with N > 0, got ", calib.shape());
  check(p.batch >= 1, "bias correction: batch must be >= 1, got ", p.batch);
  NoGrad ng;
  std::vector<size_t> block_of;  // by layer id
  for (size_t b = 0; b < qm.model.blocks.size(); ++b) {
    const nn::Block& blk = qm.model.blocks[b];
    block_of.insert(block_of.end(), blk.layers.size() + blk.shortcut_layers.size(), b);
  }
  std::vector<BiasShift> report;
  for (nn::Layer* l : qm.model.layers()) {
    const int64_t C = l->out_channels();
    const Tensor dw = sub(qm.quantized_weight(*l), l->weight);  // [out, ...] weight error
    std::vector<double> sum(static_cast<size_t>(C), 0.0);
    int64_t count = 0;
    nn::ForwardHooks h = qm.hooks();
    h.layer_output = [&](const nn::Layer& at, const Tensor& in, const Tensor& out) {
      if (at.id != l->id) return out;
      // [N, C] or [N, C, H, W]: the output error of this layer alone, bias aside.
      const Tensor d =
          (at.kind == nn::LayerKind::linear ? linear(in, dw) : conv2d(in, dw, Tensor(), at.conv))
              .contiguous();
      const int64_t N = d.dim(0), per = d.numel() / (N * C);
      const float* pd = d.data<float>();
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = 0; c < C; ++c) {
          double s = 0;
          for (int64_t i = 0; i < per; ++i) s += pd[(n * C + c) * per + i];
          sum[static_cast<size_t>(c)] += s;
        }
      count += N * per;
      return out;
    };
    for (int64_t b0 = 0; b0 < calib.dim(0); b0 += p.batch)
      qm.model.forward_blocks(calib.narrow(0, b0, std::min(p.batch, calib.dim(0) - b0)), 0,
                              block_of[static_cast<size_t>(l->id)] + 1, h);
    check(count > 0, "bias correction: layer ", l->name, " was not reached by the forward pass");
    Tensor bias = l->bias.defined() ? l->bias.contiguous().clone() : Tensor::zeros(Shape{C});
    BiasShift s{.layer = l->name};
    for (int64_t c = 0; c < C; ++c) {
      const double shift = sum[static_cast<size_t>(c)] / static_cast<double>(count);
      bias.data<float>()[c] = static_cast<float>(bias.data<float>()[c] - shift);
      s.max_abs = std::max(s.max_abs, std::fabs(shift));
      s.mean_abs += std::fabs(shift) / static_cast<double>(C);
    }
    l->bias = bias;
    report.push_back(s);
  }
  return report;
}

}  // namespace brecq::quant
