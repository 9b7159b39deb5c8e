#pragma once
// A model under quantization: the BN-folded FP model plus explicit quantizer state for every
// layer (per-channel weight quantizer, optional AdaRound rounding) and every activation point
// (per-tensor quantizer with a learnable step). It produces the forward hooks that run the model
// in FP, fake-quantized, or with soft (learnable) rounding on chosen layers.
#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <set>

#include "brecq/nn/fold_bn.hpp"
#include "brecq/quant/adaround.hpp"
#include "brecq/tensor/parallel.hpp"
#include "brecq/tensor/rng.hpp"

namespace brecq::quant {

struct QuantSettings {
  int w_bits = 4;
  int a_bits = 0;           ///< 0: weights only
  int first_last_bits = 8;  ///< first conv and last FC weights; first layer's activation
  /// Bits of the model input's quantizer (per-tensor, min-max over the calibration images), so
  /// that the image enters an integer runtime exactly as simulated; 0: FP input (the official
  /// code). Only with activation quantization on.
  int input_bits = 8;
  RangeInit w_init = RangeInit::lp_search;
  RangeInit a_init = RangeInit::lp_search;
  bool w_symmetric = false;
};

/// Calls f(i, drawn) for i in [0, n), drawn true with probability p (to 1/65536), split over
/// threads: QDrop draws one per activation element every iteration. One draw from rng seeds the
/// call; block b of kBernoulliBlock elements then has its own generator, seeded by hashing
/// (seed, b), so the draws do not depend on the thread count. f must be safe to call concurrently
/// for distinct i.
template <class F>
inline void for_each_bernoulli(Rng& rng, float p, int64_t n, F&& f) {
  constexpr int64_t kBernoulliBlock = 4096;
  const uint64_t threshold = static_cast<uint64_t>(std::lround(static_cast<double>(p) * 65536.0));
  const uint64_t seed = rng.next_u64();
  parallel_for(0, (n + kBernoulliBlock - 1) / kBernoulliBlock, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      Rng block(Rng(seed + static_cast<uint64_t>(b)).next_u64());
      for (int64_t i = b * kBernoulliBlock, end = std::min(n, i + kBernoulliBlock); i < end;
           i += 4) {
        const uint64_t r = block.next_u64();
        for (int64_t j = 0; j < 4 && i + j < end; ++j)
          f(i + j, (r >> (16 * j) & 0xFFFF) < threshold);
      }
    }
  });
}

inline void validate(const QuantSettings& s) {
  check(s.w_bits >= 2 && s.w_bits <= 8, "weight bits: expected 2..8, got ", s.w_bits);
  check(s.a_bits == 0 || (s.a_bits >= 2 && s.a_bits <= 8),
        "activation bits: expected 0 (off) or 2..8, got ", s.a_bits);
  check(s.first_last_bits >= 2 && s.first_last_bits <= 8,
        "first/last layer bits: expected 2..8, got ", s.first_last_bits);
  check(s.input_bits == 0 || (s.input_bits >= 2 && s.input_bits <= 8),
        "input bits: expected 0 (FP input) or 2..8, got ", s.input_bits);
}

class QuantModel {
 public:
  nn::Model model;                                ///< FP weights, BatchNorm folded
  std::vector<UniformQuantizer> weight_q;         ///< by layer id
  std::vector<std::optional<AdaRound>> rounding;  ///< by layer id, once learned (or learning)
  std::vector<UniformQuantizer> act_q;            ///< by activation point
  std::vector<bool> act_enabled;                  ///< by activation point
  QuantSettings settings;

  bool weight_quant = true;  ///< use quantized weights
  bool act_quant = false;    ///< apply activation quantizers
  /// Layers with a larger id and points with a larger index run in FP ("quantized till" a unit,
  /// used to take Fisher gradients as the official code does).
  int quantized_until_layer = std::numeric_limits<int>::max();
  int quantized_until_point = std::numeric_limits<int>::max();
  float qdrop = 0.0f;  ///< probability of keeping an activation in FP (training forward only)

