#pragma once
// Datasets and batching: ImageFolder (torchvision layout), TensorDataset, BatchLoader, and
// load_image_folder for loading a whole folder (or a seeded subset) into one NCHW tensor.
//
// A dataset is anything with `int64_t size() const` and `std::pair<Tensor, int> get(int64_t)
// const` returning one CHW float example and its label; get must be safe to call concurrently.
#include <algorithm>
#include <cctype>
#include <concepts>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <span>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "brecq/config.hpp"
#include "brecq/io/image.hpp"
#include "brecq/io/transforms.hpp"
#include "brecq/tensor/parallel.hpp"
#include "brecq/tensor/rng.hpp"
#include "brecq/tensor/tensor.hpp"

namespace brecq {

template <typename D>
concept LabeledDataset = requires(const D& d, int64_t i) {
  { d.size() } -> std::convertible_to<int64_t>;
  { d.get(i) } -> std::convertible_to<std::pair<Tensor, int>>;
};

/// A batch of examples: images [N, C, H, W] and one label per image.
struct Batch {
  Tensor images;
  std::vector<int> labels;
  int64_t size() const { return static_cast<int64_t>(labels.size()); }
};

/// 0..n-1 shuffled by Fisher-Yates with brecq::Rng(seed): the same order on every platform.
inline std::vector<int64_t> seeded_permutation(int64_t n, uint64_t seed) {
  check(n >= 0, "seeded_permutation: n must be >= 0, got ", n);
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[static_cast<size_t>(i)] = i;
  Rng rng(seed);
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i + 1)));
    std::swap(p[static_cast<size_t>(i)], p[static_cast<size_t>(j)]);
  }
  return p;
}

/// Examples `indices` of `ds` stacked into one batch, decoded in parallel (brecq::parallel_for).
/// Every example must have the shape of the first; an exception from any example is rethrown.
template <LabeledDataset D>
inline Batch gather(const D& ds, std::span<const int64_t> indices) {
  check(!indices.empty(), "gather: no indices given");
  const int64_t n = static_cast<int64_t>(indices.size());
  for (int64_t i : indices)
    check(i >= 0 && i < static_cast<int64_t>(ds.size()), "gather: index ", i,
          " out of range for a dataset of ", ds.size(), " examples");
  Batch b;
  b.labels.resize(static_cast<size_t>(n));
  const std::pair<Tensor, int> first_example = ds.get(indices[0]);
  const Tensor& first = first_example.first;
  check(first.dtype() == DType::f32, "gather: examples must be f32, got ",
        dtype_name(first.dtype()));
  std::vector<int64_t> dims{n};
  dims.insert(dims.end(), first.shape().begin(), first.shape().end());
  b.images = Tensor::empty(Shape(dims));  // [N, C, H, W]
  const int64_t per = first.numel();
  float* out = b.images.data<float>();
  auto put = [&](int64_t k, const Tensor& x, int label) {
    check(x.shape() == first.shape() && x.dtype() == DType::f32, "gather: example ",
          indices[static_cast<size_t>(k)], " has shape ", x.shape(), ", expected ", first.shape(),
          " like example ", indices[0]);
    Tensor c = x.contiguous();
    if (per) std::memcpy(out + k * per, c.data<float>(), static_cast<size_t>(per) * sizeof(float));
    b.labels[static_cast<size_t>(k)] = label;
  };
  put(0, first, first_example.second);
  std::mutex mu;
  std::exception_ptr error;
  parallel_for(1, n, 1, [&](int64_t begin, int64_t end) {
    try {
      for (int64_t k = begin; k < end; ++k) {
        auto [x, label] = ds.get(indices[static_cast<size_t>(k)]);
        put(k, x, label);
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu);
      if (!error) error = std::current_exception();
    }
  });
  if (error) std::rethrow_exception(error);
  return b;
}

