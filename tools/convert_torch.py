#!/usr/bin/python3
"""Converts a PyTorch checkpoint or state_dict to a safetensors file that brecq loads by
state-dict name (brecq::nn::load_weights).

Accepts a file saved with torch.save holding a state_dict, a whole nn.Module, or a dict with the
state_dict under "state_dict", "model_state_dict", "model" or "net" (training checkpoints); strips
the "module." prefix DataParallel adds. Floating-point tensors are written as F32 (or F16/BF16
with --dtype), integer ones (BatchNorm's num_batches_tracked) as I64. The file is written with
struct + json, without the safetensors package.

With --arch, the names and shapes are checked against brecq's architecture of that name,
reproduced in PyTorch: torchvision resnet18/34/50 and mobilenet_v2, resnet18_cifar (3x3 stem, no
max-pool) and the He et al. CIFAR ResNets resnet20/32/44/56_cifar (akamaster's layout).

  /usr/bin/python3 tools/convert_torch.py resnet20-12fca82f.th resnet20_cifar10.safetensors \\
      --arch resnet20_cifar
  /usr/bin/python3 tools/convert_torch.py --torchvision resnet18 resnet18.safetensors
      (torchvision's pretrained weights; needs them in the torch hub cache or network access)

Needs python3-torch (python3-torchvision for --arch with torchvision models and --torchvision).
"""
import argparse
import json
import os
import struct
import sys

import torch

DTYPES = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}


def extract_state_dict(obj, source):
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model", "net"):
            if key in obj and isinstance(obj[key], (dict, torch.nn.Module)):
                return extract_state_dict(obj[key], source)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    sys.exit(f"{source}: no state_dict found (got {type(obj).__name__}"
             + (f" with keys {sorted(obj)[:10]}" if isinstance(obj, dict) else "") + ")")


def strip_prefix(sd, prefix="module."):
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return dict(sd)


def convert(sd, float_dtype):
    out = {}
    for name, t in sd.items():
        t = t.detach().cpu()
        if t.is_floating_point():
            t = t.to(float_dtype)
        out[name] = t.contiguous()
    return out


def save_safetensors(path, tensors, metadata=None):
    """safetensors layout: u64 little-endian header size, JSON header, packed data."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name in sorted(tensors):
        t = tensors[name]
        if t.dtype not in DTYPES:
            sys.exit(f"tensor {name}: dtype {t.dtype} has no safetensors equivalent")
        if t.dtype == torch.bfloat16:
            data = t.view(torch.int16).numpy().tobytes()
        else:
            data = t.numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def reference_model(arch, num_classes):
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    import make_golden_models  # the PyTorch definitions used for brecq's golden tests
    return make_golden_models.torch_model(arch, num_classes)


def check_against(arch, sd):
    head = {"mobilenet_v2": "classifier.1.weight"}.get(
        arch, "linear.weight" if arch.endswith("_cifar") and arch != "resnet18_cifar" else "fc.weight")
    if head not in sd:
        sys.exit(f"--arch {arch}: the checkpoint has no classifier tensor '{head}'")
    ref = reference_model(arch, sd[head].shape[0]).state_dict()
    problems = []
    for k, v in ref.items():
        if k not in sd:
            problems.append(f"missing: {k} {list(v.shape)}")
        elif tuple(sd[k].shape) != tuple(v.shape):
            problems.append(f"wrong shape: {k} expected {list(v.shape)}, got {list(sd[k].shape)}")
    problems += [f"unexpected: {k} {list(sd[k].shape)}" for k in sd if k not in ref]
    if problems:
        sys.exit(f"--arch {arch}: the checkpoint does not match:\n  " + "\n  ".join(problems))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input", nargs="?", help="checkpoint saved with torch.save")
    ap.add_argument("output", help="safetensors file to write")
    ap.add_argument("--torchvision", metavar="NAME",
                    help="convert torchvision's pretrained NAME (resnet18, resnet50, mobilenet_v2...) "
                         "instead of an input file")
    ap.add_argument("--arch", help="check names and shapes against this brecq architecture")
    ap.add_argument("--dtype", choices=["f32", "f16", "bf16"], default="f32",
                    help="storage of floating-point tensors (default f32)")
    args = ap.parse_args()

    if args.torchvision:
        import torchvision
        model = torchvision.models.get_model(args.torchvision, weights="DEFAULT")
        sd, source = model.state_dict(), f"torchvision {args.torchvision}"
        args.arch = args.arch or args.torchvision
    else:
        if not args.input:
            ap.error("give an input checkpoint or --torchvision NAME")
        obj = torch.load(args.input, map_location="cpu")
        sd, source = extract_state_dict(obj, args.input), os.path.basename(args.input)
    sd = strip_prefix(sd)
    if args.arch:
        check_against(args.arch, sd)
    dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    tensors = convert(sd, dtype)
    save_safetensors(args.output, tensors, {"source": source, "converted_by": "brecq tools/convert_torch.py"})
    n = sum(t.numel() for t in tensors.values())
    print(f"wrote {args.output}: {len(tensors)} tensors, {n:,} values")


if __name__ == "__main__":
    main()
