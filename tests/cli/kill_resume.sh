#!/usr/bin/env bash
# brecq quantize killed with SIGKILL in the middle of a unit: no output file appears, the same
# command resumes after the last finished unit, and the final file is byte-identical to an
# uninterrupted run's; and two runs of one command with one seed and one thread count write the
# same bytes. Two threads (OMP_NUM_THREADS=2), as the CI machine has; then one run with one
# thread must write the same bytes too (work is split by output elements, reductions run in a
# fixed order and random draws are seeded per block of elements, never per thread).
#
#   kill_resume.sh BRECQ SHARED_DIR
set -euo pipefail
brecq=$1
shared=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
args=(quantize --model resnet20_cifar --weights "$shared/models/resnet20_cifar10.safetensors"
      --calib "$shared/data/cifar10/calib" --calib-size 64 --act-init-images 32 --w-bits 4
      --a-bits 4 --iters-w 60 --iters-a 20 --seed 5 --no-progress)

fail() { echo "kill_resume: $*" >&2; exit 1; }

# The number of weight units a checkpoint records as done (0 while there is none).
weights_done() {
  local n
  n=$(grep -a -o '"weights_done":"[0-9]*"' "$1" 2>/dev/null | grep -o '[0-9]*' || true)
  echo "${n:-0}"
}

for threads in 2; do
  export OMP_NUM_THREADS=$threads
  rm -f "$work"/*.safetensors*
  "$brecq" "${args[@]}" --out "$work/whole.safetensors" > "$work/whole.log" 2>&1 ||
    fail "uninterrupted run failed: $(tail -3 "$work/whole.log")"
  "$brecq" "${args[@]}" --out "$work/again.safetensors" > "$work/again.log" 2>&1
  cmp -s "$work/whole.safetensors" "$work/again.safetensors" ||
    fail "$threads thread(s): two runs of one command wrote different files"

  "$brecq" "${args[@]}" --out "$work/killed.safetensors" > "$work/killed.log" 2>&1 &
  pid=$!
  # Two units finished, then a little into the third: killed mid-unit.
  for _ in $(seq 600); do
    [ "$(weights_done "$work/killed.safetensors.ckpt")" -ge 2 ] && break
    kill -0 "$pid" 2> /dev/null || fail "the run ended before its second unit"
    sleep 0.05
  done
  sleep 0.3
  kill -9 "$pid"
  wait "$pid" 2> /dev/null || true
  done_units=$(weights_done "$work/killed.safetensors.ckpt")
  [ "$done_units" -ge 2 ] || fail "no checkpoint with 2 finished units before the kill"
  [ ! -e "$work/killed.safetensors" ] || fail "a killed run left an output file"
  for f in "$work"/*.tmp; do
    [ -e "$f" ] && echo "kill_resume: (a killed write left $f; never read)"
  done

  "$brecq" "${args[@]}" --out "$work/killed.safetensors" > "$work/resumed.log" 2>&1 ||
    fail "resumed run failed: $(tail -3 "$work/resumed.log")"
  grep -q "resuming from .*killed.safetensors.ckpt: $done_units weight units" "$work/resumed.log" ||
    fail "the rerun did not resume after $done_units units: $(grep -i resum "$work/resumed.log")"
  cmp -s "$work/whole.safetensors" "$work/killed.safetensors" ||
    fail "$threads thread(s): the resumed run's file differs from the uninterrupted run's"
  [ ! -e "$work/killed.safetensors.ckpt" ] || fail "the checkpoint was left after the run"
  echo "kill_resume: $threads thread(s): killed after $done_units units, resumed, identical"
done
OMP_NUM_THREADS=1 "$brecq" "${args[@]}" --out "$work/one_thread.safetensors" > "$work/one.log" 2>&1
cmp -s "$work/whole.safetensors" "$work/one_thread.safetensors" ||
  fail "1 and 2 threads wrote different files"
echo "kill_resume: 1 thread wrote the same bytes as 2"
