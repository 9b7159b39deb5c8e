// Second translation unit of the one-definition check (see test_umbrella_a.cpp).
#include <doctest/doctest.h>

#include "brecq/brecq.hpp"

TEST_CASE("the umbrella header links from a second translation unit") {
  brecq::Tensor t = brecq::Tensor::ones(brecq::Shape{2, 3});
  CHECK(brecq::sum(t).item() == 6.0f);
}
