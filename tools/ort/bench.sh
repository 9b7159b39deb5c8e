#!/bin/bash
# Side-by-side speed, one run, fixed thread count: ONNX Runtime on exported W8A8 models against
# brecq's FP32 forward pass (BatchNorm folded) and brecq's integer runtime on the same W8A8 file, ResNet-18 (224x224, batch 8, deterministic random
# weights) and ResNet-20 (32x32, batch 128, the shared CIFAR-10 weights).
#
#   bash tools/ort/bench.sh BUILD_DIR WORK_DIR [THREADS] [ROUNDS]
#
# BUILD_DIR holds brecq and brecq_onnx_tool (configured with libonnx-dev/libprotobuf-dev);
# WORK_DIR receives the weights, W8A8 models (nearest rounding, activation ranges from 64 / 32
# calibration images: speed does not depend on the rounding) and .onnx files, made once.
# Each round times every runtime once (median of 5 passes after a warm-up) in turn, so a load
# change on the machine hits all of them; the table shows each one's fastest round.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:?usage: bench.sh BUILD_DIR WORK_DIR [THREADS] [ROUNDS]}" && pwd)
work=${2:?usage: bench.sh BUILD_DIR WORK_DIR [THREADS] [ROUNDS]}
threads=${3:-2}
rounds=${4:-3}
mkdir -p "$work"
shared=$root/../shared
brecq=$build/brecq
tool=$build/brecq_onnx_tool
export OMP_NUM_THREADS=$threads

make_models() {  # name model weights calib calib_size act_images
  local name=$1 model=$2 weights=$3 calib=$4 n=$5 a=$6
  [ -f "$work/${name}_w8a8.safetensors" ] ||
    "$brecq" quantize --model "$model" --weights "$weights" --calib "$calib" --w-bits 8 \
      --a-bits 8 --iters-w 0 --iters-a 0 --calib-size "$n" --act-init-images "$a" \
      --out "$work/${name}_w8a8.safetensors" --no-progress > "$work/${name}_w8a8.log"
  [ -f "$work/${name}_fp.onnx" ] ||
    "$brecq" export --model "$model" --weights "$weights" --format onnx --out "$work/${name}_fp.onnx" > /dev/null
  [ -f "$work/${name}_w8a8.onnx" ] ||
    "$brecq" export --quantized "$work/${name}_w8a8.safetensors" --format onnx \
      --out "$work/${name}_w8a8.onnx" > /dev/null
  [ -f "$work/${name}_w8a8_inline.onnx" ] ||
    "$brecq" export --quantized "$work/${name}_w8a8.safetensors" --format onnx \
      --conv-bias inline --out "$work/${name}_w8a8_inline.onnx" > /dev/null
}

# quantize calibrates on an ImageFolder; the ImageNet sample is one flat folder.
mkdir -p "$work/imagenet_calib/all"
ln -sf "$shared"/data/imagenet-sample/*.JPEG "$work/imagenet_calib/all/"
[ -f "$work/r18.safetensors" ] || "$tool" weights --model resnet18 --seed 7 --out "$work/r18.safetensors" > /dev/null
make_models r18 resnet18 "$work/r18.safetensors" "$work/imagenet_calib" 64 32
make_models r20 resnet20_cifar "$shared/models/resnet20_cifar10.safetensors" "$shared/data/cifar10/calib" 256 64

best() {  # key value: keeps the smallest value per key in $work/best.txt
  awk -v k="$1" -v v="$2" 'BEGIN{found=0} $1==k{found=1; if (v<$2) $2=v} {print} END{if(!found) print k, v}' \
    "$work/best.txt" > "$work/best.tmp" && mv "$work/best.tmp" "$work/best.txt"
}
median() { sed -E 's/.*"median_s": ?([0-9.e-]+).*/\1/'; }
: > "$work/best.txt"
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
echo "CPU: $cpu; threads $threads; rounds $rounds; onnxruntime-node $(node -p "require('$here/node_modules/onnxruntime-node/package.json').version")"
for r in $(seq 1 "$rounds"); do
  for cfg in "r18 resnet18 8 224 $work/r18.safetensors" \
             "r20 resnet20_cifar 128 32 $shared/models/resnet20_cifar10.safetensors"; do
    set -- $cfg
    name=$1 model=$2 batch=$3 size=$4 weights=$5
    best "$name.brecq_fp32" "$("$tool" bench --model "$model" --weights "$weights" --batch "$batch" --size "$size" --rounds 5 | median)"
    best "$name.brecq_int" "$("$tool" bench --quantized "$work/${name}_w8a8.safetensors" --batch "$batch" --size "$size" --rounds 5 | median)"
    for v in fp w8a8 w8a8_inline; do
      best "$name.ort_$v" "$(node "$here/run.js" --model "$work/${name}_$v.onnx" --bench --batch "$batch" --size "$size" --rounds 5 --threads "$threads" | median)"
    done
  done
done
printf "\n| model | runtime | ms per batch (best round's median) | images/s |\n|---|---|---|---|\n"
while read -r key s; do
  name=${key%%.*} what=${key#*.}
  batch=$([ "$name" = r18 ] && echo 8 || echo 128)
  case $what in
    brecq_fp32) label="brecq FP32 forward" ;;
    brecq_int) label="brecq integer runtime, W8A8 (the same file ONNX Runtime runs exported)" ;;
    ort_fp) label="ONNX Runtime, FP32 export" ;;
    ort_w8a8) label="ONNX Runtime, W8A8 QDQ export (default: float conv bias, exact)" ;;
    ort_w8a8_inline) label="ONNX Runtime, W8A8 QDQ export --conv-bias inline (QLinearConv)" ;;
  esac
  awk -v n="$name" -v l="$label" -v s="$s" -v b="$batch" 'BEGIN{printf "| %s | %s | %.1f | %.0f |\n", (n=="r18"?"ResNet-18 224x224, batch 8":"ResNet-20 32x32, batch 128"), l, s*1000, b/s}'
done < "$work/best.txt"
