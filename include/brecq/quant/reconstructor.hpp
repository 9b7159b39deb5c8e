#pragma once
// BRECQ reconstruction: one loop for every granularity, and one optimisation routine for every
// pass. For each unit: cache its inputs (from the quantized model), targets (from the FP model)
// and optional Fisher weights once, then learn the rounding of its weights (AdaRound) with the
// activations in FP; after all units, initialise the activation quantizers and learn their step
// sizes unit by unit with the weights fixed. The qdrop recipe learns both in one pass per unit.
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <sstream>

#include "brecq/nn/models.hpp"
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
  std::string cache_dir{};  ///< "": each unit's cached inputs and targets in memory; else in
                            ///< memory-mapped temporary files there (when they do not fit)
  ProgressSink progress = terminal_progress();  ///< where progress goes; {} = nowhere
};

/// Which settings the caller chose explicitly (a preset never overrides them).
struct ExplicitSettings {
  bool lambda = false;
};

/// Applies the model registry's reconstruction preset for `arch` to s, except the settings the
/// caller chose explicitly; returns a line saying what was applied or overridden ("" when the
/// architecture has no preset), for programs to print at start-up.
inline std::string apply_preset(ReconstructionSettings& s, std::string_view arch,
                                const ExplicitSettings& given) {
  const nn::ReconstructionPreset& p = nn::model_info(arch).preset;
  if (!p.rounding_lambda) return "";
  std::ostringstream line;
  line << "preset for " << arch << ": rounding regulariser lambda " << *p.rounding_lambda << " ("
       << p.why << ")";
  if (given.lambda)
    line << "; overridden by the explicit lambda " << s.lambda;
  else
    s.lambda = *p.rounding_lambda;
  return line.str();
}

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
  check(s.cache_dir.empty() || std::filesystem::is_directory(s.cache_dir),
        "activation cache folder: expected an existing folder, got '", s.cache_dir, "'");
}

/// Where a unit's input comes from while its rounding is learned: the quantized model (the
/// reconstruction, which lets a unit make up for the error of those before it) or the FP model
/// (a unit measured on its own, as mixed-precision sensitivity does).
enum class UnitInput { quantized, fp };

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

/// A [rows, ...] tensor filled batch by batch, allocated when the first batch arrives (in
/// memory, or file-backed under `dir`), so that the batches are never all held beside it.
class RowStack {
 public:
  RowStack(int64_t rows, std::string dir) : rows_(rows), dir_(std::move(dir)) {}

  void push(const Tensor& batch) {
    if (!out_.defined()) {
      std::vector<int64_t> dims = batch.shape().dims();
      dims[0] = rows_;
      out_ = dir_.empty() ? Tensor::empty(Shape(dims)) : Tensor::empty(Shape(dims), {dir_});
    }
    check(
        rows_done_ + batch.dim(0) <= rows_ && batch.numel() * rows_ == out_.numel() * batch.dim(0),
        "RowStack: batch ", batch.shape(), " does not fit ", out_.shape(), " after ", rows_done_,
        " rows");
    std::memcpy(out_.raw_data() + static_cast<size_t>(rows_done_) * (out_.nbytes() / rows_),
                batch.contiguous().raw_data(), batch.nbytes());
    rows_done_ += batch.dim(0);
  }

  Tensor take() {
    check(rows_done_ == rows_, "RowStack: ", rows_done_, " of ", rows_, " rows filled");
    return std::move(out_);
  }

 private:
  int64_t rows_, rows_done_ = 0;
  std::string dir_;
  Tensor out_;
};

