#!/usr/bin/env bash
# Builds the libFuzzer harnesses (fuzz/<name>.cpp, clang++-14 with -fsanitize=fuzzer,address,
# undefined) into DIR, runs every committed regression input (fuzz/regressions/<name>/*) through
# its harness, then fuzzes each harness for SECONDS (two at a time), starting from its seed corpus
# (fuzz/corpus/<name>/; new inputs go to DIR/corpus/<name>/, never into the repository). Prints
# the executions and executions per second of each harness; exits non-zero on any crash, hang,
# leak, sanitizer report or out-of-memory (the reproducer is kept in DIR/artifacts/<name>/).
#
# FUZZ_SEED=N fixes libFuzzer's random seed (CI uses it: the same inputs in every run, so that a
# finding shows up here first, not as a failure at random); unset, each run explores anew.
#
#   tools/fuzz.sh [DIR [SECONDS [HARNESS...]]]     default: ../build-fuzz beside the repo, 20 s
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=$(realpath -m "${1:-../build-fuzz}")
seconds=${2:-20}
shift $(($# < 2 ? $# : 2))
harnesses=()
for src in fuzz/*.cpp; do
  name=$(basename "$src" .cpp)
  [ "$name" != make_seeds ] && harnesses+=("$name")
done
if [ $# -gt 0 ]; then harnesses=("$@"); fi
jobs=2
mkdir -p "$dir"

# ---- build (a harness is rebuilt when a header, harness or this script is newer) ----
# shift-exponent is recoverable only so that fuzz/ubsan.supp can suppress one known report inside
# stb_image; halt_on_error=1 still stops on every other one.
flags=(-std=c++20 -O1 -gline-tables-only -march=native -ffp-contract=off -fopenmp -fsanitize=fuzzer,address,undefined
       -fno-sanitize-recover=all -fsanitize-recover=shift-exponent -fno-omit-frame-pointer -Iinclude
       -isystem /usr/include/stb)
build() {
  local name=$1 bin=$dir/$1
  if [ -x "$bin" ] && [ -z "$(find include fuzz tools/cli/args.hpp tools/fuzz.sh -newer "$bin" \
                                   -type f -print -quit)" ]; then
    return 0
  fi
  clang++-14 "${flags[@]}" "fuzz/$name.cpp" -o "$bin.tmp" && mv "$bin.tmp" "$bin"
}
start=$SECONDS
pids=()
for h in "${harnesses[@]}"; do
  build "$h" &
  pids+=($!)
  if [ ${#pids[@]} -ge $jobs ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p"; done
echo "fuzz: built ${#harnesses[@]} harnesses in $((SECONDS - start)) s into $dir"

# ---- per-format input limits ----
max_len() {
  case $1 in
    cli_args) echo 4096 ;;
    bits_file | sensitivity_cache) echo 16384 ;;
    *) echo 65536 ;;
  esac
}
export OMP_NUM_THREADS=1
export UBSAN_OPTIONS="suppressions=$root/fuzz/ubsan.supp:halt_on_error=1:print_stacktrace=1"
common=(-rss_limit_mb=2048 -timeout=10 -print_final_stats=1)
seed=${FUZZ_SEED:-0}  # 0: libFuzzer picks one
[[ $seed =~ ^[0-9]+$ ]] || { echo "fuzz: FUZZ_SEED must be a non-negative integer, got '$seed'" >&2; exit 2; }
status=0

# ---- committed regression inputs ----
for h in "${harnesses[@]}"; do
  reg=fuzz/regressions/$h
  [ -d "$reg" ] && [ -n "$(ls -A "$reg")" ] || continue
  if "$dir/$h" "${common[@]}" "$reg"/* >"$dir/$h.regressions.log" 2>&1; then
    echo "fuzz: $h: $(ls "$reg" | wc -l) regression inputs pass"
  else
    echo "fuzz: $h: a regression input FAILS (log: $dir/$h.regressions.log)"
    tail -n 30 "$dir/$h.regressions.log"
    status=1
  fi
done

# ---- fuzzing, two harnesses at a time ----
run() {
  local h=$1
  mkdir -p "$dir/corpus/$h" "$dir/artifacts/$h"
  "$dir/$h" "${common[@]}" -seed="$seed" -max_len="$(max_len "$h")" -max_total_time="$seconds" \
    -close_fd_mask=1 -artifact_prefix="$dir/artifacts/$h/" "$dir/corpus/$h" "fuzz/corpus/$h" \
    >"$dir/$h.log" 2>&1
}
pids=()
names=()
report() {
  local h=$1 rc=$2 log=$dir/$1.log
  local execs rate
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^#[0-9]*[[:space:]]*DONE .*exec\/s: \([0-9]*\).*/\1/p' "$log" | tail -n 1)
  if [ "$rc" -eq 0 ]; then
    printf 'fuzz: %-18s %10s executions %8s exec/s  ok\n' "$h" "${execs:-?}" "${rate:-?}"
  else
    printf 'fuzz: %-18s %10s executions %8s exec/s  FAILED (exit %s, log %s)\n' "$h" \
      "${execs:-?}" "${rate:-?}" "$rc" "$log"
    grep -m 5 -E 'ERROR:|SUMMARY:|Test unit written|deadly signal|out-of-memory|timeout' "$log" || true
    status=1
  fi
}
for h in "${harnesses[@]}"; do
  run "$h" &
  pids+=($!)
  names+=("$h")
  if [ ${#pids[@]} -ge $jobs ]; then
    rc=0
    wait "${pids[0]}" || rc=$?
    report "${names[0]}" "$rc"
    pids=("${pids[@]:1}")
    names=("${names[@]:1}")
  fi
done
for i in "${!pids[@]}"; do
  rc=0
  wait "${pids[$i]}" || rc=$?
  report "${names[$i]}" "$rc"
done
echo "fuzz: done in $((SECONDS - start)) s"
exit $status