  /// Folds BatchNorm, sets bit-widths (first and last layer at first_last_bits) and initialises
  /// every weight quantizer's range.
  QuantModel(nn::Model fp, const QuantSettings& s, bool init_weight_ranges = true)
      : model(std::move(fp)), settings(s) {
    validate(s);
    nn::fold_batchnorm(model);
    auto layers = model.layers();
    check(!layers.empty(), "QuantModel: model ", model.arch, " has no layers");
    weight_q.resize(layers.size());
    rounding.resize(layers.size());
    hard_.resize(layers.size());
    for (nn::Layer* l : layers) {
      const bool edge = l == layers.front() || l == layers.back();
      UniformQuantizer& q = weight_q[static_cast<size_t>(l->id)];
      q.config = {.bits = edge ? s.first_last_bits : s.w_bits,
                  .per_channel = true,
                  .symmetric = s.w_symmetric,
                  .init = s.w_init};
      if (!init_weight_ranges) continue;
      init_range(q, l->weight);
      hard_[static_cast<size_t>(l->id)] = nearest_weight(l->weight, q);
    }
    act_q.resize(static_cast<size_t>(model.num_points()));
    act_enabled.assign(static_cast<size_t>(model.num_points()), s.a_bits > 0);
    for (UniformQuantizer& q : act_q)
      q.config = {.bits = s.a_bits > 0 ? s.a_bits : 8, .init = s.a_init};
    // The stem's output stays at first_last_bits (official: first layer's activation 8-bit).
    if (model.blocks.front().out_point >= 0)
      act_q[static_cast<size_t>(model.blocks.front().out_point)].config.bits = s.first_last_bits;
    if (model.input_point >= 0) {
      const size_t in = static_cast<size_t>(model.input_point);
      act_enabled[in] = s.a_bits > 0 && s.input_bits > 0;
      act_q[in].config = {.bits = s.input_bits > 0 ? s.input_bits : 8, .init = RangeInit::minmax};
    }
  }

  const nn::Layer& first_layer() const { return *model.layers().front(); }

  /// Layers whose weights are currently soft-rounded (learning), by id.
  std::set<int> learning;
  /// Activation points that initialise their range from the next tensor they see.
  bool calibrating_activations = false;
  /// Randomness for QDrop.
  Rng drop_rng{0};

  /// Starts learning AdaRound for a layer (alpha from the rounding remainder).
  void begin_rounding(const nn::Layer& l) {
    rounding[static_cast<size_t>(l.id)] =
        AdaRound::init(l.weight, weight_q[static_cast<size_t>(l.id)]);
    learning.insert(l.id);
  }
  /// Hard rounding when learning is done.
  void end_rounding(const nn::Layer& l) {
    auto& r = rounding[static_cast<size_t>(l.id)];
    check(r.has_value(), "end_rounding: layer ", l.name, " has no learned rounding");
    r->alpha.set_requires_grad(false);
    hard_[static_cast<size_t>(l.id)] = r->hard_weight(weight_q[static_cast<size_t>(l.id)]);
    learning.erase(l.id);
  }
  /// Installs learned rounding (e.g. loaded from a checkpoint) as hard rounding.
  void set_rounding(const nn::Layer& l, AdaRound r) {
    rounding[static_cast<size_t>(l.id)] = std::move(r);
    learning.insert(l.id);
    end_rounding(l);
  }
  /// Integer levels (0..2^bits-1) of layer l's quantized weight.
  Tensor weight_levels(const nn::Layer& l) const {
    const size_t i = static_cast<size_t>(l.id);
    const UniformQuantizer& q = weight_q[i];
    Tensor w = hard_[i], out = Tensor::empty(w.shape(), DType::u8);
    const int64_t per = w.numel() / q.channels();
    for (int64_t k = 0; k < w.numel(); ++k) {
      const int64_t c = k / per;
      const float v = std::nearbyint(w.data<float>()[k] / q.scale.data<float>()[c]) +
                      q.zero_point.data<float>()[c];
      out.data<uint8_t>()[k] = static_cast<uint8_t>(std::min(std::max(v, 0.0f), q.qmax()));
    }
    return out;
  }
  /// Installs hard weights from integer levels under an already-set weight quantizer.
  void set_weight_levels(const nn::Layer& l, const Tensor& levels) {
    const size_t i = static_cast<size_t>(l.id);
    const UniformQuantizer& q = weight_q[i];
    check(levels.shape() == l.weight.shape() && levels.dtype() == DType::u8, "layer ", l.name,
          ": weight levels must be u8 ", l.weight.shape(), ", got ", dtype_name(levels.dtype()),
          " ", levels.shape());
    Tensor w = Tensor::empty(levels.shape());
    const int64_t per = w.numel() / q.channels();
    for (int64_t k = 0; k < w.numel(); ++k) {
      const int64_t c = k / per;
      const float v = levels.data<uint8_t>()[k];
      check(v <= q.qmax(), "layer ", l.name, ": weight level ", v, " exceeds ", q.qmax(), " for ",
            q.config.bits, " bits");
      w.data<float>()[k] = (v - q.zero_point.data<float>()[c]) * q.scale.data<float>()[c];
    }
    hard_[i] = w;
  }
  /// Quantized weight in use for layer l (hard, or soft while learning).
  Tensor quantized_weight(const nn::Layer& l) const {
    const size_t i = static_cast<size_t>(l.id);
    if (learning.count(l.id)) return rounding[i]->soft_weight(weight_q[i]);
    return hard_[i];
  }

