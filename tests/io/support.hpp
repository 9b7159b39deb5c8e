#pragma once
// Helpers shared by the I/O tests: error-message capture, temporary folders, file writing, and
// stb_image_write (Debian's libstb-dev) to make real JPEG/PNG and compressed deflate test inputs.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "brecq/config.hpp"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
#pragma GCC diagnostic pop

namespace brecq::test {

namespace fs = std::filesystem;

/// The message of the brecq::Error `f` throws, or "<no error>".
template <typename F>
inline std::string error_of(F&& f) {
  try {
    f();
  } catch (const brecq::Error& e) {
    return e.what();
  }
  return "<no error>";
}

inline bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

/// A fresh folder under the system temp directory, removed with everything in it at scope exit.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path = fs::temp_directory_path() /
           ("brecq_io_" + tag + "_" +
            std::to_string(std::hash<std::string>{}(tag) ^ reinterpret_cast<uintptr_t>(this)));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

/// ../shared beside the project root (real data and models; tests skip with a message without it).
inline std::string shared_dir() { return BRECQ_SHARED_DIR; }

inline void write_file(const fs::path& p, const std::vector<uint8_t>& bytes) {
  std::ofstream o(p, std::ios::binary);
  o.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace brecq::test
