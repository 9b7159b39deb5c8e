#pragma once
// BRECQ reconstruction: one loop for every granularity. For each unit: cache its inputs (from the
// quantized model), targets (from the FP model) and optional Fisher weights once, then learn the
// rounding of its weights (AdaRound) with the activations in FP; after all units, initialise the
// activation quantizers and learn their step sizes unit by unit with the weights fixed.
#include <chrono>
#include <cstring>
#include <functional>
#include <optional>
#include <sstream>

#include "brecq/nn/optim.hpp"
#include "brecq/ops/loss.hpp"
#include "brecq/quant/granularity.hpp"
#include "brecq/quant/progress.hpp"
#include "brecq/quant/qmodel.hpp"

namespace brecq::quant {

enum class ReconLoss { mse, fisher };

/// brecq: the official two passes (AdaRound with activations in FP, then activation step sizes
/// with the weights fixed). qdrop (Wei et al., ICLR 2022): activation quantizers initialised
/// first, then one pass per unit learning the rounding and the activation steps together, with
/// activations quantized, each element of them (and of the unit input) kept in FP with
/// probability `qdrop`.
enum class Recipe { brecq, qdrop };

inline Recipe parse_recipe(const std::string& s) {
  if (s == "brecq") return Recipe::brecq;
  if (s == "qdrop") return Recipe::qdrop;
  fail("--recipe: expected brecq or qdrop, got '", s, "'");
}

inline ReconLoss parse_recon_loss(const std::string& s) {
  if (s == "mse") return ReconLoss::mse;
  if (s == "fisher" || s == "fisher_diag") return ReconLoss::fisher;
  fail("--loss: expected mse or fisher, got '", s, "'");
}

/// Official BRECQ defaults (yhhhli/BRECQ) unless noted.
struct ReconstructionSettings {
  int64_t batch = 32;
  int64_t iters_w = 20000;
  int64_t iters_a = 5000;
  float lr_w = 1e-3f;    ///< Adam on AdaRound's alpha
  float lr_a = 4e-4f;    ///< Adam on activation steps, cosine-decayed to 0
  float lambda = 0.01f;  ///< rounding regulariser weight
  float warmup = 0.2f;   ///< fraction of iterations without the regulariser
  float beta_start = 20.0f, beta_end = 2.0f;
  float p_w = 2.0f;  ///< L_p exponent of the weight pass (MSE)
  float p_a = 2.4f;  ///< L_p exponent of the activation pass
  ReconLoss loss = ReconLoss::mse;
  Recipe recipe = Recipe::brecq;
  float qdrop = 0.0f;        ///< probability of keeping an activation in FP while learning
                             ///< activation steps (brecq: activation pass, 0 = off; qdrop: 0.5)
  float lr_a_joint = 4e-5f;  ///< qdrop recipe: Adam on activation steps, cosine (QDrop's value)
  bool act_input_quantized = false;  ///< activation pass input from the quantized model
                                     ///< (official: from the FP model)
  int64_t act_init_images = 64;      ///< calibration images for activation range init
  uint64_t seed = 1029;
  bool progress = true;
};

inline void validate(const ReconstructionSettings& s) {
  check(s.batch >= 1, "batch size: expected >= 1, got ", s.batch);
  check(s.iters_w >= 0 && s.iters_a >= 0, "iterations: expected >= 0, got ", s.iters_w, " / ",
        s.iters_a);
  check(s.lambda >= 0, "lambda: expected >= 0, got ", s.lambda);
  check(s.warmup >= 0 && s.warmup < 1, "warmup: expected in [0, 1), got ", s.warmup);
  check(s.qdrop >= 0 && s.qdrop < 1, "qdrop: expected in [0, 1), got ", s.qdrop);
  check(s.recipe == Recipe::brecq || s.qdrop > 0,
        "qdrop recipe: drop probability expected in (0, 1), got ", s.qdrop);
  check(s.act_init_images >= 1, "activation init images: expected >= 1, got ", s.act_init_images);
}

/// What happened to one unit in one pass.
struct UnitReport {
  std::string unit, pass;
  double loss_before = 0, loss_after = 0;  ///< reconstruction loss on held cached samples
  double seconds = 0;
  int64_t iterations = 0;
};

/// Called after each finished unit (e.g. to save a checkpoint). Arguments: pass ("weights" or
/// "activations") and the number of units of that pass now done.
using UnitDoneCallback = std::function<void(const std::string& pass, size_t units_done)>;

namespace detail {

/// Rows idx of a [N, ...] tensor.
inline Tensor gather_rows(const Tensor& all, const std::vector<int64_t>& idx) {
  std::vector<int64_t> dims = all.shape().dims();
  dims[0] = static_cast<int64_t>(idx.size());
  Tensor out = Tensor::empty(Shape(dims));
  const int64_t row = all.numel() / all.dim(0);
  const float* src = all.data<float>();
  float* dst = out.data<float>();
  for (size_t i = 0; i < idx.size(); ++i)
    std::memcpy(dst + static_cast<int64_t>(i) * row, src + idx[i] * row,
                sizeof(float) * static_cast<size_t>(row));
  return out;
}

/// `k` distinct indices of [0, n) (a prefix of a random permutation, as torch.randperm(n)[:k]).
inline std::vector<int64_t> sample_indices(Rng& rng, int64_t n, int64_t k,
                                           std::vector<int64_t>& perm) {
  perm.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm[static_cast<size_t>(i)] = i;
  k = std::min(k, n);
  for (int64_t i = 0; i < k; ++i)
    std::swap(perm[static_cast<size_t>(i)],
              perm[static_cast<size_t>(
                  i + static_cast<int64_t>(rng.below(static_cast<uint64_t>(n - i))))]);
  return std::vector<int64_t>(perm.begin(), perm.begin() + k);
}

/// Stacks [n_i, ...] batches into one [sum n_i, ...] tensor.
inline Tensor stack_batches(const std::vector<Tensor>& parts) {
  std::vector<int64_t> dims = parts.front().shape().dims();
  int64_t n = 0;
  for (const Tensor& t : parts) n += t.dim(0);
  dims[0] = n;
  Tensor out = Tensor::empty(Shape(dims));
  size_t at = 0;
  for (const Tensor& t : parts) {
    std::memcpy(out.raw_data() + at, t.contiguous().raw_data(), t.nbytes());
    at += t.nbytes();
  }
  return out;
}

}  // namespace detail

/// Reconstruction loss: mean over the batch and spatial positions of the channel sum of
/// |pred - target|^p, or of (pred - target)^2 * w^2 with Fisher weights w (official fisher_diag).
inline Tensor reconstruction_loss(const Tensor& pred, const Tensor& target, const Tensor& fisher,
                                  float p) {
  return fisher.defined() ? lp_loss(pred, target, 2.0f, fisher) : lp_loss(pred, target, p);
}

template <typename Granularity>
class Reconstructor {
 public:
  Reconstructor(QuantModel& qm, const Tensor& calib, ReconstructionSettings s)
      : qm_(qm), calib_(calib), s_(std::move(s)), units_(Granularity::units(qm.model)) {
    validate(s_);
    check(calib.ndim() == 4 && calib.dim(0) >= 1, "calibration data: expected [N, C, H, W], got ",
          calib.shape());
  }