  /// Forward hooks for the current state. `training` enables QDrop.
  nn::ForwardHooks hooks(bool training = false) {
    nn::ForwardHooks h;
    if (weight_quant)
      h.weight = [this](const nn::Layer& l) {
        return l.id <= quantized_until_layer ? quantized_weight(l) : l.weight;
      };
    if (act_quant)
      h.activation = [this, training](int p, const Tensor& x) {
        return quantize_activation(p, x, training);
      };
    return h;
  }

  Tensor forward(const Tensor& x) { return model.forward(x, hooks()); }

  /// Weight-only or weight+activation fake quantization at point p.
  Tensor quantize_activation(int p, const Tensor& x, bool training) {
    const size_t i = static_cast<size_t>(p);
    if (!act_enabled[i] || p > quantized_until_point) return x;
    UniformQuantizer& q = act_q[i];
    if (!q.initialized()) {
      check(calibrating_activations, "activation point ", p,
            " is not initialised: run init_activations on calibration data first");
      NoGrad ng;
      init_range(q, x);
    }
    Tensor xq = fake_quantize(x, q);
    if (!(training && qdrop > 0.0f)) return xq;
    // QDrop: each element keeps its FP value with probability qdrop.
    Tensor keep = Tensor::empty(x.shape());
    float* pk = keep.data<float>();
    for_each_bernoulli(drop_rng, qdrop, keep.numel(),
                       [pk](int64_t i, bool fp) { pk[i] = fp ? 1.0f : 0.0f; });
    return where(keep, x, xq);
  }

  /// Initialises every activation quantizer in forward order from one calibration batch run
  /// through the (weight-)quantized model, as the official code does with 64 images.
  void init_activations(const Tensor& calib) {
    NoGrad ng;
    for (UniformQuantizer& q : act_q) q.scale = q.zero_point = Tensor();
    const bool saved = act_quant;
    act_quant = true;
    calibrating_activations = true;
    forward(calib);
    calibrating_activations = false;
    act_quant = saved;
  }

  /// Activation points inside blocks [first, last) (layer points and block outputs).
  std::vector<int> points_in_blocks(size_t first, size_t last) const {
    std::vector<int> out;
    for (size_t b = first; b < last; ++b) {
      for (const nn::Layer& l : model.blocks[b].layers)
        if (l.act_point >= 0) out.push_back(l.act_point);
      if (model.blocks[b].out_point >= 0) out.push_back(model.blocks[b].out_point);
    }
    return out;
  }

 private:
  std::vector<Tensor> hard_;  ///< quantized weights in use, by layer id
};

}  // namespace brecq::quant
