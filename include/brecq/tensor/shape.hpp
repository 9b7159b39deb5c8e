#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "brecq/config.hpp"

namespace brecq {

/// Sizes of a tensor's dimensions, outermost first (NCHW for images).
class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims) : dims_(dims) { validate(); }
  explicit Shape(std::vector<int64_t> dims) : dims_(std::move(dims)) { validate(); }

  int64_t ndim() const { return static_cast<int64_t>(dims_.size()); }
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : dims_) n *= d;
    return n;
  }
  /// Dimension i; negative i counts from the end.
  int64_t operator[](int64_t i) const { return dims_[static_cast<size_t>(wrap(i))]; }
  int64_t& operator[](int64_t i) { return dims_[static_cast<size_t>(wrap(i))]; }
  int64_t wrap(int64_t i) const {
    int64_t n = ndim();
    check(i >= -n && i < n, "dimension index ", i, " out of range for shape ", *this);
    return i < 0 ? i + n : i;
  }
  const std::vector<int64_t>& dims() const { return dims_; }
  auto begin() const { return dims_.begin(); }
  auto end() const { return dims_.end(); }
  bool operator==(const Shape& o) const { return dims_ == o.dims_; }
  bool operator!=(const Shape& o) const { return dims_ != o.dims_; }

  /// Row-major strides (in elements) of a contiguous tensor of this shape.
  std::vector<int64_t> contiguous_strides() const {
    std::vector<int64_t> s(dims_.size());
    int64_t acc = 1;
    for (size_t i = dims_.size(); i-- > 0;) {
      s[i] = acc;
      acc *= dims_[i];
    }
    return s;
  }

  std::string str() const {
    std::string s = "[";
    for (size_t i = 0; i < dims_.size(); ++i) s += (i ? ", " : "") + std::to_string(dims_[i]);
    return s + "]";
  }

 private:
  void validate() const {
    for (int64_t d : dims_)
      if (d < 0) fail("shape ", str(), " has a negative dimension");
  }
  std::vector<int64_t> dims_;
};

inline std::ostream& operator<<(std::ostream& os, const Shape& s) { return os << s.str(); }

}  // namespace brecq
