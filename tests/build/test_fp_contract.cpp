#include <doctest/doctest.h>

namespace {

// Out of line and fed through volatiles, so that the compiler sees a*b+c with unknown operands:
// the case it would fuse into one FMA under -ffp-contract=fast (GCC's default) or =on (Clang's).
[[gnu::noinline]] float mul_add(float a, float b, float c) { return a * b + c; }

}  // namespace

TEST_CASE("the build rounds a*b+c twice: no FMA the code does not ask for") {
  // (1 + 2^-13)(1 - 2^-13) = 1 - 2^-26 rounds to 1 in float, so a*b - 1 is 0 when the product is
  // rounded and -2^-26 when it is fused. The brecq target compiles with -ffp-contract=off: fusion
  // depends on inlining, so it made one computation give different results in two programs.
  volatile float a = 1.0f + 0x1p-13f, b = 1.0f - 0x1p-13f, c = -1.0f;
  CHECK(mul_add(a, b, c) == 0.0f);
}
