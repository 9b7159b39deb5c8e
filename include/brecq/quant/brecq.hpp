#pragma once
// The whole BRECQ run for one granularity: weight pass, activation initialisation, activation
// pass (qdrop recipe: activation initialisation, then one joint pass), with a checkpoint written
// after every finished unit so that an interrupted run resumes where it stopped and ends with the
// same result as an uninterrupted one.
#include <cstdio>
#include <filesystem>

#include "brecq/quant/reconstructor.hpp"
#include "brecq/quant/serialize.hpp"

namespace brecq::quant {

struct BrecqReport {
  std::vector<UnitReport> units;
  double weight_seconds = 0, act_seconds = 0;
  size_t resumed_weight_units = 0, resumed_act_units = 0;
};

namespace detail {

struct CheckpointState {
  size_t weights_done = 0, acts_done = 0;
  bool act_initialized = false;
};

inline void save_checkpoint(const QuantModel& qm, const std::string& path, const std::string& key,
                            const CheckpointState& st) {
  std::vector<std::pair<std::string, Tensor>> t;
  for (const nn::Layer* l : qm.model.layers()) {
    const auto& r = qm.rounding[static_cast<size_t>(l->id)];
    if (r && !qm.learning.count(l->id)) t.emplace_back(l->name + ".alpha", r->alpha);
  }
  for (size_t p = 0; p < qm.act_q.size(); ++p)
    if (qm.act_q[p].initialized()) {
      t.emplace_back(act_name(static_cast<int>(p)) + ".scale", qm.act_q[p].scale);
      t.emplace_back(act_name(static_cast<int>(p)) + ".zero_point", qm.act_q[p].zero_point);
    }
  const std::string tmp = path + ".tmp";
  save_safetensors(tmp, t,
                   {.metadata = {{"format", "brecq-checkpoint-1"},
                                 {"key", key},
                                 {"weights_done", std::to_string(st.weights_done)},
                                 {"acts_done", std::to_string(st.acts_done)},
                                 {"act_initialized", st.act_initialized ? "1" : "0"}}});
  std::filesystem::rename(tmp, path);  // atomic: an interrupt never leaves a half-written file
}

/// Restores a checkpoint's state into qm; returns what was done.
inline CheckpointState load_checkpoint(QuantModel& qm, const std::string& path,
                                       const std::string& key) {
  SafetensorsFile f(path);
  auto k = f.metadata().find("key");
  check(k != f.metadata().end() && k->second == key, "checkpoint '", path,
        "' was written by a run with other settings; delete it or choose another --out.\n  this "
        "run: ",
        key, "\n  checkpoint: ", k == f.metadata().end() ? "(none)" : k->second);
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
  std::string checkpoint{};  ///< written after each unit, removed at the end ("" = none)
  std::string key{};  ///< identifies the settings: a checkpoint from other settings is refused
  UnitDoneCallback on_unit_done{};  ///< called after each unit, once its checkpoint is written
  bool rounding_installed = false;  ///< the weight rounding is already learned
                                    ///< (load_weight_rounding): skip the weight pass
};

/// Runs BRECQ with granularity G.
template <typename G>
inline BrecqReport run_brecq(QuantModel& qm, const Tensor& calib, const ReconstructionSettings& s,
                             const BrecqRunOptions& o = {}) {
  const std::string& checkpoint = o.checkpoint;
  const std::string& key = o.key;
  BrecqReport rep;
  Reconstructor<G> rec(qm, calib, s);
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
  if (rec.joint()) {
    qm.act_quant = true;
  } else if (qm.settings.a_bits > 0) {
    if (!st.act_initialized) {
      rec.init_activations();
      st.act_initialized = true;
      if (!checkpoint.empty()) detail::save_checkpoint(qm, checkpoint, key, st);
    }
    qm.act_quant = true;
    for (UnitReport& r : rec.activation_pass(st.acts_done, save)) rep.units.push_back(r);
    rep.act_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  }
  if (!checkpoint.empty()) std::filesystem::remove(checkpoint);
  return rep;
}

/// run_brecq with the granularity named at run time: layer, block, stage or network.
inline BrecqReport run_brecq(const std::string& granularity, QuantModel& qm, const Tensor& calib,
                             const ReconstructionSettings& s, const BrecqRunOptions& o = {}) {
  if (granularity == "layer") return run_brecq<LayerGranularity>(qm, calib, s, o);
  if (granularity == "block") return run_brecq<BlockGranularity>(qm, calib, s, o);
  if (granularity == "stage") return run_brecq<StageGranularity>(qm, calib, s, o);
  if (granularity == "network") return run_brecq<NetworkGranularity>(qm, calib, s, o);
  fail("granularity: expected layer, block, stage or network, got '", granularity, "'");
}

}  // namespace brecq::quant
