#pragma once
// Quantization-aware training (QAT), the trained baseline BRECQ is measured against: the
// fake-quantized model fine-tuned end to end with the library's autodiff and optimisers.
// - Weights: straight-through rounding (round-to-nearest forward, identity gradient inside the
//   range), per-channel steps learned by LSQ (Esser et al. 2020) with the gradient scale
//   1 / sqrt(weights per channel * qmax); zero points stay at their initial value.
// - Activations: per-tensor steps learned by LSQ, gradient scale 1 / sqrt(features * qmax); the
//   model input keeps its min-max quantizer (it is the image).
// - BatchNorm stays in the model as its own parameters (gamma and beta are trained) with its
//   running statistics frozen, and every forward pass folds it into the conv before quantizing
//   (Jacob et al. 2018's folded-weight simulation, with frozen statistics as they do late in
//   training): the weights quantized in training are exactly those the folded, exported model
//   quantizes, so what is evaluated is what ships. Batch statistics would make the training
//   graph differ from the deployed one; for a short fine-tune on ~1,000 images frozen statistics
//   are also the more stable choice. The fold at the end is the same float computation.
// - Loss: knowledge distillation from the FP model (KL between the softmax of the FP and of the
//   fake-quantized logits) on unlabelled calibration images (as BRECQ's data), or cross-entropy
//   when labels are given.
// - SGD (momentum) or Adam, cosine learning rate to 0 over all steps; optional random crop and
//   horizontal flip. A checkpoint after every epoch resumes an interrupted run to the same result.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "brecq/io/dataset.hpp"
#include "brecq/nn/optim.hpp"
#include "brecq/ops/loss.hpp"
#include "brecq/ops/shape.hpp"
#include "brecq/quant/brecq.hpp"
#include "brecq/quant/progress.hpp"
#include "brecq/quant/qmodel.hpp"
#include "brecq/quant/reconstructor.hpp"
#include "brecq/quant/serialize.hpp"

