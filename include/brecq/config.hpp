#pragma once
// The only place with macros: version and the error helper.
#include <sstream>
#include <stdexcept>
#include <string>

#define BRECQ_VERSION_MAJOR 0
#define BRECQ_VERSION_MINOR 1
#define BRECQ_VERSION_PATCH 0
#define BRECQ_VERSION_STRING "0.1.0"

namespace brecq {

/// Every error the library raises: the message names the input, the expected and the actual value.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <typename... Args>
inline std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

/// Throws brecq::Error with the streamed arguments as message.
template <typename... Args>
[[noreturn]] inline void fail(const Args&... args) {
  throw Error(detail::concat(args...));
}

/// Throws brecq::Error with the streamed arguments unless cond holds.
template <typename... Args>
inline void check(bool cond, const Args&... args) {
  if (!cond) fail(args...);
}

}  // namespace brecq