  const std::vector<Unit>& units() const { return units_; }

  /// Weight pass over units [start, end) (start > 0 resumes).
  std::vector<UnitReport> weight_pass(size_t start = 0, const UnitDoneCallback& done = {}) {
    std::vector<UnitReport> out;
    for (size_t i = start; i < units_.size(); ++i) {
      out.push_back(learn_rounding(units_[i], i));
      if (done) done("weights", i + 1);
    }
    return out;
  }

  /// Whether rounding and activation steps are learned together (the qdrop recipe with
  /// activation quantization).
  bool joint() const { return s_.recipe == Recipe::qdrop && qm_.settings.a_bits > 0; }

  /// Initialises activation quantizers on the first act_init_images calibration images, run
  /// through the weight-quantized model (brecq, after the weight pass) or the FP model (qdrop,
  /// before it).
  void init_activations() {
    const int64_t n = std::min<int64_t>(s_.act_init_images, calib_.dim(0));
    const bool wq = qm_.weight_quant;
    qm_.weight_quant = !joint();
    qm_.init_activations(calib_.narrow(0, 0, n));
    qm_.weight_quant = wq;
  }

  /// Activation pass over units [start, end).
  std::vector<UnitReport> activation_pass(size_t start = 0, const UnitDoneCallback& done = {}) {
    std::vector<UnitReport> out;
    for (size_t i = start; i < units_.size(); ++i) {
      UnitReport r = learn_act_steps(units_[i], i);
      if (r.iterations > 0) out.push_back(r);
      if (done) done("activations", i + 1);
    }
    return out;
  }

