#pragma once
// The `brecq` program's shared pieces: the subcommand table every tools/cli/<command>.cpp
// registers into, and a small strict flag parser (--flag VALUE, --flag=VALUE, switches) that the
// examples and benchmarks use too: flag parsing and usage errors are the programs' business, not
// the library's, so it lives beside them in tools/ rather than under include/brecq/.
//
// A subcommand file:
//   namespace {
//   int run(const std::vector<std::string>& argv) {
//     brecq::cli::Args args("eval", "Evaluates a model.", {{.name = "--model", ...}});
//     if (!args.parse(argv)) return 0;  // --help printed the usage
//     ...
//   }
//   [[maybe_unused]] const bool registered =
//       brecq::cli::register_subcommand({"eval", "Top-1/top-5 accuracy on an image folder", run});
//   }  // namespace
#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iterator>
#include <map>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace brecq::cli {

/// A command-line mistake: main prints the message and `usage`, and exits with status 2.
class UsageError : public std::runtime_error {
 public:
  UsageError(const std::string& message, std::string usage)
      : std::runtime_error(message), usage_(std::move(usage)) {}
  const std::string& usage() const { return usage_; }

 private:
  std::string usage_;
};

// ---- subcommand table -------------------------------------------------------------------------

struct Subcommand {
  std::string name;
  std::string summary;                                         ///< one line for `brecq --help`
  int (*run)(const std::vector<std::string>& argv) = nullptr;  ///< argv after the command name
};

/// Every registered subcommand, sorted by name once main starts.
inline std::vector<Subcommand>& subcommands() {
  static std::vector<Subcommand> table;
  return table;
}

/// Adds a subcommand; call it from a namespace-scope initializer in the subcommand's .cpp file.
inline bool register_subcommand(Subcommand s) {
  subcommands().push_back(std::move(s));
  return true;
}

// ---- flags ------------------------------------------------------------------------------------

struct Flag {
  std::string name = "";        ///< "--batch"
  std::string value_name = "";  ///< "N"; empty for a switch (no value)
  std::string help = "";
  std::string default_value = "";  ///< used when the flag is absent; shown in the usage
  bool required = false;
};

/// The required flags of a program that starts from an FP model and calibration images
/// (--model, --weights, --calib), followed by its own flags. calib_optional_when, if given, makes
/// --calib optional and says when it is not needed.
inline std::vector<Flag> fp_model_flags(std::vector<Flag> own,
                                        const std::string& calib_optional_when = "") {
  std::vector<Flag> out{
      {.name = "--model", .value_name = "MODEL", .help = "architecture", .required = true},
      {.name = "--weights",
       .value_name = "FILE",
       .help = "FP safetensors weights",
       .required = true},
      {.name = "--calib",
       .value_name = "DIR",
       .help = calib_optional_when.empty()
                   ? "calibration image folder"
                   : "calibration image folder (" + calib_optional_when + ")",
       .required = calib_optional_when.empty()}};
  out.insert(out.end(), std::make_move_iterator(own.begin()), std::make_move_iterator(own.end()));
  return out;
}

/// Parsed flags of one subcommand. Every accessor that validates a value throws UsageError
/// naming the flag, what it expects and what it got.
class Args {
 public:
  Args(std::string command, std::string description, std::vector<Flag> flags)
      : command_(std::move(command)),
        description_(std::move(description)),
        flags_(std::move(flags)) {}

  /// Parses argv (the arguments after the subcommand name). Returns false if --help / -h was
  /// given (the usage is then printed to stdout).
  bool parse(const std::vector<std::string>& argv) {
    for (size_t i = 0; i < argv.size(); ++i) {
      const std::string& a = argv[i];
      if (a == "--help" || a == "-h") {
        std::fputs(usage().c_str(), stdout);
        return false;
      }
      if (!a.starts_with("--")) fail("unexpected argument '" + a + "' (flags start with --)");
      const size_t eq = a.find('=');
      const std::string name = a.substr(0, eq);
      const Flag* f = find(name);
      if (!f) fail("unknown flag '" + name + "'; expected one of: " + flag_list());
      if (values_.count(name)) fail("flag " + name + " given more than once");
      if (f->value_name.empty()) {
        if (eq != std::string::npos)
          fail("flag " + name + " takes no value, got '" + a.substr(eq + 1) + "'");
        values_[name] = "";
        continue;
      }
      std::string value;
      if (eq != std::string::npos) {
        value = a.substr(eq + 1);
      } else if (i + 1 < argv.size() && !argv[i + 1].starts_with("--")) {
        value = argv[++i];
      } else {
        fail("flag " + name + " expects a value " + f->value_name + ", got " +
             (i + 1 < argv.size() ? "flag '" + argv[i + 1] + "'" : std::string("nothing")));
      }
      if (value.empty()) fail("flag " + name + " expects a value " + f->value_name + ", got ''");
      values_[name] = value;
    }
    for (const Flag& f : flags_)
      if (f.required && !values_.count(f.name))
        fail("missing required flag " + f.name + " " + f.value_name);
    return true;
  }

