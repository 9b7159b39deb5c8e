#!/usr/bin/env bash
# Installs what brecq needs to build, test and run its examples on Debian 12. Idempotent: packages
# already present are skipped by apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
# clang-14 + libclang-rt-14-dev (its sanitizer and libFuzzer runtimes, only a recommendation of
# clang-14) + libomp-14-dev (with Archer, for ThreadSanitizer): the sanitizer and fuzz builds;
# libonnx-dev, libprotobuf-dev, python3-onnx: the ONNX exporter and its checker; ninja-build:
# the test command's builds.
packages=(g++ cmake make ninja-build libxsimd-dev doctest-dev libstb-dev dataset-fashion-mnist
          clang-format-14 clang-14 libclang-rt-14-dev libomp-14-dev libonnx-dev libprotobuf-dev python3-onnx)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
