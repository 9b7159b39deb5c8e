#pragma once
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "brecq/config.hpp"
#include "brecq/tensor/dtype.hpp"
#include "brecq/tensor/rng.hpp"
#include "brecq/tensor/shape.hpp"
#include "brecq/tensor/storage.hpp"

namespace brecq {

/// What a Tensor handle points to: a strided view of a shared Storage plus autograd state.
/// Strides and offset are in elements.
struct TensorImpl {
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;
  Shape shape;
  std::vector<int64_t> strides;
  DType dtype = DType::f32;
  bool requires_grad = false;
  bool is_leaf = true;  ///< false for results of recorded ops
  std::shared_ptr<TensorImpl> grad;
};

namespace detail {
/// Calls f(offset_a, offset_b) for every index of `shape`, with offsets computed from two stride
/// sets. Innermost dimension last; rank 0 visits once.
template <typename F>
inline void for_each_offset2(const Shape& shape, const std::vector<int64_t>& sa,
                             const std::vector<int64_t>& sb, F&& f) {
  const int64_t nd = shape.ndim();
  if (shape.numel() == 0) return;
  if (nd == 0) {
    f(int64_t{0}, int64_t{0});
    return;
  }
  std::vector<int64_t> idx(static_cast<size_t>(nd), 0);
  const int64_t inner = shape[nd - 1], ia = sa[nd - 1], ib = sb[nd - 1];
  int64_t oa = 0, ob = 0;
  while (true) {
    for (int64_t i = 0; i < inner; ++i) f(oa + i * ia, ob + i * ib);
    int64_t d = nd - 2;
    for (; d >= 0; --d) {
      size_t k = static_cast<size_t>(d);
      ++idx[k];
      oa += sa[k];
      ob += sb[k];
      if (idx[k] < shape[d]) break;
      oa -= sa[k] * shape[d];
      ob -= sb[k] * shape[d];
      idx[k] = 0;
    }
    if (d < 0) return;
  }
}
}  // namespace detail

/// An n-dimensional array handle. Copies of a Tensor share data (like shared_ptr); use clone()
/// for a deep copy. Views (reshape of contiguous data, narrow, detach) share storage.
class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- construction -------------------------------------------------------------------------
  static Tensor empty(Shape shape, DType dtype = DType::f32) {
    const size_t bytes = static_cast<size_t>(shape.numel()) * dtype_size(dtype);
    return on_storage(std::make_shared<Storage>(bytes), std::move(shape), dtype);
  }
  /// An uninitialised tensor in a memory-mapped temporary file under where.dir (see Storage).
  static Tensor empty(Shape shape, const FileBacked& where, DType dtype = DType::f32) {
    const size_t bytes = static_cast<size_t>(shape.numel()) * dtype_size(dtype);
    return on_storage(std::make_shared<Storage>(bytes, where), std::move(shape), dtype);
  }
  static Tensor zeros(Shape shape, DType dtype = DType::f32) {
    Tensor t = empty(std::move(shape), dtype);
    std::memset(t.raw_data(), 0, t.nbytes());
    return t;
  }
  static Tensor full(Shape shape, float value) {
    Tensor t = empty(std::move(shape));
    t.fill(value);
    return t;
  }
  static Tensor ones(Shape shape) { return full(std::move(shape), 1.0f); }
  static Tensor scalar(float value) { return full(Shape{}, value); }
  /// Copies `values` (row-major) into a new float tensor; the count must match the shape.
  static Tensor from_vector(Shape shape, const std::vector<float>& values) {
    check(static_cast<int64_t>(values.size()) == shape.numel(), "Tensor::from_vector: shape ",
          shape, " needs ", shape.numel(), " values, got ", values.size());
    Tensor t = empty(std::move(shape));
    if (!values.empty()) std::memcpy(t.raw_data(), values.data(), values.size() * sizeof(float));
    return t;
  }
  template <typename T>
  static Tensor from_data(Shape shape, const T* data) {
    Tensor t = empty(std::move(shape), dtype_of<T>::value);
    if (t.numel()) std::memcpy(t.raw_data(), data, t.nbytes());
    return t;
  }
  static Tensor randn(Shape shape, Rng& rng, float stddev = 1.0f) {
    Tensor t = empty(std::move(shape));
    float* p = t.data<float>();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = stddev * rng.normal();
    return t;
  }
  static Tensor uniform(Shape shape, Rng& rng, float lo, float hi) {
    Tensor t = empty(std::move(shape));
    float* p = t.data<float>();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = rng.uniform(lo, hi);
    return t;
  }

