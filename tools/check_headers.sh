#!/usr/bin/env bash
# Every public header compiles on its own (with the project's warnings as errors).
set -euo pipefail
cd "$(dirname "$0")/.."
cxx=${CXX:-g++}
status=0
for h in $(find include/brecq -name '*.hpp' | sort); do
  if ! echo "#include \"${h#include/}\"" | "$cxx" -std=c++20 -fopenmp -Wall -Wextra -Werror \
      -Iinclude -I/usr/include/stb -fsyntax-only -x c++ - 2>/tmp/brecq_header_check.log; then
    echo "header does not compile on its own: $h"; cat /tmp/brecq_header_check.log; status=1
  fi
done
[ $status -eq 0 ] && echo "all $(find include/brecq -name '*.hpp' | wc -l) headers compile on their own"
exit $status
