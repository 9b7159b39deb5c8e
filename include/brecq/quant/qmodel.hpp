#pragma once
// A model under quantization: the (by default BN-folded) FP model plus explicit quantizer state
// for every layer (per-channel weight quantizer, learned AdaRound rounding) and every activation
// point (per-tensor quantizer with a learnable step). How a forward pass runs (FP, hard or soft
// rounding, which points quantize, QDrop) is a ForwardMode value given with the pass: the model
// holds no steering state.
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <string>

#include "brecq/nn/fold_bn.hpp"
#include "brecq/quant/adaround.hpp"
#include "brecq/quant/observer.hpp"
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
  /// Weight bits of single layers by name, over the rules above (mixed precision).
  std::map<std::string, int> layer_w_bits{};
  /// Activation bits of single points by name (QuantModel::point_name), over the rules above; a
  /// point named here is quantized even with a_bits = 0.
  std::map<std::string, int> point_a_bits{};
  /// Fold BatchNorm into the weights before quantizing (post-training quantization); false keeps
  /// the BatchNorm layers, e.g. for quantization-aware training.
  bool fold_batchnorm = true;
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
  auto bits_ok = [](int b) { return b >= 2 && b <= 8; };
  check(bits_ok(s.w_bits), "weight bits: expected 2..8, got ", s.w_bits);
  check(s.a_bits == 0 || bits_ok(s.a_bits), "activation bits: expected 0 (off) or 2..8, got ",
        s.a_bits);
  check(bits_ok(s.first_last_bits), "first/last layer bits: expected 2..8, got ",
        s.first_last_bits);
  check(s.input_bits == 0 || bits_ok(s.input_bits),
        "input bits: expected 0 (FP input) or 2..8, got ", s.input_bits);
  for (const auto& [name, b] : s.layer_w_bits)
    check(bits_ok(b), "weight bits of layer ", name, ": expected 2..8, got ", b);
  for (const auto& [name, b] : s.point_a_bits)
    check(bits_ok(b), "activation bits of point ", name, ": expected 2..8, got ", b);
}

enum class WeightMode { fp, hard };

/// How one forward pass of a QuantModel runs. The default is the deployed model: hard-rounded
/// weights, every enabled activation point quantized.
struct ForwardMode {
  WeightMode weights = WeightMode::hard;  ///< every layer not in `soft`
  /// Layers (by id) whose weights are soft-rounded by a rounding being learned.
  std::map<int, const AdaRound*> soft{};
  bool activations = true;  ///< quantize the enabled activation points
  /// Layers with a larger id and points with a larger index run in FP (the model "quantized
  /// till" a unit, as the official code takes Fisher gradients).
  int last_layer = std::numeric_limits<int>::max();
  int last_point = std::numeric_limits<int>::max();
  /// QDrop: each quantized activation element keeps its FP value with this probability, drawn
  /// from *drop_rng.
  float drop = 0.0f;
  Rng* drop_rng = nullptr;

  static ForwardMode fp() { return {.weights = WeightMode::fp, .activations = false}; }
  static ForwardMode weights_only() { return {.activations = false}; }
};

/// How activation ranges are initialised: through which weights, by which observers.
struct ActivationInit {
  WeightMode weights = WeightMode::hard;
  ObserverFactory observer = make_observer;
};

class QuantModel {
 public:
  nn::Model model;                                ///< FP weights, BatchNorm folded by default
  std::vector<UniformQuantizer> weight_q;         ///< by layer id
  std::vector<std::optional<AdaRound>> rounding;  ///< by layer id, once learned
  std::vector<UniformQuantizer> act_q;            ///< by activation point
  std::vector<bool> act_enabled;                  ///< by activation point
  QuantSettings settings;