  // ---- metadata -----------------------------------------------------------------------------
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  int64_t ndim() const { return impl().shape.ndim(); }
  int64_t dim(int64_t i) const { return impl().shape[i]; }
  int64_t numel() const { return impl().shape.numel(); }
  DType dtype() const { return impl().dtype; }
  const std::vector<int64_t>& strides() const { return impl().strides; }
  int64_t offset() const { return impl().offset; }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }
  bool is_contiguous() const {
    auto expect = impl().shape.contiguous_strides();
    for (int64_t i = 0; i < ndim(); ++i)
      if (dim(i) != 1 && impl().strides[static_cast<size_t>(i)] != expect[static_cast<size_t>(i)])
        return false;
    return true;
  }
  bool same_storage(const Tensor& o) const { return impl().storage == o.impl().storage; }

  // ---- data access --------------------------------------------------------------------------
  /// Pointer to the first element; checks the element type.
  template <typename T>
  T* data() {
    check(dtype() == dtype_of<T>::value, "Tensor::data: tensor holds ", dtype_name(dtype()),
          ", requested ", dtype_name(dtype_of<T>::value));
    return reinterpret_cast<T*>(impl().storage->data()) + impl().offset;
  }
  template <typename T>
  const T* data() const {
    return const_cast<Tensor*>(this)->data<T>();
  }
  std::byte* raw_data() { return impl().storage->data() + impl().offset * dtype_size(dtype()); }
  const std::byte* raw_data() const { return const_cast<Tensor*>(this)->raw_data(); }
  float item() const {
    check(numel() == 1, "Tensor::item: expected a one-element tensor, got shape ", shape());
    return *contiguous().data<float>();
  }
  /// Float values in row-major order.
  std::vector<float> to_vector() const {
    Tensor c = contiguous();
    const float* p = c.data<float>();
    return std::vector<float>(p, p + numel());
  }
  float at(std::initializer_list<int64_t> index) const {
    check(static_cast<int64_t>(index.size()) == ndim(), "Tensor::at: index has ", index.size(),
          " entries for shape ", shape());
    int64_t off = 0, d = 0;
    for (int64_t i : index) {
      check(i >= 0 && i < dim(d), "Tensor::at: index ", i, " out of range for dim ", d,
            " of shape ", shape());
      off += i * strides()[static_cast<size_t>(d++)];
    }
    return data<float>()[off];
  }

  // ---- copies and views (no autograd: see ops/shape.hpp for differentiable versions) ---------
  void fill(float value) {
    check(is_contiguous(), "Tensor::fill: needs a contiguous tensor, got strides of shape ",
          shape());
    float* p = data<float>();
    for (int64_t i = 0; i < numel(); ++i) p[i] = value;
  }
  /// Element-wise copy from a tensor of the same shape and dtype (any strides).
  void copy_from(const Tensor& src) {
    check(src.shape() == shape() && src.dtype() == dtype(), "Tensor::copy_from: destination ",
          shape(), " ", dtype_name(dtype()), ", source ", src.shape(), " ",
          dtype_name(src.dtype()));
    if (is_contiguous() && src.is_contiguous()) {
      std::memmove(raw_data(), src.raw_data(), nbytes());
      return;
    }
    const size_t es = dtype_size(dtype());
    std::byte* d = impl().storage->data();
    const std::byte* s = src.impl().storage->data();
    const int64_t od = offset(), os = src.offset();
    detail::for_each_offset2(shape(), strides(), src.strides(), [&](int64_t a, int64_t b) {
      std::memcpy(d + (od + a) * es, s + (os + b) * es, es);
    });
  }
  /// Deep copy, contiguous, without autograd history.
  Tensor clone() const {
    Tensor t = empty(shape(), dtype());
    t.copy_from(*this);
    return t;
  }
  /// This tensor if contiguous, else a contiguous copy (no autograd).
  Tensor contiguous() const { return is_contiguous() ? *this : clone(); }
  /// Shares the data, drops autograd history and requires_grad.
  Tensor detach() const {
    auto impl2 = std::make_shared<TensorImpl>();
    impl2->storage = impl().storage;
    impl2->offset = impl().offset;
    impl2->shape = impl().shape;
    impl2->strides = impl().strides;
    impl2->dtype = impl().dtype;
    return Tensor(std::move(impl2));
  }
  /// View with a new shape over contiguous data (no autograd).
  Tensor view(Shape new_shape) const {
    check(new_shape.numel() == numel(), "Tensor::view: cannot view shape ", shape(), " as ",
          new_shape, " (element counts differ)");
    check(is_contiguous(), "Tensor::view: needs contiguous data, got shape ", shape());
    Tensor v = detach();
    v.impl_->strides = new_shape.contiguous_strides();
    v.impl_->shape = std::move(new_shape);
    return v;
  }
  /// View of `length` entries of dimension `d` starting at `start` (no autograd).
  Tensor narrow(int64_t d, int64_t start, int64_t length) const {
    d = shape().wrap(d);
    check(start >= 0 && length >= 0 && start + length <= dim(d), "Tensor::narrow: range [", start,
          ", ", start + length, ") out of bounds for dim ", d, " of shape ", shape());
    Tensor v = detach();
    v.impl_->offset += start * strides()[static_cast<size_t>(d)];
    v.impl_->shape[d] = length;
    return v;
  }

  // ---- autograd state -----------------------------------------------------------------------
  bool requires_grad() const { return impl().requires_grad; }
  /// Marks a leaf as a parameter to differentiate (or freezes it).
  Tensor& set_requires_grad(bool on = true) {
    check(impl().is_leaf, "set_requires_grad: only leaf tensors can change requires_grad");
    check(!on || dtype() == DType::f32, "set_requires_grad: only f32 tensors have gradients");
    impl_->requires_grad = on;
    return *this;
  }
  bool is_leaf() const { return impl().is_leaf; }
  /// Accumulated gradient, or an undefined tensor if none reached this tensor.
  Tensor grad() const { return Tensor(impl().grad); }
  void zero_grad() { impl().grad.reset(); }

  TensorImpl& impl() const {
    check(impl_ != nullptr, "use of an undefined Tensor");
    return *impl_;
  }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

 private:
  static Tensor on_storage(std::shared_ptr<Storage> storage, Shape shape, DType dtype) {
    auto impl = std::make_shared<TensorImpl>();
    impl->storage = std::move(storage);
    impl->strides = shape.contiguous_strides();
    impl->shape = std::move(shape);
    impl->dtype = dtype;
    return Tensor(std::move(impl));
  }

  std::shared_ptr<TensorImpl> impl_;
};

/// The tensor's shape, or "[]" for an undefined tensor; cheap to pass to check() messages.
inline const Shape& shape_of(const Tensor& t) {
  static const Shape none;
  return t.defined() ? t.shape() : none;
}

}  // namespace brecq
