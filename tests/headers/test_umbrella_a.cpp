// Two translation units include the whole library: a function defined in a header without
// `inline` (or template/constexpr) breaks the link with a multiple-definition error.
#include <doctest/doctest.h>

#include "brecq/brecq.hpp"

TEST_CASE("the umbrella header exposes the library in one include") {
  brecq::nn::Model m = brecq::nn::make_model("resnet20_cifar");
  CHECK(m.blocks.size() == 11);
  CHECK(std::string(BRECQ_VERSION_STRING) == "0.1.0");
}
