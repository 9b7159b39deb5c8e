#pragma once
// The whole BRECQ run for one granularity: weight pass, activation initialisation, activation
// pass (qdrop recipe: activation initialisation, then one joint pass), with a checkpoint written
// after every finished unit so that an interrupted run resumes where it stopped and ends with the
// same result as an uninterrupted one.
#include <cstdio>
#include <filesystem>
#include <iterator>
#include <set>
#include <sstream>

#include "brecq/quant/reconstructor.hpp"
#include "brecq/quant/serialize.hpp"

namespace brecq::quant {

struct BrecqReport {
  std::vector<UnitReport> units;
  double weight_seconds = 0, act_seconds = 0;
  size_t resumed_weight_units = 0, resumed_act_units = 0;
};

namespace detail {

/// 64-bit FNV-1a over bytes, continuing from h.
inline uint64_t hash_bytes(const void* data, size_t n, uint64_t h = 14695981039346656037ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}
inline uint64_t hash_tensor(const Tensor& t, uint64_t h) {
  if (!t.defined()) return hash_bytes("-", 1, h);
  const Tensor c = t.contiguous();
  for (int64_t d : c.shape().dims()) h = hash_bytes(&d, sizeof d, h);
  return hash_bytes(c.raw_data(), c.nbytes(), h);
}

/// The " "-separated fields of a that b lacks (for the checkpoint refusal).
inline std::string key_difference(const std::string& a, const std::string& b) {
  std::istringstream sa(a), sb(b);
  std::set<std::string> theirs{std::istream_iterator<std::string>(sb), {}};
  std::string out;
  for (std::istream_iterator<std::string> it(sa), end; it != end; ++it)
    if (!theirs.count(*it)) out += (out.empty() ? "" : " ") + *it;
  return out.empty() ? "(field order)" : out;
}

/// Everything that changes run_brecq's result, as "name=value" fields: the model structure and
/// FP weights (as folded), the quantizer state it starts from (bit-widths, ranges, installed
/// rounding), the settings, the calibration tensor and the thread count (parallel reductions).
inline std::string run_key(const QuantModel& qm, const Tensor& calib,
                           const ReconstructionSettings& s, const std::string& granularity) {
  uint64_t fp = hash_bytes(qm.model.arch.data(), qm.model.arch.size());
  uint64_t state = 14695981039346656037ull;
  for (const nn::Layer* l : qm.model.layers()) {
    fp = hash_bytes(l->name.data(), l->name.size(), fp);
    fp = hash_tensor(l->weight, hash_tensor(l->bias, fp));
    if (l->bn)
      for (const Tensor* t :
           {&l->bn->weight, &l->bn->bias, &l->bn->running_mean, &l->bn->running_var})
        fp = hash_tensor(*t, fp);
    const UniformQuantizer& q = qm.weight_q[static_cast<size_t>(l->id)];
    state = hash_bytes(&q.config.bits, sizeof q.config.bits, state);
    state = hash_tensor(q.zero_point, hash_tensor(q.scale, state));
    state = hash_tensor(qm.quantized_weight(*l), state);
  }
  for (size_t p = 0; p < qm.act_q.size(); ++p) {
    const UniformQuantizer& q = qm.act_q[p];
    const int on = qm.act_enabled[p];
    state = hash_bytes(&on, sizeof on, hash_bytes(&q.config.bits, sizeof q.config.bits, state));
    state = hash_tensor(q.zero_point, hash_tensor(q.scale, state));
  }
  const QuantSettings& qs = qm.settings;
  std::ostringstream k;
  k.precision(9);
  k << std::hex << "model=" << qm.model.arch << " fp=" << fp << " state=" << state
    << " calib=" << hash_tensor(calib, 14695981039346656037ull) << std::dec << " n=" << calib.dim(0)
    << " granularity=" << granularity << " w_bits=" << qs.w_bits << " a_bits=" << qs.a_bits
    << " first_last_bits=" << qs.first_last_bits << " input_bits=" << qs.input_bits
    << " w_init=" << static_cast<int>(qs.w_init) << " a_init=" << static_cast<int>(qs.a_init)
    << " w_symmetric=" << qs.w_symmetric << " fold_bn=" << qs.fold_batchnorm;
  for (const auto& [name, b] : qs.layer_w_bits) k << " w_bits[" << name << "]=" << b;
  for (const auto& [name, b] : qs.point_a_bits) k << " a_bits[" << name << "]=" << b;
  k << " batch=" << s.batch << " iters_w=" << s.iters_w << " iters_a=" << s.iters_a
    << " lr_w=" << s.lr_w << " lr_a=" << s.lr_a << " lambda=" << s.lambda << " warmup=" << s.warmup
    << " beta=" << s.beta_start << ".." << s.beta_end << " p_w=" << s.p_w << " p_a=" << s.p_a
    << " loss=" << static_cast<int>(s.loss) << " recipe=" << static_cast<int>(s.recipe)
    << " qdrop=" << s.qdrop << " lr_a_joint=" << s.lr_a_joint
    << " act_input_quantized=" << s.act_input_quantized << " act_init_images=" << s.act_init_images
    << " seed=" << s.seed << " threads=" << num_threads();
  return k.str();
}

struct CheckpointState {
  size_t weights_done = 0, acts_done = 0;
  bool act_initialized = false;
};

inline void save_checkpoint(const QuantModel& qm, const std::string& path, const std::string& key,
                            const CheckpointState& st) {
  std::vector<std::pair<std::string, Tensor>> t;
  for (const nn::Layer* l : qm.model.layers()) {
    const auto& r = qm.rounding[static_cast<size_t>(l->id)];
    if (r) t.emplace_back(l->name + ".alpha", r->alpha);
  }
  for (size_t p = 0; p < qm.act_q.size(); ++p)
    if (qm.act_q[p].initialized()) {
      t.emplace_back(act_name(static_cast<int>(p)) + ".scale", qm.act_q[p].scale);
      t.emplace_back(act_name(static_cast<int>(p)) + ".zero_point", qm.act_q[p].zero_point);
    }
  save_safetensors(path, t,
                   {.metadata = {{"format", "brecq-checkpoint-1"},
                                 {"key", key},
                                 {"weights_done", std::to_string(st.weights_done)},
                                 {"acts_done", std::to_string(st.acts_done)},
                                 {"act_initialized", st.act_initialized ? "1" : "0"}}});
}

/// Restores a checkpoint's state into qm; returns what was done.
inline CheckpointState load_checkpoint(QuantModel& qm, const std::string& path,
                                       const std::string& key) {
  SafetensorsFile f(path);
  auto k = f.metadata().find("key");
  const std::string theirs = k == f.metadata().end() ? "(none)" : k->second;
  check(theirs == key, "checkpoint '", path,
        "' was written by a run with other settings; delete it or choose another --out.\n  "
        "differs: ",
        key_difference(key, theirs), "\n  this run: ", key, "\n  checkpoint: ", theirs);
  CheckpointState st{static_cast<size_t>(meta_int(f, "weights_done")),
                     static_cast<size_t>(meta_int(f, "acts_done")),
                     meta_int(f, "act_initialized") != 0};
  for (const nn::Layer* l : qm.model.layers()) {
    const std::string n = l->name + ".alpha";
    if (!f.contains(n)) continue;
    AdaRound r = AdaRound::init(l->weight, qm.weight_q[static_cast<size_t>(l->id)]);
    Tensor alpha = f.to_f32(n);
    check(alpha.shape() == r.alpha.shape(), "checkpoint '", path, "': ", n, " has shape ",
          alpha.shape(), ", expected ", r.alpha.shape());
    r.alpha = alpha;
    qm.set_rounding(*l, std::move(r));
  }
  for (size_t p = 0; p < qm.act_q.size(); ++p) {
    const std::string n = act_name(static_cast<int>(p));
    if (!f.contains(n + ".scale")) continue;
    qm.act_q[p].scale = f.to_f32(n + ".scale");
    qm.act_q[p].zero_point = f.to_f32(n + ".zero_point");
  }
  return st;
}

}  // namespace detail

struct BrecqRunOptions {
  /// Written after each unit, removed at the end ("" = none). A checkpoint is resumed only by a
  /// run with the same model, FP weights, starting state, settings, calibration data and thread
  /// count (detail::run_key); any other is refused.
  std::string checkpoint{};
  std::string key{};                ///< extra identity the library cannot see (e.g. file paths)
  UnitDoneCallback on_unit_done{};  ///< called after each unit, once its checkpoint is written
  bool rounding_installed = false;  ///< the weight rounding is already learned
                                    ///< (load_weight_rounding): skip the weight pass
};

/// Runs BRECQ with granularity G.
template <typename G>
inline BrecqReport run_brecq(QuantModel& qm, const Tensor& calib, const ReconstructionSettings& s,
                             const BrecqRunOptions& o = {}) {
  const std::string& checkpoint = o.checkpoint;
  BrecqReport rep;
  Reconstructor<G> rec(qm, calib, s);
  const std::string key = checkpoint.empty() ? std::string()
                                             : detail::run_key(qm, calib, s, G::name) +
                                                   (o.key.empty() ? "" : " ") + o.key;
  detail::CheckpointState st;
  check(
      !(o.rounding_installed && rec.joint()),
      "run_brecq: the qdrop recipe learns rounding and activation steps together; it cannot start "
      "from installed rounding");
  if (o.rounding_installed) st.weights_done = rec.units().size();
  if (!checkpoint.empty() && std::filesystem::exists(checkpoint)) {
    st = detail::load_checkpoint(qm, checkpoint, key);
    rep.resumed_weight_units = st.weights_done;
    rep.resumed_act_units = st.acts_done;
    std::fprintf(stderr, "resuming from %s: %zu weight units, %zu activation units done\n",
                 checkpoint.c_str(), st.weights_done, st.acts_done);
  }
  auto save = [&](const std::string& pass, size_t done) {
    (pass == "weights" ? st.weights_done : st.acts_done) = done;
    if (!checkpoint.empty()) detail::save_checkpoint(qm, checkpoint, key, st);
    if (o.on_unit_done) o.on_unit_done(pass, done);
  };
  auto t0 = std::chrono::steady_clock::now();
  if (rec.joint() && !st.act_initialized) {  // qdrop: activation ranges first, from the FP model
    rec.init_activations();
    st.act_initialized = true;
    if (!checkpoint.empty()) detail::save_checkpoint(qm, checkpoint, key, st);
  }
  for (UnitReport& r : rec.weight_pass(st.weights_done, save)) rep.units.push_back(r);
  auto t1 = std::chrono::steady_clock::now();
  rep.weight_seconds = std::chrono::duration<double>(t1 - t0).count();
  if (!rec.joint() && qm.quantizes_activations()) {
    if (!st.act_initialized) {
      rec.init_activations();
      st.act_initialized = true;
      if (!checkpoint.empty()) detail::save_checkpoint(qm, checkpoint, key, st);
    }
    for (UnitReport& r : rec.activation_pass(st.acts_done, save)) rep.units.push_back(r);
    rep.act_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  }
  if (!checkpoint.empty()) std::filesystem::remove(checkpoint);
  return rep;
}

/// run_brecq with the granularity named at run time: layer, block, stage or network.
inline BrecqReport run_brecq(const std::string& granularity, QuantModel& qm, const Tensor& calib,
                             const ReconstructionSettings& s, const BrecqRunOptions& o = {}) {
  return with_granularity(granularity,
                          [&](auto g) { return run_brecq<decltype(g)>(qm, calib, s, o); });
}

}  // namespace brecq::quant
