#!/usr/bin/env bash
# The test command: installs dependencies, checks formatting and that every header compiles on
# its own, builds the tests and `brecq quantize` with g++ -O3 (with the ONNX exporter's tests
# where its libraries are) and the tests with clang++ under AddressSanitizer +
# UndefinedBehaviorSanitizer, runs both with ctest (the kill -9 resume test included), then the
# kernel tests under ThreadSanitizer and every fuzz harness for a bounded time.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
step() { echo "== $1 ($((SECONDS - start)) s)"; }
step setup
tools/setup.sh
step format
tools/check_format.sh
step headers
tools/check_headers.sh
jobs=$(nproc)
step "release build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
targets=(brecq_tests brecq_quantize_cli)  # `brecq quantize` alone, for the kill -9 resume test
# (the target list read whole first: grep -q stopping early would break the pipe, which pipefail
# turns into "no such target")
target_list=$(cmake --build build --target help)
if grep -q brecq_onnx_tests <<<"$target_list"; then targets+=(brecq_onnx_tests); fi
cmake --build build -j"$jobs" --target "${targets[@]}"
step "release tests"
(cd build && ctest --output-on-failure)
step "sanitizer build"
# clang, not g++: its instrumented build and test run take a third of g++'s here.
CXX=clang++-14 cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DBRECQ_SANITIZE=ON -DBRECQ_BUILD_EXAMPLES=OFF >/dev/null
cmake --build build-asan -j"$jobs" --target brecq_tests
step "sanitizer tests"
(cd build-asan && ctest --output-on-failure)
step "thread sanitizer (kernels, parallel loops)"
tools/tsan.sh build-tsan
step "fuzz (5 s per harness from a fixed seed, regression inputs)"
FUZZ_SEED=1 tools/fuzz.sh build-fuzz 5
step done
