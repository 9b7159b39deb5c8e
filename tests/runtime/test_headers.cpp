// What a program that embeds the runtime pulls in: compiles one translation
// unit that includes every include/brecq/runtime/*.hpp and nothing else, with
// the compiler's include trace (-H), and checks that no autodiff, nn/, ops/,
// quant/, Tensor or stb_image header is among the files it reads. (The test
// binary's own translation units cannot show this: they include everything.)
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#ifndef BRECQ_TEST_CXX
#define BRECQ_TEST_CXX "c++"
#endif

namespace fs = std::filesystem;

TEST_CASE("the runtime headers include no autodiff, nn, Tensor or stb_image") {
  const fs::path root = fs::path(__FILE__).parent_path().parent_path().parent_path();
  const fs::path include = root / "include";
  std::vector<std::string> headers;
  for (const auto& e : fs::directory_iterator(include / "brecq" / "runtime"))
    if (e.path().extension() == ".hpp") headers.push_back(e.path().filename().string());
  std::sort(headers.begin(), headers.end());
  REQUIRE(std::find(headers.begin(), headers.end(), "graph.hpp") != headers.end());
  REQUIRE(std::find(headers.begin(), headers.end(), "load.hpp") != headers.end());

  const fs::path dir = fs::temp_directory_path() / "brecq_test_runtime_headers";
  fs::create_directories(dir);
  {
    std::ofstream src(dir / "embed.cpp");
    for (const std::string& h : headers) src << "#include \"brecq/runtime/" << h << "\"\n";
    src << "int main() { brecq::runtime::Graph g; return "
           "static_cast<int>(g.blocks.size()); }\n";
  }
  const fs::path trace = dir / "trace.txt";
  const std::string cmd = std::string(BRECQ_TEST_CXX) +
                          " -std=c++20 -fopenmp -H -fsyntax-only -I\"" + include.string() +
                          "\" \"" + (dir / "embed.cpp").string() + "\" 2> \"" + trace.string() +
                          "\"";
  const int rc = std::system(cmd.c_str());
  std::ifstream in(trace);
  std::stringstream log;
  log << in.rdbuf();
  INFO("compiler command: ", cmd, "\n", log.str());
  REQUIRE(rc == 0);

  std::vector<std::string> read;  // every header of brecq and stb the compiler opened
  std::istringstream lines(log.str());
  for (std::string line; std::getline(lines, line);)
    if (!line.empty() && line[0] == '.' &&
        (line.find("brecq/") != std::string::npos || line.find("stb") != std::string::npos))
      read.push_back(line.substr(line.find(' ') + 1));
  CHECK(std::any_of(read.begin(), read.end(),
                    [](const std::string& p) { return p.ends_with("brecq/runtime/graph.hpp"); }));
  for (const std::string& p : read) {
    CAPTURE(p);
    for (const char* banned :
         {"brecq/nn/", "brecq/autograd/", "brecq/ops/", "brecq/quant/", "brecq/tensor/tensor.hpp",
          "brecq/tensor/storage.hpp", "brecq/io/image.hpp", "stb_image"})
      CHECK(p.find(banned) == std::string::npos);
  }
  fs::remove_all(dir);
}