namespace brecq::quant {

enum class QatLoss { distill, cross_entropy };
enum class QatOptimizer { sgd, adam };

inline QatLoss parse_qat_loss(const std::string& s) {
  if (s == "kd" || s == "distill") return QatLoss::distill;
  if (s == "ce" || s == "cross_entropy") return QatLoss::cross_entropy;
  fail("QAT loss: expected kd or ce, got '", s, "'");
}
inline QatOptimizer parse_qat_optimizer(const std::string& s) {
  if (s == "sgd") return QatOptimizer::sgd;
  if (s == "adam") return QatOptimizer::adam;
  fail("QAT optimizer: expected sgd or adam, got '", s, "'");
}

struct QatSettings {
  int64_t epochs = 8;
  int64_t batch = 32;
  QatOptimizer optimizer = QatOptimizer::adam;
  float lr = 3e-5f;  ///< weights, biases and BatchNorm gamma / beta, cosine-decayed to 0
  /// Weight and activation step sizes, cosine-decayed to 0. Adam learns each step as its
  /// initial value times a factor (from 1), so that this rate is relative and steps of every
  /// size move alike; SGD learns the steps themselves, LSQ's gradient scale making the rate
  /// comparable to that of the weights.
  float lr_steps = 1e-3f;
  float momentum = 0.9f;      ///< SGD only
  float weight_decay = 0.0f;  ///< on weights, biases and BatchNorm parameters (not steps)
  QatLoss loss = QatLoss::distill;
  bool learn_weight_steps = true;  ///< LSQ on the weight steps; false: fixed at their init
  int64_t augment_pad = 4;         ///< random crop after zero padding by this much (0 = off)
  bool augment_flip = true;        ///< random horizontal flip
  int64_t act_init_images = 256;   ///< first training images for the activation range init
  uint64_t seed = 1029;
  ProgressSink progress = terminal_progress();  ///< {} = no progress
};

/// Training images (preprocessed, [N, C, H, W]) and, for cross-entropy, one label per image.
struct QatData {
  Tensor images;
  std::vector<int> labels{};
};

inline void validate(const QatSettings& s) {
  check(s.epochs >= 1, "QAT epochs: expected >= 1, got ", s.epochs);
  check(s.batch >= 1, "QAT batch size: expected >= 1, got ", s.batch);
  check(std::isfinite(s.lr) && s.lr >= 0, "QAT learning rate: expected a finite value >= 0, got ",
        s.lr);
  check(std::isfinite(s.lr_steps) && s.lr_steps >= 0,
        "QAT step-size learning rate: expected a finite value >= 0, got ", s.lr_steps);
  check(s.momentum >= 0 && s.momentum < 1, "QAT SGD momentum: expected in [0, 1), got ",
        s.momentum);
  check(std::isfinite(s.weight_decay) && s.weight_decay >= 0,
        "QAT weight decay: expected a finite value >= 0, got ", s.weight_decay);
  check(s.augment_pad >= 0, "QAT augmentation padding: expected >= 0, got ", s.augment_pad);
  check(s.act_init_images >= 1, "QAT activation init images: expected >= 1, got ",
        s.act_init_images);
}

/// What one epoch did.
struct QatEpochReport {
  int64_t epoch = 0;      ///< 1-based
  double train_loss = 0;  ///< mean over the epoch's batches (augmented, while learning)
  double seconds = 0;
};

namespace detail {

/// The model with every BatchNorm folded into its conv as differentiable ops on the tensors of m
/// (weights, biases, gamma and beta keep their gradients; running statistics are constants):
/// w' = w * g / sqrt(var + eps), b' = (b - mean) * g / sqrt(var + eps) + beta. Training and
/// export both fold through here, so the two compute the same floats.
inline nn::Model qat_fold(const nn::Model& m) {
  nn::Model out = m;  // shares m's tensors; the folded layers get new ones
  for (nn::Layer* l : out.layers()) {
    if (!l->bn) continue;
    const nn::BatchNorm& bn = *l->bn;
    const Tensor f = div(bn.weight, sqrt(add(bn.running_var, bn.eps)));  // [C]
    std::vector<int64_t> dims(static_cast<size_t>(l->weight.ndim()), 1);
    dims[0] = l->out_channels();
    l->weight = mul(l->weight, reshape(f, dims));  // [C, ...] * [C, 1, 1, 1]
    const Tensor centred = l->bias.defined() ? sub(l->bias, bn.running_mean) : neg(bn.running_mean);
    l->bias = add(mul(centred, f), bn.bias);
    l->bn.reset();
  }
  return out;
}

/// Identity forward; the gradient multiplied by g (LSQ's step-size gradient scale).
inline Tensor scale_gradient(const Tensor& x, float g) {
  Tensor out = x.detach();
  autograd::record("scale_gradient", out, {&x},
                   [x, g](const Tensor& grad) { autograd::accumulate_grad(x, mul(grad, g)); });
  return out;
}

/// A learned step: base * factor, the factor learned (Adam: base the initial step, factor 1;
/// SGD: base 1, factor the step).
struct LearnedStep {
  Tensor base, factor;

