// Fuzzes the command-line flag parser (tools/cli/args.hpp) with the flags of `brecq quantize`:
// the input is argv, one argument per line; every flag's value is then read with the accessor
// the program uses. A UsageError is the correct answer to a bad command line.
#include <cstdint>
#include <string>
#include <vector>

#include "../tools/cli/args.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string> argv;
  std::string arg;
  for (size_t i = 0; i < size; ++i) {
    if (data[i] != '\n') {
      arg += static_cast<char>(data[i]);
      continue;
    }
    argv.push_back(arg);
    arg.clear();
  }
  if (!arg.empty()) argv.push_back(arg);
  using brecq::cli::Flag;
  brecq::cli::Args args("quantize", "fuzzed",
                        brecq::cli::fp_model_flags({
                            {.name = "--w-bits", .value_name = "N", .default_value = "4"},
                            {.name = "--a-bits", .value_name = "N", .default_value = "4"},
                            {.name = "--granularity", .value_name = "G", .default_value = "block"},
                            {.name = "--lr-a", .value_name = "X", .default_value = "4e-5"},
                            {.name = "--iters-w", .value_name = "N", .default_value = "20000"},
                            {.name = "--out", .value_name = "FILE", .required = true},
                            {.name = "--json"},
                            {.name = "--qdrop"},
                        }));
  try {
    if (!args.parse(argv)) return 0;
    args.get_int("--w-bits", 2, 8);
    args.get_int("--a-bits", 0, 8);
    args.get_int("--iters-w", 0);
    args.get_float("--lr-a", 0.0f, 1.0f);
    args.get_choice("--granularity", {"layer", "block", "stage", "net"});
    for (const char* f : {"--model", "--weights", "--calib", "--out", "--json", "--qdrop"})
      if (!args.has(f) && !args.get(f).empty()) __builtin_trap();  // no default, so no value
  } catch (const brecq::cli::UsageError&) {
  }
  return 0;
}
