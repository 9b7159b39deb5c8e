#!/usr/bin/env bash
# Every public header compiles on its own (with the project's warnings as errors), checked in
# parallel, one compiler per core.
set -euo pipefail
cd "$(dirname "$0")/.."
export CXX=${CXX:-g++}
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
check_one() {
  local h=$1 out=$2/$(echo "$1" | tr / _).log
  if ! echo "#include \"${h#include/}\"" | "$CXX" -std=c++20 -fopenmp -Wall -Wextra -Werror \
      -Iinclude -I/usr/include/stb -fsyntax-only -x c++ - 2>"$out"; then
    echo "header does not compile on its own: $h"; cat "$out"; return 1
  fi
}
export -f check_one
headers=$(find include/brecq -name '*.hpp' | sort)
if echo "$headers" | xargs -P "$(nproc)" -I{} bash -c 'check_one "$@"' _ {} "$log"; then
  echo "all $(echo "$headers" | wc -l) headers compile on their own"
else
  exit 1
fi
