#pragma once
// Helpers shared by tests in several folders (the test folders are compiled together, so a
// helper lives here once instead of in each file's anonymous namespace).
#include <doctest/doctest.h>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "brecq/config.hpp"

namespace brecq::test {

/// A path under the system temp directory; tests remove what they write there.
inline std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("brecq_test_" + name)).string();
}

/// The message of the brecq::Error that f throws ("" if it throws none).
inline std::string error_message(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

/// Checks that f throws brecq::Error and that its message contains every one of `parts`.
inline void check_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  const std::string msg = error_message(f);
  CAPTURE(msg);
  REQUIRE_FALSE(msg.empty());
  for (const std::string& p : parts)
    CHECK_MESSAGE(msg.find(p) != std::string::npos, "missing '", p, "'");
}

}  // namespace brecq::test
