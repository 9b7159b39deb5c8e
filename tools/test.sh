#!/usr/bin/env bash
# The test command: installs dependencies, checks formatting and that every header compiles on
# its own, builds the tests in a normal and in a sanitizer configuration, and runs both with ctest.
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
cmake --build build -j"$jobs" --target brecq_tests
step "release tests"
(cd build && ctest --output-on-failure)
step "sanitizer build"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DBRECQ_SANITIZE=ON -DBRECQ_BUILD_EXAMPLES=OFF >/dev/null
cmake --build build-asan -j"$jobs" --target brecq_tests
step "sanitizer tests"
(cd build-asan && ctest --output-on-failure)
step done