  /// Folds BatchNorm (unless s.fold_batchnorm is false), sets bit-widths (first and last layer at
  /// first_last_bits, then the per-name ones) and initialises every weight quantizer's range.
  QuantModel(nn::Model fp, const QuantSettings& s, bool init_weight_ranges = true)
      : model(std::move(fp)), settings(s) {
    validate(s);
    if (s.fold_batchnorm) nn::fold_batchnorm(model);
    auto layers = model.layers();
    check(!layers.empty(), "QuantModel: model ", model.arch, " has no layers");
    weight_q.resize(layers.size());
    rounding.resize(layers.size());
    hard_.resize(layers.size());
    for (nn::Layer* l : layers) {
      const bool edge = l == layers.front() || l == layers.back();
      weight_q[static_cast<size_t>(l->id)].config = {.bits = edge ? s.first_last_bits : s.w_bits,
                                                     .per_channel = true,
                                                     .symmetric = s.w_symmetric,
                                                     .init = s.w_init};
    }
    for (const auto& [name, bits] : s.layer_w_bits)
      weight_q[static_cast<size_t>(layer(name).id)].config.bits = bits;
    if (init_weight_ranges)
      for (nn::Layer* l : layers) init_weight_range(*l);
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
    for (const auto& [name, bits] : s.point_a_bits) {
      const size_t p = static_cast<size_t>(point(name));
      act_q[p].config.bits = bits;
      act_enabled[p] = true;
    }
  }

  const nn::Layer& first_layer() const { return *model.layers().front(); }

  /// Sets layer l's weight range by its quantizer's rule and its weight to round-to-nearest (the
  /// constructor does it for every layer unless told not to).
  void init_weight_range(const nn::Layer& l) {
    UniformQuantizer& q = weight_q[static_cast<size_t>(l.id)];
    std::unique_ptr<RangeObserver> o = make_observer(q.config);
    o->observe(l.weight);
    o->decide(q);
    hard_[static_cast<size_t>(l.id)] = nearest_weight(l.weight, q);
  }

  /// Whether any activation point is quantized.
  bool quantizes_activations() const {
    return std::find(act_enabled.begin(), act_enabled.end(), true) != act_enabled.end();
  }

  /// The layer called `name`; the error lists the valid names.
  const nn::Layer& layer(const std::string& name) const {
    std::string names;
    for (const nn::Layer* l : model.layers()) {
      if (l->name == name) return *l;
      names += (names.empty() ? "" : ", ") + l->name;
    }
    fail(model.arch, ": no layer named '", name, "'; layers: ", names);
  }

  /// Name of activation point p: "input" (the image), the name of the layer whose output it
  /// quantizes, or the name of the block whose output it quantizes.
  std::string point_name(int p) const {
    if (p == model.input_point) return "input";
    for (const nn::Block& b : model.blocks) {
      for (const nn::Layer& l : b.layers)
        if (l.act_point == p) return l.name;
      if (b.out_point == p) return b.name;
    }
    fail(model.arch, ": no activation point ", p, " (", model.num_points(), " points)");
  }
  /// The activation point called `name` (see point_name); the error lists the valid names.
  int point(const std::string& name) const {
    std::string names;
    for (int p = 0; p < model.num_points(); ++p) {
      const std::string n = point_name(p);
      if (n == name) return p;
      names += (names.empty() ? "" : ", ") + n;
    }
    fail(model.arch, ": no activation point named '", name, "'; points: ", names);
  }