  static LearnedStep make(const Tensor& initial, QatOptimizer o) {
    const Tensor ones = Tensor::ones(initial.shape());
    LearnedStep s = o == QatOptimizer::adam ? LearnedStep{initial.clone(), ones}
                                            : LearnedStep{ones, initial.clone()};
    s.factor.set_requires_grad(true);
    return s;
  }
  /// The step (differentiable in factor, its gradient scaled by g).
  Tensor value(float g) const {
    return mul(base, autograd::any_requires_grad({&factor}) ? scale_gradient(factor, g) : factor);
  }
};

/// fake_quantize of x under q with the learned step (if any) and LSQ's gradient scale
/// 1 / sqrt(features * qmax) on it.
inline Tensor lsq_quantize(const Tensor& x, const UniformQuantizer& q, const LearnedStep* step,
                           int64_t features) {
  if (!step) return fake_quantize(x, q);
  UniformQuantizer t = q;
  t.scale =
      step->value(static_cast<float>(1.0 / std::sqrt(static_cast<double>(features) * q.qmax())));
  return fake_quantize(x, t);
}

/// Random crop after zero padding by `pad` and a random horizontal flip, per image of x
/// [N, C, H, W] (zero is the mean pixel after normalisation).
inline Tensor augment(const Tensor& x, int64_t pad, bool flip, Rng& rng) {
  const Tensor xc = x.contiguous();
  const int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3);
  Tensor out = Tensor::empty(x.shape());
  const float* src = xc.data<float>();
  float* dst = out.data<float>();
  for (int64_t n = 0; n < N; ++n) {
    const uint64_t span = static_cast<uint64_t>(2 * pad + 1);
    const int64_t dy = pad > 0 ? static_cast<int64_t>(rng.below(span)) - pad : 0;
    const int64_t dx = pad > 0 ? static_cast<int64_t>(rng.below(span)) - pad : 0;
    const bool mirror = flip && rng.below(2) == 1;
    for (int64_t c = 0; c < C; ++c) {
      const float* s = src + (n * C + c) * H * W;
      float* d = dst + (n * C + c) * H * W;
      for (int64_t y = 0; y < H; ++y)
        for (int64_t xx = 0; xx < W; ++xx) {
          const int64_t sy = y + dy, sx = (mirror ? W - 1 - xx : xx) + dx;
          d[y * W + xx] = sy >= 0 && sy < H && sx >= 0 && sx < W ? s[sy * W + sx] : 0.0f;
        }
    }
  }
  return out;
}

/// One optimizer (SGD or Adam) over a group of parameters, with a base learning rate.
class QatOptimizerGroup {
 public:
  QatOptimizerGroup(std::vector<Tensor> params, const QatSettings& s, float lr, float decay)
      : base_lr_(lr) {
    if (s.optimizer == QatOptimizer::sgd)
      sgd_ = std::make_unique<Sgd>(
          std::move(params), SgdParams{.lr = lr, .momentum = s.momentum, .weight_decay = decay});
    else
      adam_ =
          std::make_unique<Adam>(std::move(params), AdamParams{.lr = lr, .weight_decay = decay});
  }
  Optimizer& opt() { return sgd_ ? static_cast<Optimizer&>(*sgd_) : *adam_; }
  float base_lr() const { return base_lr_; }

  /// Appends the optimizer state as tensors named prefix.*, and its step count to meta.
  void save(const std::string& prefix, std::vector<std::pair<std::string, Tensor>>& t,
            std::map<std::string, std::string>& meta) {
    if (sgd_) {
      const std::vector<Tensor>& b = sgd_->momentum_buffers();
      for (size_t i = 0; i < b.size(); ++i)
        if (b[i].defined()) t.emplace_back(prefix + ".momentum." + std::to_string(i), b[i]);
      return;
    }
    for (size_t i = 0; i < adam_->first_moments().size(); ++i) {
      t.emplace_back(prefix + ".m." + std::to_string(i), adam_->first_moments()[i]);
      t.emplace_back(prefix + ".v." + std::to_string(i), adam_->second_moments()[i]);
    }
    meta[prefix + ".steps"] = std::to_string(adam_->steps());
  }
  void load(const std::string& prefix, const SafetensorsFile& f) {
    auto read = [&](const std::string& n, const Tensor& like) {
      Tensor v = f.to_f32(n);
      check(v.shape() == like.shape(), "QAT checkpoint '", f.path(), "': ", n, " has shape ",
            v.shape(), ", expected ", like.shape());
      return v;
    };
    if (sgd_) {
      std::vector<Tensor>& b = sgd_->momentum_buffers();
      for (size_t i = 0; i < b.size(); ++i) {
        const std::string n = prefix + ".momentum." + std::to_string(i);
        b[i] = f.contains(n) ? read(n, sgd_->params()[i]) : Tensor();
      }
      return;
    }
    for (size_t i = 0; i < adam_->first_moments().size(); ++i) {
      adam_->first_moments()[i].copy_from(
          read(prefix + ".m." + std::to_string(i), adam_->params()[i]));
      adam_->second_moments()[i].copy_from(
          read(prefix + ".v." + std::to_string(i), adam_->params()[i]));
    }
    adam_->set_steps(meta_int(f, prefix + ".steps"));
  }

