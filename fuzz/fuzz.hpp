#pragma once
// Shared by the libFuzzer harnesses (fuzz/<name>.cpp, built and run by tools/fuzz.sh).
//
// A harness feeds one input to a loader. A brecq::Error (for the flag parser, its UsageError) is
// the correct answer to a bad input, so it is caught here; anything else that escapes (another
// exception type, which std::terminate turns into a crash), a crash, a hang, a leak, a sanitizer
// report or memory beyond -rss_limit_mb is a finding.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "brecq/config.hpp"

namespace brecq::fuzz {

/// Runs f; a brecq::Error is the expected outcome for bad input. Returns whether f succeeded.
template <class F>
inline bool accepts(F&& f) {
  try {
    std::forward<F>(f)();
    return true;
  } catch (const brecq::Error&) {
    return false;
  }
}

inline std::span<const uint8_t> bytes(const uint8_t* data, size_t size) { return {data, size}; }

inline std::string text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace brecq::fuzz