  /// Installs learned rounding (learned by a Reconstructor, or loaded from a checkpoint) as the
  /// layer's hard rounding.
  void set_rounding(const nn::Layer& l, AdaRound r) {
    const size_t i = static_cast<size_t>(l.id);
    r.alpha.set_requires_grad(false);
    hard_[i] = r.hard_weight(weight_q[i]);
    rounding[i] = std::move(r);
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
  /// Hard-rounded weight of layer l (round-to-nearest until rounding is learned).
  Tensor quantized_weight(const nn::Layer& l) const { return hard_[static_cast<size_t>(l.id)]; }

  /// The weight layer l uses in a pass of the given mode.
  Tensor weight(const nn::Layer& l, const ForwardMode& m) const {
    if (l.id > m.last_layer) return l.weight;
    if (auto it = m.soft.find(l.id); it != m.soft.end())
      return it->second->soft_weight(weight_q[static_cast<size_t>(l.id)]);
    return m.weights == WeightMode::hard ? quantized_weight(l) : l.weight;
  }

  /// Forward hooks running the model in the given mode (copied into the hooks).
  nn::ForwardHooks hooks(const ForwardMode& m = {}) const {
    check(m.drop == 0.0f || m.drop_rng, "ForwardMode: drop probability ", m.drop,
          " without a generator to draw with");
    nn::ForwardHooks h;
    if (m.weights == WeightMode::hard || !m.soft.empty())
      h.weight = [this, m](const nn::Layer& l) { return weight(l, m); };
    if (m.activations)
      h.activation = [this, m](int p, const Tensor& x) { return quantize_activation(p, x, m); };
    return h;
  }

  /// The model in the given mode; by default the deployed model.
  Tensor forward(const Tensor& x, const ForwardMode& m = {}) const {
    return model.forward(x, hooks(m));
  }

  /// Fake quantization at point p in mode m (identity where the mode or the point is off).
  Tensor quantize_activation(int p, const Tensor& x, const ForwardMode& m) const {
    const size_t i = static_cast<size_t>(p);
    if (!m.activations || !act_enabled[i] || p > m.last_point) return x;
    const UniformQuantizer& q = act_q[i];
    check(q.initialized(), "activation point ", p, " (", point_name(p),
          ") is not initialised: run init_activations on calibration data first");
    Tensor xq = fake_quantize(x, q);
    if (m.drop <= 0.0f) return xq;
    // QDrop: each element keeps its FP value with probability m.drop.
    Tensor keep = Tensor::empty(x.shape());
    float* pk = keep.data<float>();
    for_each_bernoulli(*m.drop_rng, m.drop, keep.numel(),
                       [pk](int64_t i, bool fp) { pk[i] = fp ? 1.0f : 0.0f; });
    return where(keep, x, xq);
  }

  /// Initialises every enabled activation quantizer, in forward order, on calibration batches
  /// run through the model with the points before it quantized (the official code does this with
  /// one batch of 64 images). One batch: one pass, each point deciding as the pass reaches it;
  /// several: one pass over all batches per point, so that its observer sees them all.
  void init_activations(const std::vector<Tensor>& batches, const ActivationInit& init = {}) {
    check(!batches.empty(), "init_activations: no calibration batch");
    NoGrad ng;
    for (UniformQuantizer& q : act_q) q.scale = q.zero_point = Tensor();
    const ForwardMode weights{.weights = init.weights, .activations = false};
    nn::ForwardHooks h = hooks(weights);
    const ForwardMode all{.weights = init.weights};
    if (batches.size() == 1) {
      h.activation = [&](int p, const Tensor& x) {
        UniformQuantizer& q = act_q[static_cast<size_t>(p)];
        if (act_enabled[static_cast<size_t>(p)] && !q.initialized()) {
          std::unique_ptr<RangeObserver> o = init.observer(q.config);
          o->observe(x);
          o->decide(q);
        }
        return quantize_activation(p, x, all);
      };
      model.forward(batches.front(), h);
      return;
    }
    for (int current = 0; current < model.num_points(); ++current) {
      UniformQuantizer& q = act_q[static_cast<size_t>(current)];
      if (!act_enabled[static_cast<size_t>(current)]) continue;
      std::unique_ptr<RangeObserver> o = init.observer(q.config);
      h.activation = [&](int p, const Tensor& x) {
        if (p == current) o->observe(x);
        return p < current ? quantize_activation(p, x, all) : x;
      };
      for (const Tensor& b : batches) model.forward(b, h);
      o->decide(q);
    }
  }
  void init_activations(const Tensor& calib, const ActivationInit& init = {}) {
    init_activations(std::vector<Tensor>{calib}, init);
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
  std::vector<Tensor> hard_;  ///< hard-rounded weights, by layer id
};

}  // namespace brecq::quant