/// Stacks [n_i, ...] batches into one [sum n_i, ...] tensor.
inline Tensor stack_batches(const std::vector<Tensor>& parts) {
  int64_t n = 0;
  for (const Tensor& t : parts) n += t.dim(0);
  RowStack out(n, "");
  for (const Tensor& t : parts) out.push(t);
  return out.take();
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

  /// Whether rounding and activation steps are learned together (the qdrop recipe with
  /// activation quantization).
  bool joint() const { return s_.recipe == Recipe::qdrop && qm_.quantizes_activations(); }

  /// Initialises activation quantizers on the first act_init_images calibration images, run
  /// through the weight-quantized model (brecq, after the weight pass) or the FP model (qdrop,
  /// before it).
  void init_activations() {
    const int64_t n = std::min<int64_t>(s_.act_init_images, calib_.dim(0));
    qm_.init_activations(calib_.narrow(0, 0, n),
                         {.weights = joint() ? WeightMode::fp : WeightMode::hard});
  }

  /// Weight pass over units [start, end) (start > 0 resumes), each unit fed the quantized
  /// model's input (learn_rounding).
  std::vector<UnitReport> weight_pass(size_t start = 0, const UnitDoneCallback& done = {}) {
    std::vector<UnitReport> out;
    for (size_t i = start; i < units_.size(); ++i) {
      out.push_back(learn_rounding(units_[i], i, UnitInput::quantized));
      if (done) done("weights", i + 1);
    }
    return out;
  }

  /// Learns the rounding of unit u (the index-th, which seeds its batches) and installs it in
  /// the model: AdaRound with the activations in FP, or (joint) with them quantized and their
  /// steps learned alongside. u may be any unit of the model, not only one of units().
  UnitReport learn_rounding(const Unit& u, size_t index, UnitInput input) {
    std::vector<AdaRound> rounding;  // learned here, installed in qm_ when done
    for (const nn::Layer* l : u.layers)
      rounding.push_back(AdaRound::init(l->weight, qm_.weight_q[static_cast<size_t>(l->id)]));
    Learning L{.pass = "weights",
               .tag = "W",
               .iters = s_.iters_w,
               .p = s_.p_w,
               .seed = s_.seed * 1000003ull + index,
               .act = joint(),
               .quantized_input = input == UnitInput::quantized,
               .mix_inputs = joint() && input == UnitInput::quantized,
               .drop = joint() ? s_.qdrop : 0.0f};
    L.groups.push_back({{}, s_.lr_w, false});
    for (size_t k = 0; k < u.layers.size(); ++k) {
      L.soft[u.layers[k]->id] = &rounding[k];
      L.groups[0].params.push_back(rounding[k].alpha);
    }
    if (joint()) L.groups.push_back({learnable_steps(u), s_.lr_a_joint, true});
    const int64_t reg_start = static_cast<int64_t>(s_.warmup * static_cast<float>(s_.iters_w));
    if (s_.lambda > 0)
      L.regularizer = [&, reg_start](int64_t t) {
        if (t < reg_start) return Tensor();
        const float beta = adaround_beta(t, s_.iters_w, s_.warmup, s_.beta_start, s_.beta_end);
        Tensor reg;
        for (const AdaRound& r : rounding) {
          Tensor rl = r.regularizer(beta);
          reg = reg.defined() ? add(reg, rl) : rl;
        }
        return mul(reg, s_.lambda);
      };
    L.install = [&] {
      for (size_t k = 0; k < u.layers.size(); ++k)
        qm_.set_rounding(*u.layers[k], std::move(rounding[k]));
    };
    return optimise(u, index, L);
  }

  /// Activation pass over units [start, end): the steps of the unit's points, weights fixed.
  std::vector<UnitReport> activation_pass(size_t start = 0, const UnitDoneCallback& done = {}) {
    std::vector<UnitReport> out;
    for (size_t i = start; i < units_.size(); ++i) {
      std::vector<Tensor> steps = learnable_steps(units_[i]);
      if (!steps.empty() && s_.iters_a > 0) {
        Learning L{.pass = "activations",
                   .tag = "A",
                   .iters = s_.iters_a,
                   .p = s_.p_a,
                   .seed = s_.seed * 1000003ull + 500009ull + i,
                   .act = true,
                   .quantized_input = s_.act_input_quantized,
                   .drop = s_.qdrop};
        L.groups.push_back({std::move(steps), s_.lr_a, true});
        out.push_back(optimise(units_[i], i, L));
      }
      if (done) done("activations", i + 1);
    }
    return out;
  }

 private:
  struct Cache {
    Tensor inputs, targets, fisher;
    Tensor fp_inputs;  ///< mix_inputs: the unit input in the FP model
  };

  /// Parameters one Adam learns, at a constant or a cosine-decayed (to 0) learning rate.
  struct ParamGroup {
    std::vector<Tensor> params;
    float lr = 0;
    bool cosine = false;
  };

  /// What one optimisation of a unit learns, and how.
  struct Learning {
    const char* pass = "";  ///< "weights" or "activations" (reports, checkpoints)
    const char* tag = "";   ///< progress label
    int64_t iters = 0;
    float p = 2.0f;     ///< L_p exponent of the reconstruction loss
    uint64_t seed = 0;  ///< batch sampling
    bool act = false;   ///< activations quantized: in the inputs, the held loss and training
    bool quantized_input = false;  ///< unit inputs from the quantized model, else the FP one
    bool mix_inputs = false;       ///< QDrop's unit input (each element FP with probability qdrop)
    float drop = 0.0f;             ///< QDrop probability in the training forward passes
    std::map<int, const AdaRound*> soft{};  ///< rounding being learned, by layer id
    std::vector<ParamGroup> groups{};
    std::function<Tensor(int64_t t)> regularizer{};  ///< added to the loss where defined
    std::function<void()> install{};                 ///< when learning is done
  };

  /// Sets requires_grad on tensors for its lifetime, so that an exception leaves none set.
  struct Learnable {
    explicit Learnable(const std::vector<ParamGroup>& gs) {
      for (const ParamGroup& g : gs)
        for (const Tensor& t : g.params) params.push_back(t), params.back().set_requires_grad(true);
    }
    ~Learnable() {
      for (Tensor& t : params) t.set_requires_grad(false);
    }
    Learnable(const Learnable&) = delete;
    Learnable& operator=(const Learnable&) = delete;
    std::vector<Tensor> params;
  };

  /// The held-out measure, the training loop and the report of one unit.
  UnitReport optimise(const Unit& u, size_t index, Learning& L) {
    std::erase_if(L.groups, [](const ParamGroup& g) { return g.params.empty(); });
    const auto t0 = std::chrono::steady_clock::now();
    UnitReport r{u.name, L.pass, 0, 0, 0, L.iters};
    Cache c = cache(u, L);
    const ForwardMode held{.activations = L.act};
    r.loss_before = held_loss(u, c, L.p, held);  // hard rounding: round-to-nearest so far
    {
      Learnable learnable(L.groups);
      std::vector<Adam> opts;  // one per group
      opts.reserve(L.groups.size());
      for (const ParamGroup& g : L.groups) opts.emplace_back(g.params, AdamParams{.lr = g.lr});
      Rng rng(L.seed);
      Rng drop_rng(s_.seed * 7919ull + index);
      std::vector<int64_t> perm;
      ProgressBar bar("[" + std::string(L.tag) + " " + std::to_string(index + 1) + "/" +
                          std::to_string(units_.size()) + " " + u.name + "]",
                      L.iters, s_.progress);
      ForwardMode train{.soft = L.soft, .activations = L.act, .drop = L.drop};
      if (L.drop > 0) train.drop_rng = &drop_rng;
      const nn::ForwardHooks h = qm_.hooks(train);
      for (int64_t t = 1; t <= L.iters; ++t) {
        for (size_t k = 0; k < L.groups.size(); ++k)
          if (L.groups[k].cosine) opts[k].set_lr(cosine_lr(L.groups[k].lr, t - 1, L.iters));
        auto idx = detail::sample_indices(rng, c.inputs.dim(0), s_.batch, perm);
        Tensor x = detail::gather_rows(c.inputs, idx);
        if (L.mix_inputs) x = mix_inputs(x, detail::gather_rows(c.fp_inputs, idx), drop_rng);
        Tensor out = u.forward(qm_.model, x, h);
        Tensor f = c.fisher.defined() ? detail::gather_rows(c.fisher, idx) : Tensor();
        Tensor rec = reconstruction_loss(out, detail::gather_rows(c.targets, idx), f, L.p);
        Tensor reg = L.regularizer ? L.regularizer(t) : Tensor();
        backward(reg.defined() ? add(rec, reg) : rec);
        for (Adam& o : opts) {
          o.step();
          o.zero_grad();
        }
        if (bar.active()) {
          std::ostringstream st;
          st.precision(4);
          st << "rec " << rec.item();
          if (L.regularizer) st << " round " << (reg.defined() ? reg.item() : 0.0f);
          bar.update(t, st.str());
        }
      }
      bar.finish();
    }
    if (L.install) L.install();
    r.loss_after = held_loss(u, c, L.p, held);
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
  }

  /// Unit inputs and targets for all calibration images, and Fisher weights if asked. Rounding
  /// is learned on the quantized model's inputs (so a unit makes up for the error of those
  /// before it); the official activation pass takes the FP model's.
  Cache cache(const Unit& u, const Learning& L) {
    Cache c;
    if (s_.loss == ReconLoss::fisher) c.fisher = fisher_weights(u, L);
    NoGrad ng;
    const int64_t N = calib_.dim(0), chunk = 128;
    detail::RowStack ins(N, s_.cache_dir), outs(N, s_.cache_dir), fp_ins(N, s_.cache_dir);
    const nn::ForwardHooks fp = qm_.hooks(ForwardMode::fp());
    const nn::ForwardHooks quantized = qm_.hooks({.activations = L.act});
    for (int64_t b = 0; b < N; b += chunk) {
      Tensor x = calib_.narrow(0, b, std::min(chunk, N - b));
      auto [fp_in, fp_out] = u.io(qm_.model, x, fp);
      outs.push(fp_out);
      if (L.mix_inputs) fp_ins.push(fp_in);
      ins.push(L.quantized_input || L.mix_inputs ? u.io(qm_.model, x, quantized).first : fp_in);
    }
    c.inputs = ins.take();
    c.targets = outs.take();
    if (L.mix_inputs) c.fp_inputs = fp_ins.take();
    return c;
  }

  /// |dKL/dz| + 1 at the unit output z, with the model quantized up to and including the unit
  /// (the official fisher_diag: KL between the quantized and FP predictions, batches of 32).
  Tensor fisher_weights(const Unit& u, const Learning& L) {
    const int64_t N = calib_.dim(0), chunk = 32;
    if (!fp_logits_.defined()) {
      NoGrad ng;
      std::vector<Tensor> parts;
      for (int64_t b = 0; b < N; b += chunk)
        parts.push_back(
            qm_.forward(calib_.narrow(0, b, std::min(chunk, N - b)), ForwardMode::fp()));
      fp_logits_ = detail::stack_batches(parts);
    }
    ForwardMode m{.soft = L.soft, .activations = L.act, .last_layer = -1, .last_point = -1};
    for (const nn::Layer* l : u.layers) m.last_layer = std::max(m.last_layer, l->id);
    for (int p : u.points) m.last_point = std::max(m.last_point, p);
    const nn::ForwardHooks h = qm_.hooks(m);
    detail::RowStack grads(N, s_.cache_dir);
    for (int64_t b = 0; b < N; b += chunk) {
      const int64_t n = std::min(chunk, N - b);
      Tensor leaf;
      const Tensor logits =
          u.forward_through(qm_.model, calib_.narrow(0, b, n), h, [&](const Tensor& z) {
            leaf = z.detach();
            leaf.set_requires_grad(true);
            return leaf;
          });
      backward(kl_div(logits, fp_logits_.narrow(0, b, n)));
      grads.push(abs(leaf.grad()) + 1.0f);
    }
    return grads.take();
  }

  /// Reconstruction loss in mode m on up to 256 cached samples (no gradient).
  double held_loss(const Unit& u, const Cache& c, float p, const ForwardMode& m) const {
    NoGrad ng;
    const int64_t n = std::min<int64_t>(256, c.inputs.dim(0));
    Tensor out = u.forward(qm_.model, c.inputs.narrow(0, 0, n), qm_.hooks(m));
    Tensor f = c.fisher.defined() ? c.fisher.narrow(0, 0, n) : Tensor();
    return reconstruction_loss(out, c.targets.narrow(0, 0, n), f, p).item();
  }

  /// The activation step sizes a unit learns (its enabled, initialised points).
  std::vector<Tensor> learnable_steps(const Unit& u) const {
    std::vector<Tensor> steps;
    for (int p : u.points)
      if (qm_.act_enabled[static_cast<size_t>(p)] &&
          qm_.act_q[static_cast<size_t>(p)].initialized())
        steps.push_back(qm_.act_q[static_cast<size_t>(p)].scale);
    return steps;
  }

  /// QDrop's unit input: each element from the quantized model's input, with probability qdrop,
  /// or else from the FP model's.
  Tensor mix_inputs(const Tensor& quantized, const Tensor& fp, Rng& rng) const {
    Tensor out = Tensor::empty(quantized.shape());
    const float* q = quantized.data<float>();
    const float* f = fp.data<float>();
    float* o = out.data<float>();
    for_each_bernoulli(rng, s_.qdrop, out.numel(),
                       [=](int64_t i, bool from_q) { o[i] = from_q ? q[i] : f[i]; });
    return out;
  }

  QuantModel& qm_;
  Tensor calib_;
  ReconstructionSettings s_;
  std::vector<Unit> units_;
  Tensor fp_logits_;
};

}  // namespace brecq::quant