 private:
  float base_lr_;
  std::unique_ptr<Sgd> sgd_;
  std::unique_ptr<Adam> adam_;
};

}  // namespace detail

/// QAT of one model: holds the FP model being fine-tuned (BatchNorm kept), its initial
/// quantizers (a QuantModel's), the learned steps, the FP teacher and the optimizers. Construction
/// sets the starting point: per-channel weight ranges by the L2.4 search on the folded weights
/// (round-to-nearest), activation ranges by the same search on the first act_init_images images.
class QatTrainer {
 public:
  QatTrainer(const nn::Model& fp, const QuantSettings& qs, QatData data, QatSettings s)
      : teacher_(fp.clone()),
        train_(fp.clone()),
        qm_((validate_inputs(qs, data, s), folded_values(train_)), qs),
        data_(std::move(data)),
        s_(std::move(s)) {
    const int64_t n = std::min<int64_t>(s_.act_init_images, data_.images.dim(0));
    qm_.init_activations(data_.images.narrow(0, 0, n));
    std::vector<Tensor> params, steps;
    wsteps_.resize(qm_.weight_q.size());
    asteps_.resize(qm_.act_q.size());
    for (nn::Layer* l : train_.layers()) {
      params.push_back(l->weight);
      if (l->bias.defined()) params.push_back(l->bias);
      if (l->bn) params.push_back(l->bn->weight), params.push_back(l->bn->bias);
      const size_t i = static_cast<size_t>(l->id);
      if (!s_.learn_weight_steps) continue;
      wsteps_[i] = detail::LearnedStep::make(qm_.weight_q[i].scale, s_.optimizer);
      steps.push_back(wsteps_[i]->factor);
    }
    for (size_t p = 0; p < asteps_.size(); ++p)
      if (static_cast<int>(p) != qm_.model.input_point && qm_.act_enabled[p]) {
        asteps_[p] = detail::LearnedStep::make(qm_.act_q[p].scale, s_.optimizer);
        steps.push_back(asteps_[p]->factor);
      }
    for (Tensor& t : params) t.set_requires_grad(true);
    groups_.emplace_back(std::move(params), s_, s_.lr, s_.weight_decay);
    if (!steps.empty()) groups_.emplace_back(std::move(steps), s_, s_.lr_steps, 0.0f);
    if (s_.loss == QatLoss::distill) teacher_logits_ = teacher_forward(data_.images);
  }
  QatTrainer(const QatTrainer&) = delete;
  QatTrainer& operator=(const QatTrainer&) = delete;

  int64_t epochs_done() const { return epochs_done_; }
  int64_t steps_per_epoch() const { return (data_.images.dim(0) + s_.batch - 1) / s_.batch; }
  const QatSettings& settings() const { return s_; }

  /// The fake-quantized training graph on x: BatchNorm folded in the graph, weights and
  /// activations fake-quantized with LSQ steps. Without grad mode it is the deployed model.
  Tensor forward(const Tensor& x) const {
    const nn::Model view = detail::qat_fold(train_);
    nn::ForwardHooks h;
    h.weight = [this](const nn::Layer& l) {
      const size_t i = static_cast<size_t>(l.id);
      return detail::lsq_quantize(l.weight, qm_.weight_q[i], step(wsteps_[i]),
                                  l.weight.numel() / l.out_channels());
    };
    h.activation = [this](int p, const Tensor& a) {
      if (!qm_.act_enabled[static_cast<size_t>(p)]) return a;
      const size_t i = static_cast<size_t>(p);
      return detail::lsq_quantize(a, qm_.act_q[i], step(asteps_[i]), a.numel() / a.dim(0));
    };
    return view.forward(x, h);
  }

  /// The training objective over all training images (no augmentation, no gradient).
  double loss() const {
    NoGrad ng;
    const int64_t N = data_.images.dim(0), chunk = 128;
    double sum = 0;
    for (int64_t b = 0; b < N; b += chunk) {
      const int64_t n = std::min(chunk, N - b);
      const Tensor logits = forward(data_.images.narrow(0, b, n));
      sum += static_cast<double>(objective(logits, b, n, {}).item()) * static_cast<double>(n);
    }
    return sum / static_cast<double>(N);
  }

