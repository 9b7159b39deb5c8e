#!/usr/bin/env bash
# ThreadSanitizer over the OpenMP kernels and parallel loops: the kernel and tensor tests (GEMM,
# conv, integer conv, fake quantization, AdaRound, Adam, L_p, parallel_for, all compared over 1..N
# threads), the ops tests (the parallel elementwise, pooling and normalisation loops), the
# quantizer, quantized-model and reconstruction tests (BRECQ's loops: unit caches, training
# passes, checkpoints) and the integer runtime's executor tests, built with clang 14 -fsanitize=thread and run on 2 threads with LLVM's OpenMP runtime
# and its Archer tool, which tells ThreadSanitizer about OpenMP's synchronisation (without it
# every parallel region reports the runtime's own internals). Any report fails.
#
#   tools/tsan.sh [DIR]     default: build-tsan
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build-tsan}
mkdir -p "$dir"
unity=$dir/tsan_tests.cpp
: > "$unity"
for f in tests/kernels/*.cpp tests/kernels/int/*.cpp tests/tensor/*.cpp tests/ops/*.cpp \
  tests/quant/test_quantizer.cpp tests/quant/test_qmodel.cpp tests/quant/test_reconstructor.cpp \
  tests/runtime/test_executor.cpp; do
  echo "#include \"$PWD/$f\"" >> "$unity"
done
clang++-14 -std=c++20 -O1 -gline-tables-only -march=native -ffp-contract=off -fopenmp -fsanitize=thread -fno-omit-frame-pointer \
  -Iinclude -Itests -isystem /usr/include/stb -DBRECQ_TEST_DATA_DIR="\"$PWD/tests/data\"" \
  -DBRECQ_SHARED_DIR="\"$PWD/../shared\"" tests/main.cpp "$unity" -o "$dir/tsan_tests"
archer=/usr/lib/llvm-14/lib/libarcher.so
[ -e "$archer" ] || { echo "tsan: $archer missing (libomp-14-dev)" >&2; exit 1; }
OMP_NUM_THREADS=2 OMP_TOOL_LIBRARIES=$archer \
  TSAN_OPTIONS="halt_on_error=1 ignore_noninstrumented_modules=1 exitcode=66" \
  "$dir/tsan_tests" --duration=false
