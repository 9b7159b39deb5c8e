#!/bin/bash
# Checks a `brecq quantize` output in ONNX Runtime against brecq, in one command:
#
#   bash tools/ort/check.sh BUILD_DIR QUANTIZED.safetensors DATA_DIR OUT_DIR [THREADS]
#
# exports OUT_DIR/<name>.onnx (QDQ form) with brecq's reference data for every image of DATA_DIR,
# runs `brecq eval --quantized` and tools/ort/run.js, and prints both top-1 figures, the share of
# identical predictions and the largest logit difference. python3-onnx's checker validates the
# file first when it is installed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
usage="usage: check.sh BUILD_DIR QUANTIZED.safetensors DATA_DIR OUT_DIR [THREADS]"
build=${1:?$usage} q=${2:?$usage} data=${3:?$usage} out=${4:?$usage}
export OMP_NUM_THREADS=${5:-2}
mkdir -p "$out"
name=$(basename "$q" .safetensors)
"$build/brecq" export --quantized "$q" --format onnx --out "$out/$name.onnx" --reference-data "$data"
for py in python3 /usr/bin/python3; do
  if "$py" -c 'import onnx' 2> /dev/null; then
    "$py" -c 'import onnx, sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True); print("checker     ok (onnx", onnx.__version__ + ")")' "$out/$name.onnx"
    break
  fi
done
"$build/brecq" eval --quantized "$q" --data "$data" | grep -E "top-1"
node "$here/run.js" --model "$out/$name.onnx" --ref "$out/$name" --threads "$OMP_NUM_THREADS"
