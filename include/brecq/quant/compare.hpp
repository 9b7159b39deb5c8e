#pragma once
// The comparison every BRECQ result is read against: top-1/top-5 of the FP model, of
// round-to-nearest quantization (weights rounded to the nearest level of their initial range,
// activation ranges initialised on calibration images) and of BRECQ, on one validation set.
// Used by examples/resnet18_w2a4.cpp and its test.
//
//   quant::CompareResult r = quant::compare_brecq(model, calib.images, val, {});  // W2A4
//
// Also here: LabeledImages, the two folder layouts of labelled images users bring (an ImageFolder
// or a flat folder with labels.txt), and calibration_subset, a seeded choice of calibration images.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "brecq/io/dataset.hpp"
#include "brecq/nn/evaluate.hpp"
#include "brecq/quant/brecq.hpp"

namespace brecq {

/// Labelled images on disk in either layout: root/labels.txt with one "<class index> <file>" line
/// per image (files relative to root; '#' lines are comments), else an ImageFolder
/// (root/<class>/<image>, label = index of the class folder in sorted order).
class LabeledImages {
 public:
  LabeledImages(const std::string& root, ImagePreprocess preprocess) : preprocess_(preprocess) {
    namespace fs = std::filesystem;
    std::error_code ec;
    check(fs::is_directory(root, ec), "LabeledImages: '", root, "' is not a folder");
    const std::string list = (fs::path(root) / "labels.txt").string();
    if (!fs::exists(list, ec)) {
      const ImageFolder folder(root, preprocess);
      for (int64_t i = 0; i < folder.size(); ++i) {
        paths_.push_back(folder.path(i));
        labels_.push_back(folder.label(i));
      }
      layout_ = std::to_string(folder.classes().size()) + " class folders";
      return;
    }
    std::ifstream f(list);
    check(f.is_open(), "LabeledImages: cannot open '", list, "'");
    std::string line;
    for (int line_no = 1; std::getline(f, line); ++line_no) {
      if (line.empty() || line[0] == '#') continue;
      std::istringstream ls(line);
      int label = -1;
      std::string file;
      ls >> label >> file;
      check(!ls.fail() && label >= 0, "LabeledImages: '", list, "' line ", line_no,
            ": expected '<class index> <file>', got '", line, "'");
      paths_.push_back((fs::path(root) / file).string());
      labels_.push_back(label);
    }
    check(!paths_.empty(), "LabeledImages: '", list, "' lists no images");
    layout_ = "labels.txt";
  }

  int64_t size() const { return static_cast<int64_t>(paths_.size()); }
  int max_label() const { return *std::max_element(labels_.begin(), labels_.end()); }
  /// "labels.txt" or "<n> class folders".
  const std::string& layout() const { return layout_; }
  const std::string& path(int64_t i) const { return paths_[index(i)]; }
  /// Image i as float [3, H, W] after the preprocessing, with its label.
  std::pair<Tensor, int> get(int64_t i) const {
    return {preprocess_image(read_image(paths_[index(i)]), preprocess_), labels_[index(i)]};
  }

 private:
  size_t index(int64_t i) const {
    check(i >= 0 && i < size(), "LabeledImages: index ", i, " out of range for ", size(),
          " images");
    return static_cast<size_t>(i);
  }
  ImagePreprocess preprocess_;
  std::vector<std::string> paths_;
  std::vector<int> labels_;
  std::string layout_;
};

/// `n` examples of `ds` chosen by seeded_permutation(ds.size(), seed), stacked into one batch.
template <LabeledDataset D>
inline Batch calibration_subset(const D& ds, int64_t n, uint64_t seed) {
  check(n >= 1 && n <= ds.size(), "calibration_subset: asked for ", n, " images, expected 1..",
        ds.size(), " (the dataset's size)");
  std::vector<int64_t> order = seeded_permutation(ds.size(), seed);
  order.resize(static_cast<size_t>(n));
  return gather(ds, order);
}

}  // namespace brecq

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
/// result. Progress bars (on stderr) unless p.recon.progress is false.
template <LabeledDataset D>
inline CompareResult compare_brecq(const nn::Model& model, const Tensor& calib, const D& val,
                                   const CompareParams& p = {}) {
  validate(p.quant);
  validate(p.recon);
  check(calib.ndim() == 4 && calib.dim(0) >= 1 && calib.dim(1) == model.in_channels,
        "compare_brecq: calibration images must be [N, ", model.in_channels, ", H, W], got ",
        calib.shape());
  check(val.size() >= 1, "compare_brecq: the validation set is empty");
  const std::string& g = p.granularity;
  check(g == "layer" || g == "block" || g == "stage" || g == "network",
        "compare_brecq: granularity must be layer, block, stage or network, got '", g, "'");
  const auto start = std::chrono::steady_clock::now();
  const int64_t n_val = p.eval.limit > 0 ? std::min<int64_t>(p.eval.limit, val.size()) : val.size();
  auto evaluate = [&](const std::string& what, const std::function<Tensor(const Tensor&)>& f) {
    ProgressBar bar("[eval " + what + "]", n_val, p.recon.progress);
    int64_t done = 0;
    const nn::Accuracy a = nn::evaluate(
        [&](const Tensor& x) {
          Tensor y = f(x);
          bar.update(done += x.dim(0), "");
          return y;
        },
        val, p.eval);
    bar.finish();
    if (p.on_result) p.on_result(what, a);
    return a;
  };

  const nn::Accuracy fp = evaluate("FP", [&](const Tensor& x) { return model.forward(x); });
  QuantModel qm(model, p.quant);  // folds BatchNorm into its own copy of the weights
  if (p.quant.a_bits > 0) {
    const int64_t n = std::min<int64_t>(p.recon.act_init_images, calib.dim(0));
    qm.init_activations(calib.narrow(0, 0, n));
    qm.act_quant = true;
  }
  const nn::Accuracy nearest = evaluate("nearest", [&](const Tensor& x) { return qm.forward(x); });
  // BRECQ starts from here: run_brecq learns the rounding with activations in FP, then
  // re-initialises the activation ranges through the learned weights and learns the steps.
  qm.act_quant = false;
  BrecqReport report = run_brecq(p.granularity, qm, calib, p.recon);
  const nn::Accuracy brecq = evaluate("BRECQ", [&](const Tensor& x) { return qm.forward(x); });
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return CompareResult{fp, nearest, brecq, std::move(report), seconds, std::move(qm)};
}

}  // namespace brecq::quant