  /// One epoch: a seeded shuffle of the images (by seed and epoch, so that a resumed run draws
  /// what an uninterrupted one does), batches of s.batch, one optimizer step each.
  QatEpochReport train_epoch() {
    check(epochs_done_ < s_.epochs, "QAT: all ", s_.epochs, " epochs are done");
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t N = data_.images.dim(0), steps = steps_per_epoch();
    const int64_t total = s_.epochs * steps, epoch = epochs_done_;
    const std::vector<int64_t> order =
        seeded_permutation(N, s_.seed * 1000003ull + static_cast<uint64_t>(epoch));
    Rng aug(s_.seed * 7919ull + static_cast<uint64_t>(epoch));
    ProgressBar bar(
        "[QAT epoch " + std::to_string(epoch + 1) + "/" + std::to_string(s_.epochs) + "]", steps,
        s_.progress);
    double sum = 0;
    for (int64_t k = 0; k < steps; ++k) {
      const int64_t t = epoch * steps + k;
      for (detail::QatOptimizerGroup& g : groups_) g.opt().set_lr(cosine_lr(g.base_lr(), t, total));
      const int64_t b0 = k * s_.batch, n = std::min(s_.batch, N - b0);
      const std::vector<int64_t> idx(order.begin() + b0, order.begin() + b0 + n);
      Tensor x = detail::gather_rows(data_.images, idx);
      const bool augmented = s_.augment_pad > 0 || s_.augment_flip;
      if (augmented) x = detail::augment(x, s_.augment_pad, s_.augment_flip, aug);
      Tensor target;
      if (s_.loss == QatLoss::distill)
        target = augmented ? teacher_forward(x) : detail::gather_rows(teacher_logits_, idx);
      const Tensor loss = objective(forward(x), -1, n, target, idx);
      backward(loss);
      for (detail::QatOptimizerGroup& g : groups_) {
        g.opt().step();
        g.opt().zero_grad();
      }
      keep_steps_positive();
      const double l = loss.item();
      sum += l;
      if (bar.active()) {
        std::ostringstream st;
        st.precision(4);
        st << "loss " << l << " mean " << sum / static_cast<double>(k + 1) << " lr "
           << groups_.front().opt().lr();
        bar.update(k + 1, st.str());
      }
    }
    bar.finish();
    ++epochs_done_;
    return {
        .epoch = epochs_done_,
        .train_loss = sum / static_cast<double>(steps),
        .seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()};
  }

  /// The quantized model: BatchNorm folded (the same floats as in training), the learned steps,
  /// weights on their levels by round-to-nearest. Its forward equals forward() without grad
  /// mode; save it with save_quantized (after snap_biases, as `brecq qat` does).
  QuantModel quantized() const {
    NoGrad ng;
    QuantModel q(folded_values(train_), qm_.settings, /*init_weight_ranges=*/false);
    for (const nn::Layer* l : q.model.layers()) {
      const size_t i = static_cast<size_t>(l->id);
      UniformQuantizer& wq = q.weight_q[i];
      wq.config = qm_.weight_q[i].config;
      wq.scale = wsteps_[i] ? wsteps_[i]->value(1.0f).clone() : qm_.weight_q[i].scale.clone();
      wq.zero_point = qm_.weight_q[i].zero_point.clone();
      const Tensor w = fake_quantize(l->weight, wq);  // what training used
      Tensor levels = Tensor::empty(w.shape(), DType::u8);
      const int64_t per = w.numel() / wq.channels();
      for (int64_t k = 0; k < w.numel(); ++k) {
        const int64_t c = k / per;
        const float v = std::nearbyint(w.data<float>()[k] / wq.scale.data<float>()[c]) +
                        wq.zero_point.data<float>()[c];
        levels.data<uint8_t>()[k] = static_cast<uint8_t>(std::clamp(v, 0.0f, wq.qmax()));
      }
      q.set_weight_levels(*l, levels);
    }
    for (size_t p = 0; p < q.act_q.size(); ++p) {
      q.act_q[p].config = qm_.act_q[p].config;
      q.act_enabled[p] = qm_.act_enabled[p];
      if (!qm_.act_q[p].initialized()) continue;
      q.act_q[p].scale = asteps_[p] ? asteps_[p]->value(1.0f).clone() : qm_.act_q[p].scale.clone();
      q.act_q[p].zero_point = qm_.act_q[p].zero_point.clone();
    }
    return q;
  }