/// Images in root/<class>/<file>, as torchvision's ImageFolder: classes are the sub-folders of
/// root sorted by name, label = class index; files (.jpg, .jpeg, .png, any case) directly inside
/// each class folder, sorted by name. Every class folder must hold at least one image.
class ImageFolder {
 public:
  explicit ImageFolder(const std::string& root, ImagePreprocess preprocess = {})
      : root_(root), preprocess_(preprocess) {
    namespace fs = std::filesystem;
    std::error_code ec;
    check(fs::exists(root, ec), "ImageFolder: folder '", root, "' does not exist");
    check(fs::is_directory(root, ec), "ImageFolder: '", root, "' is not a folder");
    try {
      for (const auto& e : fs::directory_iterator(root))
        if (e.is_directory()) classes_.push_back(e.path().filename().string());
      std::sort(classes_.begin(), classes_.end());
      check(!classes_.empty(), "ImageFolder: folder '", root,
            "' has no class sub-folders (expected root/<class>/<image files>)");
      std::vector<std::string> empty;
      for (size_t c = 0; c < classes_.size(); ++c) {
        std::vector<std::string> files;
        for (const auto& e : fs::directory_iterator(fs::path(root) / classes_[c]))
          if (e.is_regular_file() && is_image_name(e.path().extension().string()))
            files.push_back(e.path().string());
        if (files.empty()) empty.push_back(classes_[c]);
        std::sort(files.begin(), files.end());
        for (auto& f : files) {
          paths_.push_back(std::move(f));
          labels_.push_back(static_cast<int>(c));
        }
      }
      if (!empty.empty()) {
        std::string list;
        for (const auto& e : empty) list += (list.empty() ? "'" : ", '") + e + "'";
        fail("ImageFolder: folder '", root, "': class folder(s) ", list,
             " hold no .jpg/.jpeg/.png images (found ", paths_.size(), " images in the other ",
             classes_.size() - empty.size(), " classes)");
      }
    } catch (const fs::filesystem_error& e) {
      fail("ImageFolder: cannot list folder '", root, "': ", e.what());
    }
  }

  int64_t size() const { return static_cast<int64_t>(paths_.size()); }
  const std::string& root() const { return root_; }
  /// Class names in label order.
  const std::vector<std::string>& classes() const { return classes_; }
  int label(int64_t i) const { return labels_[index(i)]; }
  const std::string& path(int64_t i) const { return paths_[index(i)]; }
  const ImagePreprocess& preprocess() const { return preprocess_; }

  /// Decoded RGB pixels of example i.
  Image image(int64_t i) const { return read_image(path(i)); }
  /// Example i as a float [3, H, W] tensor after `p`.
  Tensor load(int64_t i, const ImagePreprocess& p) const { return preprocess_image(image(i), p); }
  /// Example i after the folder's own preprocessing, with its label.
  std::pair<Tensor, int> get(int64_t i) const { return {load(i, preprocess_), label(i)}; }

 private:
  static bool is_image_name(std::string ext) {
    for (auto& ch : ext) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
  }
  size_t index(int64_t i) const {
    check(i >= 0 && i < size(), "ImageFolder '", root_, "': index ", i, " out of range for ",
          size(), " images");
    return static_cast<size_t>(i);
  }

  std::string root_;
  ImagePreprocess preprocess_;
  std::vector<std::string> classes_;
  std::vector<std::string> paths_;
  std::vector<int> labels_;
};

/// Examples held in memory: images [N, ...] and N labels. get(i) returns a view of image i.
class TensorDataset {
 public:
  TensorDataset(Tensor images, std::vector<int> labels)
      : images_(images.contiguous()), labels_(std::move(labels)) {
    check(images_.ndim() >= 1 && images_.dim(0) == static_cast<int64_t>(labels_.size()),
          "TensorDataset: images ", images_.shape(), " need one label each, got ", labels_.size(),
          " labels");
    check(images_.dtype() == DType::f32, "TensorDataset: images must be f32, got ",
          dtype_name(images_.dtype()));
  }
  int64_t size() const { return static_cast<int64_t>(labels_.size()); }
  std::pair<Tensor, int> get(int64_t i) const {
    check(i >= 0 && i < size(), "TensorDataset: index ", i, " out of range for ", size(),
          " examples");
    std::vector<int64_t> rest(images_.shape().begin() + 1, images_.shape().end());
    return {images_.narrow(0, i, 1).view(Shape(rest)), labels_[static_cast<size_t>(i)]};
  }
  const Tensor& images() const { return images_; }
  const std::vector<int>& labels() const { return labels_; }