 private:
  struct Cache {
    Tensor inputs, targets, fisher;
    Tensor fp_inputs;  ///< joint mode: the unit input in the FP model, mixed into `inputs`
  };

  std::vector<const nn::Layer*> unit_layers(const Unit& u) const {
    if (u.layer) return {u.layer};
    std::vector<const nn::Layer*> out;
    for (size_t b = u.first_block; b < u.last_block; ++b) {
      for (const nn::Layer& l : qm_.model.blocks[b].layers) out.push_back(&l);
      for (const nn::Layer& l : qm_.model.blocks[b].shortcut_layers) out.push_back(&l);
    }
    return out;
  }
  std::vector<int> unit_points(const Unit& u) const {
    if (u.layer)
      return u.layer->act_point >= 0 ? std::vector<int>{u.layer->act_point} : std::vector<int>{};
    return qm_.points_in_blocks(u.first_block, u.last_block);
  }

  Tensor unit_forward(const Unit& u, const Tensor& x, const nn::ForwardHooks& h) const {
    if (u.layer) return nn::forward_layer(*u.layer, x, h);
    return qm_.model.forward_blocks(x, u.first_block, u.last_block, h);
  }

  /// Runs the model on x up to the unit and returns (unit input, unit output).
  std::pair<Tensor, Tensor> unit_io(const Unit& u, const Tensor& x,
                                    const nn::ForwardHooks& h) const {
    if (!u.layer) {
      Tensor in = qm_.model.forward_blocks(x, 0, u.first_block, h);
      return {in, qm_.model.forward_blocks(in, u.first_block, u.last_block, h)};
    }
    std::pair<Tensor, Tensor> io;
    nn::ForwardHooks hc = h;
    hc.layer_output = [&](const nn::Layer& l, const Tensor& in, const Tensor& out) {
      if (&l == u.layer) io = {in, out};
      return out;
    };
    qm_.model.forward_blocks(x, 0, u.first_block + 1, hc);
    return io;
  }

  /// Unit inputs and targets for all calibration images, and Fisher weights if asked.
  Cache cache(const Unit& u, bool act_pass) {
    Cache c;
    if (s_.loss == ReconLoss::fisher) c.fisher = fisher_weights(u, act_pass);
    NoGrad ng;
    const int64_t N = calib_.dim(0), chunk = 128;
    std::vector<Tensor> ins, outs, fp_ins;
    const bool wq = qm_.weight_quant, aq = qm_.act_quant;
    // Rounding is learned on the quantized model's inputs (so a unit makes up for the error of
    // those before it); the official activation pass takes the FP model's.
    const bool quantized_input = !act_pass || joint() || s_.act_input_quantized;
    for (int64_t b = 0; b < N; b += chunk) {
      Tensor x = calib_.narrow(0, b, std::min(chunk, N - b));
      qm_.weight_quant = false, qm_.act_quant = false;
      auto [fp_in, fp_out] = unit_io(u, x, qm_.hooks());
      outs.push_back(fp_out);
      if (joint()) fp_ins.push_back(fp_in);
      if (quantized_input) {
        qm_.weight_quant = true, qm_.act_quant = act_pass;
        ins.push_back(unit_io(u, x, qm_.hooks()).first);
      } else {
        ins.push_back(fp_in);
      }
    }
    qm_.weight_quant = wq, qm_.act_quant = aq;
    c.inputs = detail::stack_batches(ins);
    c.targets = detail::stack_batches(outs);
    if (joint()) c.fp_inputs = detail::stack_batches(fp_ins);
    return c;
  }