  /// Everything that changes the result, as "name=value" fields (the checkpoint key): the FP
  /// model, the bit-widths, the settings, the training data and the thread count.
  std::string key() const {
    uint64_t fp = detail::hash_bytes(teacher_.arch.data(), teacher_.arch.size());
    for (const auto& [name, t] : teacher_.state_dict())
      fp = detail::hash_tensor(t, detail::hash_bytes(name.data(), name.size(), fp));
    uint64_t data = detail::hash_tensor(data_.images, 14695981039346656037ull);
    data = detail::hash_bytes(data_.labels.data(), data_.labels.size() * sizeof(int), data);
    const QuantSettings& qs = qm_.settings;
    std::ostringstream k;
    k.precision(9);
    k << std::hex << "model=" << teacher_.arch << " fp=" << fp << " data=" << data << std::dec
      << " n=" << data_.images.dim(0) << " w_bits=" << qs.w_bits << " a_bits=" << qs.a_bits
      << " first_last_bits=" << qs.first_last_bits << " input_bits=" << qs.input_bits
      << " w_init=" << static_cast<int>(qs.w_init) << " a_init=" << static_cast<int>(qs.a_init)
      << " w_symmetric=" << qs.w_symmetric;
    for (const auto& [name, b] : qs.layer_w_bits) k << " w_bits[" << name << "]=" << b;
    for (const auto& [name, b] : qs.point_a_bits) k << " a_bits[" << name << "]=" << b;
    k << " epochs=" << s_.epochs << " batch=" << s_.batch
      << " optimizer=" << (s_.optimizer == QatOptimizer::sgd ? "sgd" : "adam") << " lr=" << s_.lr
      << " lr_steps=" << s_.lr_steps << " momentum=" << s_.momentum
      << " weight_decay=" << s_.weight_decay
      << " loss=" << (s_.loss == QatLoss::distill ? "kd" : "ce")
      << " learn_weight_steps=" << s_.learn_weight_steps << " augment_pad=" << s_.augment_pad
      << " augment_flip=" << s_.augment_flip << " act_init_images=" << s_.act_init_images
      << " seed=" << s_.seed << " threads=" << num_threads();
    return k.str();
  }

  /// Writes the state after the epochs done so far (atomically: a temporary file renamed).
  void save_checkpoint(const std::string& path, const std::string& key) {
    std::vector<std::pair<std::string, Tensor>> t;
    for (const auto& [name, v] : train_.state_dict())
      if (!name.ends_with(".running_mean") && !name.ends_with(".running_var"))
        t.emplace_back("fp." + name, v);
    for (const nn::Layer* l : qm_.model.layers())
      if (wsteps_[static_cast<size_t>(l->id)])
        t.emplace_back("wq." + l->name + ".factor", wsteps_[static_cast<size_t>(l->id)]->factor);
    for (size_t p = 0; p < asteps_.size(); ++p)
      if (asteps_[p])
        t.emplace_back(detail::act_name(static_cast<int>(p)) + ".factor", asteps_[p]->factor);
    std::map<std::string, std::string> meta{{"format", "brecq-qat-checkpoint-1"},
                                            {"key", key},
                                            {"epochs_done", std::to_string(epochs_done_)}};
    for (size_t g = 0; g < groups_.size(); ++g) groups_[g].save("opt" + std::to_string(g), t, meta);
    save_safetensors(path, t, {.metadata = meta});
  }

