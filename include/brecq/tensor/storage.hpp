#pragma once
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "brecq/config.hpp"

namespace brecq {

namespace detail {

/// Freed large buffers kept for reuse by the next allocation of the same rounded size. A
/// reconstruction iteration allocates the same few-MiB tensors thousands of times; from the C
/// library each would come back as fresh pages (the heap top is trimmed or the block is mmapped),
/// and zero-filling those pages took a fifth of a ResNet-20 block iteration in the kernel.
class BufferCache {
 public:
  static constexpr std::size_t kMinBytes = std::size_t{64} << 10;    ///< smaller: plain malloc
  static constexpr std::size_t kMaxCached = std::size_t{512} << 20;  ///< bytes kept at most

  /// Never destroyed, so that tensors freed during static destruction still find it.
  static BufferCache& instance() {
    static BufferCache* cache = new BufferCache;
    return *cache;
  }

  /// A cached buffer of exactly `bytes`, or nullptr.
  std::byte* take(std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.find(bytes);
    if (it == free_.end() || it->second.empty()) return nullptr;
    std::byte* p = it->second.back();
    it->second.pop_back();
    cached_ -= bytes;
    return p;
  }

  /// Keeps p (of `bytes`) for reuse; when the cache is full, first frees everything it holds
  /// (the sizes in use change between reconstruction units).
  void give(std::byte* p, std::size_t bytes) {
    if (bytes > kMaxCached) {
      std::free(p);
      return;
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (cached_ + bytes > kMaxCached) {
      for (auto& [size, blocks] : free_)
        for (std::byte* b : blocks) std::free(b);
      free_.clear();
      cached_ = 0;
    }
    free_[bytes].push_back(p);
    cached_ += bytes;
  }

 private:
  std::mutex mutex_;
  std::map<std::size_t, std::vector<std::byte*>> free_;
  std::size_t cached_ = 0;
};

}  // namespace detail

/// Where a file-backed Storage keeps its bytes: a temporary file in `dir`.
struct FileBacked {
  std::string dir;
};

/// 64-byte aligned, uninitialised byte buffer shared by a tensor and its views.
class Storage {
 public:
  static constexpr std::size_t alignment = 64;

  explicit Storage(std::size_t bytes) : bytes_(bytes) {
    rounded_ = bytes <= detail::BufferCache::kMinBytes
                   ? (bytes + alignment - 1) / alignment * alignment
                   : (bytes + 4095) / 4096 * 4096;  // whole pages: more reuse between sizes
    if (rounded_ == 0) rounded_ = alignment;
    if (cached()) data_ = detail::BufferCache::instance().take(rounded_);
    if (!data_) data_ = static_cast<std::byte*>(std::aligned_alloc(alignment, rounded_));
    if (!data_) throw std::bad_alloc();
  }
  /// A buffer in a memory-mapped temporary file under where.dir: its pages may be written back to
  /// the file and dropped under memory pressure, so that data larger than the memory still fits.
  /// The file is unlinked at once (nothing is left behind, even after kill -9), and its disk
  /// space reserved, so that a full disk is an error here rather than a SIGBUS on first write.
  Storage(std::size_t bytes, const FileBacked& where) : bytes_(bytes), mapped_(true) {
    rounded_ = bytes == 0 ? alignment : (bytes + 4095) / 4096 * 4096;
    std::string path = where.dir + "/brecq-cache-XXXXXX";
    const int fd = ::mkstemp(path.data());
    if (fd < 0)
      fail("file-backed buffer: cannot create a temporary file in '", where.dir,
           "': ", std::strerror(errno));
    ::unlink(path.c_str());
    const int err = ::posix_fallocate(fd, 0, static_cast<off_t>(rounded_));
    if (err != 0) {
      ::close(fd);
      fail("file-backed buffer: cannot reserve ", rounded_, " bytes in '", where.dir,
           "': ", std::strerror(err));
    }
    void* p = ::mmap(nullptr, rounded_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    const int map_errno = errno;
    ::close(fd);  // the mapping keeps the file
    if (p == MAP_FAILED)
      fail("file-backed buffer: cannot map ", rounded_, " bytes in '", where.dir,
           "': ", std::strerror(map_errno));
    data_ = static_cast<std::byte*>(p);
  }
  ~Storage() {
    if (mapped_) {
      ::munmap(data_, rounded_);
    } else if (cached()) {
      detail::BufferCache::instance().give(data_, rounded_);
    } else {
      std::free(data_);
    }
  }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  std::byte* data() { return data_; }
  const std::byte* data() const { return data_; }
  std::size_t bytes() const { return bytes_; }
  bool file_backed() const { return mapped_; }

 private:
  bool cached() const { return rounded_ > detail::BufferCache::kMinBytes; }

  std::byte* data_ = nullptr;
  std::size_t bytes_ = 0;
  std::size_t rounded_ = 0;
  bool mapped_ = false;
};

}  // namespace brecq