  /// |dKL/dz| + 1 at the unit output z, with the model quantized up to and including the unit
  /// (the official fisher_diag: KL between the quantized and FP predictions, batches of 32).
  Tensor fisher_weights(const Unit& u, bool act_pass) {
    const int64_t N = calib_.dim(0), chunk = 32;
    if (!fp_logits_.defined()) {
      NoGrad ng;
      const bool wq = qm_.weight_quant, aq = qm_.act_quant;
      qm_.weight_quant = qm_.act_quant = false;
      std::vector<Tensor> parts;
      for (int64_t b = 0; b < N; b += chunk)
        parts.push_back(qm_.forward(calib_.narrow(0, b, std::min(chunk, N - b))));
      fp_logits_ = detail::stack_batches(parts);
      qm_.weight_quant = wq, qm_.act_quant = aq;
    }
    int max_layer = -1, max_point = -1;
    for (const nn::Layer* l : unit_layers(u)) max_layer = std::max(max_layer, l->id);
    for (int p : unit_points(u)) max_point = std::max(max_point, p);
    const bool wq = qm_.weight_quant, aq = qm_.act_quant;
    qm_.weight_quant = true, qm_.act_quant = act_pass;
    qm_.quantized_until_layer = max_layer;
    qm_.quantized_until_point = max_point;
    std::vector<Tensor> grads;
    for (int64_t b = 0; b < N; b += chunk) {
      const int64_t n = std::min(chunk, N - b);
      Tensor x = calib_.narrow(0, b, n);
      Tensor leaf;
      nn::ForwardHooks h = qm_.hooks();
      Tensor logits;
      if (u.layer) {
        h.layer_output = [&](const nn::Layer& l, const Tensor&, const Tensor& out) {
          if (&l != u.layer) return out;
          leaf = out.detach();
          leaf.set_requires_grad(true);
          return leaf;
        };
        logits = qm_.model.forward(x, h);
      } else {
        Tensor z;
        {
          NoGrad ng;
          z = qm_.model.forward_blocks(x, 0, u.last_block, h);
        }
        leaf = z.detach();
        leaf.set_requires_grad(true);
        logits = qm_.model.forward_blocks(leaf, u.last_block, qm_.model.blocks.size(), h);
      }
      Tensor loss = kl_div(logits, fp_logits_.narrow(0, b, n));
      backward(loss);
      grads.push_back(abs(leaf.grad()) + 1.0f);
    }
    qm_.quantized_until_layer = qm_.quantized_until_point = std::numeric_limits<int>::max();
    qm_.weight_quant = wq, qm_.act_quant = aq;
    return detail::stack_batches(grads);
  }

  /// Reconstruction loss of the current state on up to 256 cached samples (no gradient).
  double held_loss(const Unit& u, const Cache& c, float p, bool act) {
    NoGrad ng;
    const int64_t n = std::min<int64_t>(256, c.inputs.dim(0));
    const bool wq = qm_.weight_quant, aq = qm_.act_quant;
    qm_.weight_quant = true, qm_.act_quant = act;
    Tensor out = unit_forward(u, c.inputs.narrow(0, 0, n), qm_.hooks());
    qm_.weight_quant = wq, qm_.act_quant = aq;
    Tensor f = c.fisher.defined() ? c.fisher.narrow(0, 0, n) : Tensor();
    return reconstruction_loss(out, c.targets.narrow(0, 0, n), f, p).item();
  }