  /// Restores a checkpoint written by a run with the same key; any other is refused with the
  /// differing fields named.
  void load_checkpoint(const std::string& path, const std::string& key) {
    const SafetensorsFile f(path);
    auto k = f.metadata().find("key");
    const std::string theirs = k == f.metadata().end() ? "(none)" : k->second;
    check(theirs == key, "QAT checkpoint '", path,
          "' was written by a run with other settings; delete it or choose another --out.\n  "
          "differs: ",
          detail::key_difference(key, theirs), "\n  this run: ", key, "\n  checkpoint: ", theirs);
    auto restore = [&](const std::string& n, Tensor& dst) {
      const Tensor v = f.to_f32(n);
      check(v.shape() == dst.shape(), "QAT checkpoint '", path, "': ", n, " has shape ", v.shape(),
            ", expected ", dst.shape());
      dst.copy_from(v);
    };
    for (auto& [name, v] : train_.state_dict())
      if (!name.ends_with(".running_mean") && !name.ends_with(".running_var"))
        restore("fp." + name, v);
    for (const nn::Layer* l : qm_.model.layers())
      if (wsteps_[static_cast<size_t>(l->id)])
        restore("wq." + l->name + ".factor", wsteps_[static_cast<size_t>(l->id)]->factor);
    for (size_t p = 0; p < asteps_.size(); ++p)
      if (asteps_[p])
        restore(detail::act_name(static_cast<int>(p)) + ".factor", asteps_[p]->factor);
    for (size_t g = 0; g < groups_.size(); ++g) groups_[g].load("opt" + std::to_string(g), f);
    epochs_done_ = detail::meta_int(f, "epochs_done");
    check(epochs_done_ >= 0 && epochs_done_ <= s_.epochs, "QAT checkpoint '", path,
          "': ", epochs_done_, " epochs done, expected 0..", s_.epochs);
  }

 private:
  static int validate_inputs(const QuantSettings& qs, const QatData& data, const QatSettings& s) {
    validate(qs);
    validate(s);
    check(qs.fold_batchnorm,
          "QAT: QuantSettings::fold_batchnorm must be true (BatchNorm is folded into the "
          "quantized weights in every training step and at the end), got false");
    check(data.images.defined() && data.images.ndim() == 4 && data.images.dim(0) >= 1,
          "QAT training images: expected [N, C, H, W] with N >= 1, got ",
          data.images.defined() ? data.images.shape().str() : std::string("none"));
    check(s.augment_pad < data.images.dim(2) && s.augment_pad < data.images.dim(3),
          "QAT augmentation padding: expected less than the image size ", data.images.dim(2), "x",
          data.images.dim(3), ", got ", s.augment_pad);
    if (s.loss == QatLoss::cross_entropy)
      check(static_cast<int64_t>(data.labels.size()) == data.images.dim(0),
            "QAT cross-entropy loss: expected one label per training image (", data.images.dim(0),
            "), got ", data.labels.size(), " (without labels use the distillation loss)");
    return 0;
  }

  /// train_'s values with BatchNorm folded, no autograd history.
  static nn::Model folded_values(const nn::Model& m) {
    NoGrad ng;
    nn::Model f = detail::qat_fold(m);
    for (nn::Layer* l : f.layers()) {
      l->weight = l->weight.clone();
      if (l->bias.defined()) l->bias = l->bias.clone();
    }
    return f;
  }

  Tensor teacher_forward(const Tensor& x) const {
    NoGrad ng;
    const int64_t N = x.dim(0), chunk = 128;
    std::vector<Tensor> parts;
    for (int64_t b = 0; b < N; b += chunk)
      parts.push_back(teacher_.forward(x.narrow(0, b, std::min(chunk, N - b))));
    return detail::stack_batches(parts);
  }

  /// The loss of logits for images [b0, b0 + n) (b0 >= 0) or for images idx (b0 < 0) against the
  /// FP teacher's logits (target, or the cached ones) or the labels.
  Tensor objective(const Tensor& logits, int64_t b0, int64_t n, const Tensor& target,
                   const std::vector<int64_t>& idx = {}) const {
    if (s_.loss == QatLoss::distill)
      return kl_div(logits, target.defined() ? target : teacher_logits_.narrow(0, b0, n));
    std::vector<int> labels;
    for (int64_t i = 0; i < n; ++i)
      labels.push_back(
          data_.labels[static_cast<size_t>(b0 >= 0 ? b0 + i : idx[static_cast<size_t>(i)])]);
    return cross_entropy(logits, labels);
  }

