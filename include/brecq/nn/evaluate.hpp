#pragma once
// Top-1 / top-5 accuracy of any forward function over a labelled dataset or a preloaded batch.
#include <algorithm>
#include <chrono>
#include <functional>

#include "brecq/autograd/tape.hpp"
#include "brecq/io/dataset.hpp"

namespace brecq::nn {

struct Accuracy {
  int64_t images = 0, top1 = 0, top5 = 0;
  double seconds = 0;
  double top1_percent() const {
    return images ? 100.0 * static_cast<double>(top1) / static_cast<double>(images) : 0.0;
  }
  double top5_percent() const {
    return images ? 100.0 * static_cast<double>(top5) / static_cast<double>(images) : 0.0;
  }
};

struct EvaluateParams {
  int64_t batch = 100;
  int64_t limit = 0;  ///< first `limit` examples only (0 = all)
};

using ForwardFn = std::function<Tensor(const Tensor&)>;

/// Adds the top-1 / top-5 hits of logits [N, classes] against labels to acc.
inline void score(const Tensor& logits, const std::vector<int>& labels, Accuracy& acc) {
  check(logits.ndim() == 2 && logits.dim(0) == static_cast<int64_t>(labels.size()),
        "score: logits ", logits.shape(), " for ", labels.size(), " labels");
  Tensor lc = logits.contiguous();
  const float* p = lc.data<float>();
  const int64_t classes = logits.dim(1), k = std::min<int64_t>(5, classes);
  for (int64_t i = 0; i < logits.dim(0); ++i) {
    const float* row = p + i * classes;
    const int label = labels[static_cast<size_t>(i)];
    check(label >= 0 && label < classes, "score: label ", label, " outside [0, ", classes, ")");
    // Rank of the true class: classes scoring higher (ties count against it only before it, as
    // argmax).
    int64_t higher = 0;
    for (int64_t c = 0; c < classes; ++c)
      higher += row[c] > row[label] || (row[c] == row[label] && c < label);
    acc.top1 += higher == 0;
    acc.top5 += higher < k;
  }
  acc.images += logits.dim(0);
}

/// Accuracy of `forward` on a dataset, decoding batch by batch.
template <LabeledDataset D>
inline Accuracy evaluate(const ForwardFn& forward, const D& ds, const EvaluateParams& p = {}) {
  check(p.batch >= 1 && p.limit >= 0, "evaluate: batch must be >= 1 and limit >= 0, got ", p.batch,
        ", ", p.limit);
  const auto start = std::chrono::steady_clock::now();
  NoGrad no_grad;
  Accuracy acc;
  const int64_t n = p.limit > 0 ? std::min<int64_t>(p.limit, ds.size()) : ds.size();
  std::vector<int64_t> idx(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) idx[static_cast<size_t>(i)] = i;
  for (int64_t b = 0; b < n; b += p.batch) {
    const int64_t m = std::min(p.batch, n - b);
    const Batch x = gather(ds, std::span<const int64_t>(idx.data() + b, static_cast<size_t>(m)));
    score(forward(x.images), x.labels, acc);
  }
  acc.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return acc;
}

/// Accuracy of `forward` on preloaded images.
inline Accuracy evaluate(const ForwardFn& forward, const Batch& data, int64_t batch = 100) {
  check(batch >= 1, "evaluate: batch must be >= 1, got ", batch);
  const auto start = std::chrono::steady_clock::now();
  NoGrad no_grad;
  Accuracy acc;
  const int64_t n = data.images.dim(0);
  for (int64_t b = 0; b < n; b += batch) {
    const int64_t m = std::min(batch, n - b);
    std::vector<int> labels(data.labels.begin() + b, data.labels.begin() + b + m);
    score(forward(data.images.narrow(0, b, m)), labels, acc);
  }
  acc.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return acc;
}

}  // namespace brecq::nn