  UnitReport learn_rounding(const Unit& u, size_t index) {
    const auto t0 = std::chrono::steady_clock::now();
    UnitReport r{u.name, "weights", 0, 0, 0, s_.iters_w};
    const auto layers = unit_layers(u);
    for (const nn::Layer* l : layers) qm_.begin_rounding(*l);
    const bool joint_unit = joint();  // activations quantized, their steps learned alongside
    Cache c = cache(u, joint_unit);
    // "before": round-to-nearest, the baseline AdaRound has to beat.
    {
      std::set<int> learning = qm_.learning;
      qm_.learning.clear();
      r.loss_before = held_loss(u, c, s_.p_w, joint_unit);
      qm_.learning = learning;
    }
    std::vector<Tensor> alphas;
    for (const nn::Layer* l : layers)
      alphas.push_back(qm_.rounding[static_cast<size_t>(l->id)]->alpha);
    Adam opt(alphas, {.lr = s_.lr_w});
    std::vector<Tensor> steps = joint_unit ? learnable_steps(u) : std::vector<Tensor>{};
    for (Tensor& st : steps) st.set_requires_grad(true);
    std::optional<Adam> step_opt;
    if (!steps.empty()) step_opt.emplace(steps, AdamParams{.lr = s_.lr_a_joint});
    Rng rng(s_.seed * 1000003ull + index);
    qm_.drop_rng = Rng(s_.seed * 7919ull + index);
    std::vector<int64_t> perm;
    ProgressBar bar("[W " + std::to_string(index + 1) + "/" + std::to_string(units_.size()) + " " +
                        u.name + "]",
                    s_.iters_w, s_.progress);
    const bool wq = qm_.weight_quant, aq = qm_.act_quant;
    qm_.weight_quant = true, qm_.act_quant = joint_unit;
    if (joint_unit) qm_.qdrop = s_.qdrop;
    const nn::ForwardHooks h = qm_.hooks(/*training=*/joint_unit);
    const int64_t reg_start = static_cast<int64_t>(s_.warmup * static_cast<float>(s_.iters_w));
    for (int64_t t = 1; t <= s_.iters_w; ++t) {
      if (step_opt) step_opt->set_lr(cosine_lr(s_.lr_a_joint, t - 1, s_.iters_w));
      auto idx = detail::sample_indices(rng, c.inputs.dim(0), s_.batch, perm);
      Tensor x = detail::gather_rows(c.inputs, idx);
      if (joint_unit) x = mix_inputs(x, detail::gather_rows(c.fp_inputs, idx));
      Tensor out = unit_forward(u, x, h);
      Tensor f = c.fisher.defined() ? detail::gather_rows(c.fisher, idx) : Tensor();
      Tensor rec = reconstruction_loss(out, detail::gather_rows(c.targets, idx), f, s_.p_w);
      Tensor total = rec;
      float reg_value = 0.0f;
      if (t >= reg_start && s_.lambda > 0) {
        const float beta = adaround_beta(t, s_.iters_w, s_.warmup, s_.beta_start, s_.beta_end);
        Tensor reg;
        for (const nn::Layer* l : layers) {
          Tensor rl = qm_.rounding[static_cast<size_t>(l->id)]->regularizer(beta);
          reg = reg.defined() ? add(reg, rl) : rl;
        }
        reg = mul(reg, s_.lambda);
        reg_value = reg.item();
        total = add(rec, reg);
      }
      backward(total);
      opt.step();
      opt.zero_grad();
      if (step_opt) {
        step_opt->step();
        step_opt->zero_grad();
      }
      if (s_.progress) {
        std::ostringstream st;
        st.precision(4);
        st << "rec " << rec.item() << " round " << reg_value;
        bar.update(t, st.str());
      }
    }
    bar.finish();
    qm_.qdrop = 0.0f;
    qm_.weight_quant = wq, qm_.act_quant = aq;
    for (Tensor& st : steps) st.set_requires_grad(false);
    for (const nn::Layer* l : layers) qm_.end_rounding(*l);
    r.loss_after = held_loss(u, c, s_.p_w, joint_unit);
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
  }