  /// Step sizes stay positive whatever a large learning rate does.
  void keep_steps_positive() {
    for (auto* steps : {&wsteps_, &asteps_})
      for (std::optional<detail::LearnedStep>& st : *steps) {
        if (!st) continue;
        float* f = st->factor.data<float>();
        const float* b = st->base.data<float>();
        for (int64_t i = 0; i < st->factor.numel(); ++i) f[i] = std::max(f[i], 1e-8f / b[i]);
      }
  }

  static const detail::LearnedStep* step(const std::optional<detail::LearnedStep>& s) {
    return s ? &*s : nullptr;
  }

  nn::Model teacher_;  ///< the FP model, BatchNorm in eval mode
  nn::Model train_;    ///< the model being fine-tuned, BatchNorm kept (statistics frozen)
  QuantModel qm_;      ///< initial quantizers: configs, zero points, the steps not learned
  QatData data_;
  QatSettings s_;
  Tensor teacher_logits_;  ///< distill: the teacher's logits of every training image
  std::vector<std::optional<detail::LearnedStep>> wsteps_;  ///< by layer id, when learned
  std::vector<std::optional<detail::LearnedStep>> asteps_;  ///< by activation point
  std::vector<detail::QatOptimizerGroup> groups_;
  int64_t epochs_done_ = 0;
};

struct QatRunOptions {
  /// Written after each epoch, removed at the end ("" = none). A checkpoint is resumed only by a
  /// run with the same key (QatTrainer::key plus `key`); any other is refused.
  std::string checkpoint{};
  std::string key{};  ///< extra identity the library cannot see (e.g. file paths)
  std::function<void(const QatEpochReport&)> on_epoch_done{};  ///< after its checkpoint
};

struct QatReport {
  double loss_before = 0;  ///< objective over the training images where this run started
  double loss_after = 0;   ///< and at its end
  std::vector<QatEpochReport> epochs{};  ///< those this run trained
  int64_t resumed_epochs = 0;            ///< epochs restored from the checkpoint
  double seconds = 0;
};

struct QatResult {
  QuantModel model;  ///< BatchNorm folded, ready for snap_biases and save_quantized
  QatReport report;
};

/// QAT of `fp` (with its BatchNorm layers) at the bit-widths of qs on `data`.
inline QatResult run_qat(const nn::Model& fp, const QuantSettings& qs, QatData data, QatSettings s,
                         const QatRunOptions& o = {}) {
  const auto t0 = std::chrono::steady_clock::now();
  QatTrainer trainer(fp, qs, std::move(data), std::move(s));
  QatReport rep;
  const std::string key =
      o.checkpoint.empty() ? std::string() : trainer.key() + (o.key.empty() ? "" : " ") + o.key;
  if (!o.checkpoint.empty() && std::filesystem::exists(o.checkpoint)) {
    trainer.load_checkpoint(o.checkpoint, key);
    rep.resumed_epochs = trainer.epochs_done();
    std::fprintf(stderr, "resuming from %s: %lld of %lld epochs done\n", o.checkpoint.c_str(),
                 static_cast<long long>(rep.resumed_epochs),
                 static_cast<long long>(trainer.settings().epochs));
  }
  rep.loss_before = trainer.loss();
  while (trainer.epochs_done() < trainer.settings().epochs) {
    rep.epochs.push_back(trainer.train_epoch());
    if (!o.checkpoint.empty()) trainer.save_checkpoint(o.checkpoint, key);
    if (o.on_epoch_done) o.on_epoch_done(rep.epochs.back());
  }
  rep.loss_after = trainer.loss();
  if (!o.checkpoint.empty()) std::filesystem::remove(o.checkpoint);
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return {trainer.quantized(), std::move(rep)};
}

}  // namespace brecq::quant
