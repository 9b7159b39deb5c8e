#!/usr/bin/env bash
# The test command: installs dependencies, checks formatting and that every header compiles on
# its own, builds the tests and `brecq quantize` with g++ (with the ONNX exporter's tests where
# its libraries are) and the tests with clang++ under AddressSanitizer +
# UndefinedBehaviorSanitizer, runs both with ctest (the kill -9 resume test included), then the
# kernel tests under ThreadSanitizer and every fuzz harness for a bounded time.
#
# The five checks after formatting run at once, each in its own lane with its own log and
# temporary folder (printed when it ends, in the order they end): the CI machine has two cores
# and no check keeps both busy alone, so one after the other left a core idle for half of the
# run. The g++ test binary is built at -O1: the same compiler and warnings as a user's -O3 build
# at half of its compile time (the tests' results do not depend on it: the library is built with
# -ffp-contract=off and no fast-math).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
step() { echo "== $1 ($((SECONDS - start)) s)"; }
step setup
tools/setup.sh
step format
tools/check_format.sh
jobs=$(nproc)
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
# OpenMP threads that sleep at barriers instead of spinning: the lanes share the cores.
export OMP_WAIT_POLICY=passive

# Ninja builds in folders of their own (build/, the README's, keeps its generator and -O3); a
# folder configured earlier with another generator is configured afresh.
configure() {
  local dir=$1
  shift
  if [ -f "$dir/CMakeCache.txt" ] && ! grep -qx 'CMAKE_GENERATOR:INTERNAL=Ninja' "$dir/CMakeCache.txt"; then
    rm -rf "$dir/CMakeCache.txt" "$dir/CMakeFiles"
  fi
  cmake -S . -B "$dir" -G Ninja "$@"
}
lane_release() {
  configure build-test -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O1 -DNDEBUG"
  local targets=(brecq_tests brecq_quantize_cli)  # `brecq quantize` alone, for kill -9 resume
  # (the target list read whole first: grep -q stopping early would break the pipe, which
  # pipefail turns into "no such target")
  local target_list
  # (Ninja's `help` names only phony targets; `-t targets all` names every executable)
  target_list=$(ninja -C build-test -t targets all)
  if grep -q '^brecq_onnx_tests:' <<<"$target_list"; then targets+=(brecq_onnx_tests); fi
  cmake --build build-test -j"$jobs" --target "${targets[@]}"
  echo "release build done ($((SECONDS - start)) s)"
  (cd build-test && ctest --output-on-failure)
}
lane_sanitizer() {
  # clang, not g++: its instrumented build and test run take a third of g++'s here. Line tables
  # only: the reports' stack traces keep file and line, at a smaller compile than full -g.
  CXX=clang++-14 configure build-asan -DCMAKE_BUILD_TYPE=Debug -DBRECQ_SANITIZE=ON \
    -DCMAKE_CXX_FLAGS_DEBUG=-gline-tables-only -DBRECQ_BUILD_EXAMPLES=OFF
  cmake --build build-asan -j"$jobs" --target brecq_tests
  echo "sanitizer build done ($((SECONDS - start)) s)"
  (cd build-asan && ctest --output-on-failure)
}
# clang: its syntax-only pass is a quarter cheaper than g++'s (brecq.hpp: 4.6 against 6.1 CPU-s
# here); a header that lacks an include fails under either compiler.
lane_headers() { CXX=clang++-14 tools/check_headers.sh; }
lane_tsan() { tools/tsan.sh build-tsan; }
lane_fuzz() { FUZZ_SEED=1 tools/fuzz.sh build-fuzz 5; }

lanes=(headers release sanitizer tsan fuzz)
declare -A titles=(
  [headers]="headers (each compiles on its own)"
  [release]="g++ build and tests"
  [sanitizer]="AddressSanitizer + UndefinedBehaviorSanitizer build and tests"
  [tsan]="ThreadSanitizer (kernels, parallel loops)"
  [fuzz]="fuzz (5 s per harness from a fixed seed, regression inputs)")
declare -A pid_of
step "starting ${lanes[*]}"
for lane in "${lanes[@]}"; do
  mkdir -p "$logs/tmp-$lane"
  (TMPDIR="$logs/tmp-$lane" "lane_$lane") >"$logs/$lane.log" 2>&1 &
  pid_of[$lane]=$!
done
failed=()
remaining=("${lanes[@]}")
while [ ${#remaining[@]} -gt 0 ]; do
  pids=()
  for lane in "${remaining[@]}"; do pids+=("${pid_of[$lane]}"); done
  rc=0
  ended=
  wait -n -p ended "${pids[@]}" || rc=$?
  for lane in "${remaining[@]}"; do
    [ "${pid_of[$lane]}" = "$ended" ] || continue
    step "${titles[$lane]}: $([ "$rc" -eq 0 ] && echo passed || echo "FAILED (exit $rc)")"
    cat "$logs/$lane.log"
    [ "$rc" -eq 0 ] || failed+=("$lane")
    next=()
    for l in "${remaining[@]}"; do [ "$l" = "$lane" ] || next+=("$l"); done
    remaining=("${next[@]}")
  done
done
if [ ${#failed[@]} -gt 0 ]; then
  step "FAILED: ${failed[*]}"
  exit 1
fi
step done