  /// The activation step sizes a unit learns (its enabled, initialised points).
  std::vector<Tensor> learnable_steps(const Unit& u) const {
    std::vector<Tensor> steps;
    for (int p : unit_points(u))
      if (qm_.act_enabled[static_cast<size_t>(p)] &&
          qm_.act_q[static_cast<size_t>(p)].initialized())
        steps.push_back(qm_.act_q[static_cast<size_t>(p)].scale);
    return steps;
  }

  /// QDrop's unit input: each element from the quantized model's input, with probability qdrop,
  /// or else from the FP model's.
  Tensor mix_inputs(const Tensor& quantized, const Tensor& fp) {
    Tensor out = Tensor::empty(quantized.shape());
    const float* q = quantized.data<float>();
    const float* f = fp.data<float>();
    float* o = out.data<float>();
    for_each_bernoulli(qm_.drop_rng, s_.qdrop, out.numel(),
                       [=](int64_t i, bool from_q) { o[i] = from_q ? q[i] : f[i]; });
    return out;
  }

  UnitReport learn_act_steps(const Unit& u, size_t index) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<Tensor> steps = learnable_steps(u);
    UnitReport r{u.name, "activations", 0, 0, 0, steps.empty() ? 0 : s_.iters_a};
    if (steps.empty() || s_.iters_a == 0) return r;
    Cache c = cache(u, true);
    r.loss_before = held_loss(u, c, s_.p_a, true);
    for (Tensor& t : steps) t.set_requires_grad(true);
    Adam opt(steps, {.lr = s_.lr_a});
    Rng rng(s_.seed * 1000003ull + 500009ull + index);
    qm_.drop_rng = Rng(s_.seed * 7919ull + index);
    qm_.qdrop = s_.qdrop;
    std::vector<int64_t> perm;
    ProgressBar bar("[A " + std::to_string(index + 1) + "/" + std::to_string(units_.size()) + " " +
                        u.name + "]",
                    s_.iters_a, s_.progress);
    const bool wq = qm_.weight_quant, aq = qm_.act_quant;
    qm_.weight_quant = true, qm_.act_quant = true;
    const nn::ForwardHooks h = qm_.hooks(/*training=*/true);
    for (int64_t t = 1; t <= s_.iters_a; ++t) {
      opt.set_lr(cosine_lr(s_.lr_a, t - 1, s_.iters_a));
      auto idx = detail::sample_indices(rng, c.inputs.dim(0), s_.batch, perm);
      Tensor out = unit_forward(u, detail::gather_rows(c.inputs, idx), h);
      Tensor f = c.fisher.defined() ? detail::gather_rows(c.fisher, idx) : Tensor();
      Tensor rec = reconstruction_loss(out, detail::gather_rows(c.targets, idx), f, s_.p_a);
      backward(rec);
      opt.step();
      opt.zero_grad();
      if (s_.progress) {
        std::ostringstream st;
        st.precision(4);
        st << "rec " << rec.item();
        bar.update(t, st.str());
      }
    }
    bar.finish();
    qm_.qdrop = 0.0f;
    qm_.weight_quant = wq, qm_.act_quant = aq;
    for (Tensor& t : steps) t.set_requires_grad(false);
    r.loss_after = held_loss(u, c, s_.p_a, true);
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
  }

  QuantModel& qm_;
  Tensor calib_;
  ReconstructionSettings s_;
  std::vector<Unit> units_;
  Tensor fp_logits_;
};

}  // namespace brecq::quant
