#pragma once
// The comparison every BRECQ result is read against: top-1/top-5 of the FP model, of
// round-to-nearest quantization (weights rounded to the nearest level of their initial range,
// activation ranges initialised on calibration images) and of BRECQ, on one validation set.
// Used by examples/resnet18_w2a4.cpp and its test; a driver-level routine (it evaluates through
// brecq/driver), kept under quant/ where its users include it.
//
//   quant::CompareResult r = quant::compare_brecq(model, calib.images, val, {});  // W2A4

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "brecq/driver/driver.hpp"
#include "brecq/quant/brecq.hpp"

namespace brecq::quant {

struct CompareParams {
  QuantSettings quant{.w_bits = 2, .a_bits = 4};  ///< W2A4, first and last layer 8-bit
  ReconstructionSettings recon{};                 ///< official BRECQ defaults
  std::string granularity = "block";              ///< layer, block, stage or network
  nn::EvaluateParams eval{};                      ///< batch size, first `limit` images only
  /// Called with "FP", "nearest" and "BRECQ" as each accuracy is known.
  std::function<void(const std::string& what, const nn::Accuracy&)> on_result{};
};

struct CompareResult {
  nn::Accuracy fp, nearest, brecq;
  BrecqReport report;    ///< per-unit losses and pass times
  double seconds = 0;    ///< everything: evaluations, range initialisation, reconstruction
  QuantModel quantized;  ///< the BRECQ result
};

/// Evaluates `model` on `val` in FP, then round-to-nearest (weight ranges by p.quant.w_init,
/// activation ranges initialised on the first p.recon.act_init_images of `calib`), then runs
/// BRECQ on `calib` [N, C, H, W] (starting from that nearest-rounded model) and evaluates the
/// result. Progress goes to p.recon.progress (the terminal by default).
template <LabeledDataset D>
inline CompareResult compare_brecq(const nn::Model& model, const Tensor& calib, const D& val,
                                   const CompareParams& p = {}) {
  validate(p.quant);
  validate(p.recon);
  check(calib.ndim() == 4 && calib.dim(0) >= 1 && calib.dim(1) == model.in_channels,
        "compare_brecq: calibration images must be [N, ", model.in_channels, ", H, W], got ",
        calib.shape());
  check(val.size() >= 1, "compare_brecq: the validation set is empty");
  units_for(p.granularity, model);  // validates the name before the evaluations
  const auto start = std::chrono::steady_clock::now();
  auto evaluate = [&](const std::string& what, const nn::ForwardFn& f) {
    const nn::Accuracy a = driver::evaluate(f, val,
                                            {.batch = p.eval.batch,
                                             .limit = p.eval.limit,
                                             .label = what,
                                             .progress = p.recon.progress});
    if (p.on_result) p.on_result(what, a);
    return a;
  };

  const nn::Accuracy fp = evaluate("FP", driver::fp_forward(model));
  QuantModel qm(model, p.quant);  // folds BatchNorm into its own copy of the weights
  if (qm.quantizes_activations())
    qm.init_activations(
        calib.narrow(0, 0, std::min<int64_t>(p.recon.act_init_images, calib.dim(0))));
  const nn::Accuracy nearest = evaluate("nearest", driver::quantized_forward(qm));
  // BRECQ starts from here: run_brecq learns the rounding with activations in FP, then
  // re-initialises the activation ranges through the learned weights and learns the steps.
  BrecqReport report = run_brecq(p.granularity, qm, calib, p.recon);
  const nn::Accuracy brecq = evaluate("BRECQ", driver::quantized_forward(qm));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return CompareResult{fp, nearest, brecq, std::move(report), seconds, std::move(qm)};
}

}  // namespace brecq::quant
