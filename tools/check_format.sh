#!/usr/bin/env bash
# Every C++ file in the repository is formatted with the project's .clang-format.
set -euo pipefail
cd "$(dirname "$0")/.."
fmt=$(command -v clang-format-14 || command -v clang-format || true)
[ -n "$fmt" ] || { echo "clang-format not found (apt-get install clang-format-14)"; exit 1; }
files=$(git ls-files '*.hpp' '*.cpp' '*.h' 2>/dev/null || find include tests tools examples bench -name '*.[ch]pp')
bad=()
for f in $files; do
  [ -f "$f" ] || continue
  "$fmt" --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [ ${#bad[@]} -gt 0 ]; then
  echo "not formatted with .clang-format (run: $fmt -i FILE):"; printf '  %s\n' "${bad[@]}"; exit 1
fi
echo "all $(echo "$files" | wc -w) C++ files follow .clang-format"
