// The `brecq` command-line program: dispatches to the subcommands that tools/cli/*.cpp files
// register with brecq::cli::register_subcommand (see args.hpp).
//
// Exit status: 0 success, 1 runtime error (bad file contents, ...), 2 usage error.
#include <algorithm>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "args.hpp"
#include "brecq/config.hpp"

namespace {

std::string program_usage() {
  std::string u =
      "usage: brecq <command> [flags]\n"
      "       brecq <command> --help\n"
      "       brecq --version\n\n"
      "commands:\n";
  size_t width = 0;
  for (const auto& c : brecq::cli::subcommands()) width = std::max(width, c.name.size());
  for (const auto& c : brecq::cli::subcommands()) {
    std::string name = c.name;
    name.resize(width + 2, ' ');
    u += "  " + name + c.summary + "\n";
  }
  return u;
}

}  // namespace

int main(int argc, char** argv) {
  auto& table = brecq::cli::subcommands();
  std::sort(table.begin(), table.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    std::fprintf(stderr, "brecq: error: no command given\n\n%s", program_usage().c_str());
    return 2;
  }
  const std::string& command = args[0];
  if (command == "--help" || command == "-h" || command == "help") {
    std::fputs(program_usage().c_str(), stdout);
    return 0;
  }
  if (command == "--version") {
    std::printf("brecq %s\n", BRECQ_VERSION_STRING);
    return 0;
  }
  auto it =
      std::find_if(table.begin(), table.end(), [&](const auto& c) { return c.name == command; });
  if (it == table.end()) {
    std::vector<std::string> names;
    for (const auto& c : table) names.push_back(c.name);
    std::fprintf(stderr, "brecq: error: unknown command '%s'; expected one of: %s\n\n%s",
                 command.c_str(), brecq::cli::Args::join(names).c_str(), program_usage().c_str());
    return 2;
  }
  try {
    return it->run(std::vector<std::string>(args.begin() + 1, args.end()));
  } catch (const brecq::cli::UsageError& e) {
    std::fprintf(stderr, "brecq %s: error: %s\n\n%s", command.c_str(), e.what(), e.usage().c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "brecq %s: error: %s\n", command.c_str(), e.what());
    return 1;
  }
}
