#pragma once
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

namespace brecq {

/// 64-byte aligned, uninitialised byte buffer shared by a tensor and its views.
class Storage {
 public:
  static constexpr std::size_t alignment = 64;

  explicit Storage(std::size_t bytes) : bytes_(bytes) {
    std::size_t rounded = (bytes + alignment - 1) / alignment * alignment;
    data_ = static_cast<std::byte*>(std::aligned_alloc(alignment, rounded ? rounded : alignment));
    if (!data_) throw std::bad_alloc();
  }
  ~Storage() { std::free(data_); }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  std::byte* data() { return data_; }
  const std::byte* data() const { return data_; }
  std::size_t bytes() const { return bytes_; }

 private:
  std::byte* data_ = nullptr;
  std::size_t bytes_ = 0;
};

}  // namespace brecq