  /// Whether the flag was given on the command line.
  bool has(const std::string& name) const { return values_.count(spec(name).name) != 0; }
  /// The flag's value, or its default.
  std::string get(const std::string& name) const {
    auto it = values_.find(spec(name).name);
    return it != values_.end() ? it->second : spec(name).default_value;
  }
  /// An integer in [min, max].
  int64_t get_int(const std::string& name, int64_t min, int64_t max = INT64_MAX) const {
    const std::string v = get(name);
    int64_t x = 0;
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
    const std::string expected = max == INT64_MAX ? "an integer >= " + std::to_string(min)
                                                  : "an integer in [" + std::to_string(min) + ", " +
                                                        std::to_string(max) + "]";
    if (ec != std::errc() || end != v.data() + v.size() || x < min || x > max)
      fail("flag " + name + " expects " + expected + ", got '" + v + "'");
    return x;
  }
  /// A number in [min, max].
  float get_float(const std::string& name, float min, float max) const {
    const std::string v = get(name);
    float x = 0;
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
    if (ec != std::errc() || end != v.data() + v.size() || !(x >= min && x <= max))
      fail("flag " + name + " expects a number in [" + format_number(min) + ", " +
           format_number(max) + "], got '" + v + "'");
    return x;
  }
  /// One of `choices`.
  std::string get_choice(const std::string& name, const std::vector<std::string>& choices) const {
    const std::string v = get(name);
    if (std::find(choices.begin(), choices.end(), v) == choices.end())
      fail("flag " + name + " expects one of: " + join(choices) + "; got '" + v + "'");
    return v;
  }
  /// The path of an existing regular file.
  std::string get_file(const std::string& name) const {
    const std::string v = get(name);
    std::error_code ec;
    if (!std::filesystem::exists(v, ec))
      fail("flag " + name + " expects an existing file, got '" + v + "' (no such file)");
    if (!std::filesystem::is_regular_file(v, ec))
      fail("flag " + name + " expects a regular file, got '" + v + "' (not a file)");
    return v;
  }
  /// The path of an existing folder.
  std::string get_dir(const std::string& name) const {
    const std::string v = get(name);
    std::error_code ec;
    if (!std::filesystem::exists(v, ec))
      fail("flag " + name + " expects an existing folder, got '" + v + "' (no such folder)");
    if (!std::filesystem::is_directory(v, ec))
      fail("flag " + name + " expects a folder, got '" + v + "' (not a folder)");
    return v;
  }

  /// The path of a file to write, in an existing folder.
  std::string get_output(const std::string& name) const {
    const std::string v = get(name);
    const auto dir = std::filesystem::absolute(v).parent_path();
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec))
      fail("flag " + name + " expects a file in an existing folder, got '" + v + "' (no folder " +
           dir.string() + ")");
    return v;
  }

  /// Throws UsageError with `message` and this subcommand's usage.
  [[noreturn]] void fail(const std::string& message) const { throw UsageError(message, usage()); }

  std::string usage() const {
    std::string u = "usage: brecq " + command_;
    for (const Flag& f : flags_) {
      std::string s = f.name + (f.value_name.empty() ? "" : " " + f.value_name);
      u += " " + (f.required ? s : "[" + s + "]");
    }
    u += "\n\n" + description_ + "\n\nflags:\n";
    size_t width = 0;
    for (const Flag& f : flags_) width = std::max(width, f.name.size() + 1 + f.value_name.size());
    for (const Flag& f : flags_) {
      std::string s = f.name + (f.value_name.empty() ? "" : " " + f.value_name);
      s.resize(width + 2, ' ');
      u += "  " + s + f.help;
      if (!f.default_value.empty()) u += " (default: " + f.default_value + ")";
      if (f.required) u += " (required)";
      u += "\n";
    }
    u += "  " + std::string("--help").append(width + 2 - std::min(width + 2, size_t{6}), ' ') +
         "print this text\n";
    return u;
  }

  static std::string join(const std::vector<std::string>& items, const std::string& sep = ", ") {
    std::string s;
    for (const std::string& i : items) s += (s.empty() ? "" : sep) + i;
    return s;
  }

 private:
  const Flag* find(const std::string& name) const {
    for (const Flag& f : flags_)
      if (f.name == name) return &f;
    return nullptr;
  }
  /// The spec of a flag this subcommand declared (a programming error otherwise).
  const Flag& spec(const std::string& name) const {
    const Flag* f = find(name);
    if (!f) throw std::logic_error("brecq " + command_ + ": flag " + name + " was not declared");
    return *f;
  }
  static std::string format_number(float x) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", static_cast<double>(x));
    return buf;
  }
  std::string flag_list() const {
    std::vector<std::string> names;
    for (const Flag& f : flags_) names.push_back(f.name);
    names.push_back("--help");
    return join(names);
  }

  std::string command_, description_;
  std::vector<Flag> flags_;
  std::map<std::string, std::string> values_;
};

/// main() of a program with one Args parse: runs run(argv after the program name) and maps a
/// usage error to exit status 2 (message and usage on stderr), any other error to 1.
template <class F>
inline int run_program(const char* name, int argc, char** argv, F&& run) {
  try {
    return run(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: error: %s\n\n%s", name, e.what(), e.usage().c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", name, e.what());
    return 1;
  }
}

/// `s` as a JSON string literal (quotes and escapes included).
inline std::string json_quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          static const char* hex = "0123456789abcdef";
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 15];
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

}  // namespace brecq::cli