 private:
  Tensor images_;
  std::vector<int> labels_;
};

struct BatchLoaderParams {
  int64_t batch_size = 64;
  bool shuffle = false;  ///< a new seeded order per epoch (see set_epoch)
  uint64_t seed = 0;
  bool drop_last = false;  ///< drop a final batch smaller than batch_size
};

/// Batches of a dataset (held by value; ImageFolder and TensorDataset are cheap to copy).
/// for (int64_t b = 0; b < loader.num_batches(); ++b) { Batch x = loader.batch(b); ... }
template <LabeledDataset D>
class BatchLoader {
 public:
  BatchLoader(D dataset, BatchLoaderParams params) : ds_(std::move(dataset)), p_(params) {
    check(p_.batch_size > 0, "BatchLoader: batch_size must be positive, got ", p_.batch_size);
    set_epoch(0);
  }

  /// Sets the example order: the permutation seeded by seed + epoch when shuffling, else 0..n-1.
  void set_epoch(uint64_t epoch) {
    const int64_t n = static_cast<int64_t>(ds_.size());
    if (p_.shuffle) {
      order_ = seeded_permutation(n, p_.seed + epoch);
    } else {
      order_.resize(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) order_[static_cast<size_t>(i)] = i;
    }
  }
  int64_t num_batches() const {
    const int64_t n = static_cast<int64_t>(order_.size());
    return p_.drop_last ? n / p_.batch_size : (n + p_.batch_size - 1) / p_.batch_size;
  }
  /// Batch b of the current epoch (examples decoded in parallel).
  Batch batch(int64_t b) const {
    check(b >= 0 && b < num_batches(), "BatchLoader: batch ", b, " out of range for ",
          num_batches(), " batches");
    const int64_t begin = b * p_.batch_size;
    const int64_t end =
        std::min<int64_t>(begin + p_.batch_size, static_cast<int64_t>(order_.size()));
    return gather(
        ds_, std::span<const int64_t>(order_.data() + begin, static_cast<size_t>(end - begin)));
  }
  const std::vector<int64_t>& order() const { return order_; }
  const D& dataset() const { return ds_; }
  const BatchLoaderParams& params() const { return p_; }

 private:
  D ds_;
  BatchLoaderParams p_;
  std::vector<int64_t> order_;
};

struct LoadImageFolderParams {
  ImagePreprocess preprocess{};  ///< default: plain [0, 1] pixels, no resize or crop
  int64_t limit = 0;             ///< keep the first `limit` examples (0 = all)
  bool shuffle = false;          ///< take them from a seeded_permutation(size, seed) order
  uint64_t seed = 0;
};

/// The images of an ImageFolder (or the first `limit` of them, optionally after a seeded shuffle)
/// in one [N, 3, H, W] tensor, decoded in parallel. All images must end up with one size.
inline Batch load_image_folder(const std::string& root, const LoadImageFolderParams& p = {}) {
  check(p.limit >= 0, "load_image_folder: limit must be >= 0, got ", p.limit);
  ImageFolder folder(root, p.preprocess);
  std::vector<int64_t> order;
  if (p.shuffle) {
    order = seeded_permutation(folder.size(), p.seed);
  } else {
    order.resize(static_cast<size_t>(folder.size()));
    for (int64_t i = 0; i < folder.size(); ++i) order[static_cast<size_t>(i)] = i;
  }
  check(p.limit <= folder.size(), "load_image_folder: limit ", p.limit, " but folder '", root,
        "' holds only ", folder.size(), " images");
  if (p.limit > 0) order.resize(static_cast<size_t>(p.limit));
  return gather(folder, order);
}

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
