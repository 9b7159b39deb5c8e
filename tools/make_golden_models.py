#!/usr/bin/python3
"""Writes tests/data/golden_models.txt: reference logits, state-dict names/shapes and parameter
counts of torchvision's ResNet-18/50 and MobileNetV2 and of a PyTorch reference definition of the
CIFAR ResNets, for tests/nn/test_models.cpp.

No weights are stored: every tensor is filled by a generator that brecq implements identically in
C++ (brecq::nn::init_deterministic and fill_deterministic in include/brecq/nn/models.hpp):

  rng   = splitmix64 seeded with seed ^ fnv1a64(tensor name)
  u     = (rng.next_u64() >> 40) * 2**-24          (brecq::Rng::uniform)
  value = float32(lo + (hi - lo) * u)              (computed in double)

  conv / linear weight  U(-a, a), a = float32(sqrt(3 / fan_in))
  conv / linear bias    U(-0.1, 0.1)
  BN weight             U(0.5, 1.5)        BN bias      U(-0.1, 0.1)
  BN running_mean       U(-0.1, 0.1)       running_var  U(0.5, 1.5)
  input                 U(-1, 1), name "input"

The reference forward pass runs in float64. Run with Debian's python3 (torch 1.13 and
torchvision 0.14: apt-get install python3-torchvision):

  /usr/bin/python3 tools/make_golden_models.py [--out tests/data/golden_models.txt]
"""
import argparse
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

MASK64 = (1 << 64) - 1


def fnv1a64(s):
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & MASK64
    return h


def splitmix64_stream(seed, n):
    """The first n outputs of brecq::Rng(seed).next_u64(), vectorized."""
    with np.errstate(over="ignore"):
        i = np.arange(1, n + 1, dtype=np.uint64)
        z = np.uint64(seed) + i * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def deterministic_fill(shape, seed, name, lo, hi):
    n = int(np.prod(shape)) if len(shape) else 1
    u = (splitmix64_stream(seed ^ fnv1a64(name), n) >> np.uint64(40)).astype(np.float64) * 2.0**-24
    lo, hi = float(np.float32(lo)), float(np.float32(hi))
    return torch.from_numpy((lo + (hi - lo) * u).astype(np.float32).reshape(shape))


def init_deterministic(model, seed):
    filled = set()

    def put(name, tensor, lo, hi):
        tensor.data.copy_(deterministic_fill(tuple(tensor.shape), seed, name, lo, hi))
        filled.add(name)

    for mname, m in model.named_modules():
        p = mname + "."
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            a = float(np.float32(math.sqrt(3.0 / fan_in)))
            put(p + "weight", m.weight, -a, a)
            if m.bias is not None:
                put(p + "bias", m.bias, -0.1, 0.1)
        elif isinstance(m, nn.BatchNorm2d):
            put(p + "weight", m.weight, 0.5, 1.5)
            put(p + "bias", m.bias, -0.1, 0.1)
            put(p + "running_mean", m.running_mean, -0.1, 0.1)
            put(p + "running_var", m.running_var, 0.5, 1.5)
    rest = [k for k in model.state_dict() if k not in filled and not k.endswith("num_batches_tracked")]
    assert not rest, f"tensors not filled: {rest}"


# ---- CIFAR ResNet reference (akamaster/pytorch_resnet_cifar10, option A) ------------------------

class LambdaLayer(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class CifarBasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = LambdaLayer(
                lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4), "constant", 0))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth, num_classes=10, in_channels=3):
        super().__init__()
        n = (depth - 2) // 6
        self.in_planes = 16
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, n, 1)
        self.layer2 = self._make_layer(32, n, 2)
        self.layer3 = self._make_layer(64, n, 2)
        self.linear = nn.Linear(64, num_classes)

    def _make_layer(self, planes, n, stride):
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(CifarBasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, out.size()[3]).flatten(1)
        return self.linear(out)


# ---- the models, keyed by brecq's registry name and options -------------------------------------

def torch_model(name, num_classes, in_channels=3, width_mult=1.0, small_input_stem=False):
    tv = torchvision.models
    if name in ("resnet18", "resnet34", "resnet50", "resnet18_cifar"):
        m = getattr(tv, name.replace("_cifar", ""))(num_classes=num_classes)
        if small_input_stem or name == "resnet18_cifar":
            m.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
            m.maxpool = nn.Identity()
        elif in_channels != 3:
            m.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        return m
    if name == "mobilenet_v2":
        m = tv.mobilenet_v2(num_classes=num_classes, width_mult=width_mult)
        if in_channels != 3:
            c = m.features[0][0]
            m.features[0][0] = nn.Conv2d(in_channels, c.out_channels, 3, 2, 1, bias=False)
        return m
    if name.endswith("_cifar"):
        return CifarResNet(int(name[len("resnet"):-len("_cifar")]), num_classes, in_channels)
    raise ValueError(name)


# (name, num_classes, in_channels, width_mult, small_input_stem)
COUNTS = [
    ("resnet18", 1000, 3, 1.0, False),
    ("resnet34", 1000, 3, 1.0, False),
    ("resnet50", 1000, 3, 1.0, False),
    ("resnet18", 10, 1, 1.0, True),
    ("resnet18_cifar", 10, 3, 1.0, False),
    ("resnet18_cifar", 100, 3, 1.0, False),
    ("mobilenet_v2", 1000, 3, 1.0, False),
    ("mobilenet_v2", 1000, 3, 0.5, False),
    ("mobilenet_v2", 1000, 3, 0.75, False),
    ("mobilenet_v2", 1000, 3, 1.4, False),
    ("mobilenet_v2", 10, 1, 0.35, False),
    ("resnet20_cifar", 10, 3, 1.0, False),
    ("resnet32_cifar", 10, 3, 1.0, False),
    ("resnet44_cifar", 10, 3, 1.0, False),
    ("resnet56_cifar", 10, 3, 1.0, False),
    ("resnet20_cifar", 10, 1, 1.0, False),
]

# (name, num_classes, seed, input shape)
GOLDENS = [
    ("resnet18", 10, 18, (2, 3, 64, 64)),
    ("resnet50", 10, 50, (2, 3, 64, 64)),
    ("mobilenet_v2", 10, 2, (2, 3, 96, 96)),
    ("resnet18_cifar", 10, 1832, (2, 3, 16, 16)),
    ("resnet20_cifar", 10, 20, (2, 3, 32, 32)),
]


def dims(shape):
    return ",".join(str(d) for d in shape) if len(shape) else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "data", "golden_models.txt"))
    args = ap.parse_args()
    torch.set_grad_enabled(False)

    lines = [
        "# Golden data for tests/nn/test_models.cpp, written by tools/make_golden_models.py",
        f"# (torch {torch.__version__}, torchvision {torchvision.__version__}). Do not edit by hand.",
        "# count <model> <num_classes> <in_channels> <width_mult> <small_input_stem> <parameters>",
        "# golden <model> <num_classes> <seed> <input N,C,H,W>, then one 'state <name> <shape>' per",
        "#   state-dict entry (num_batches_tracked aside), 'logits <N,K>' and N*K values (float64",
        "#   forward pass on init_deterministic(seed) weights and a U(-1, 1) 'input'), 'end'.",
    ]
    for name, k, c, w, small in COUNTS:
        m = torch_model(name, k, c, w, small)
        n = sum(p.numel() for p in m.parameters())
        lines.append(f"count {name} {k} {c} {w:g} {int(small)} {n}")
        print(f"{name:16s} classes={k:<5d} in={c} width={w:<5g} small_stem={int(small)} params={n:,}")

    for name, k, seed, shape in GOLDENS:
        m = torch_model(name, k)
        init_deterministic(m, seed)
        m = m.double().eval()
        x = deterministic_fill(shape, seed, "input", -1.0, 1.0).double()
        y = m(x)
        print(f"{name:16s} logits {tuple(y.shape)}: max |y| {y.abs().max():.4g}, "
              f"std over classes {y.std(dim=1).mean():.4g}, std over batch {y.std(dim=0).mean():.4g}")
        lines.append(f"golden {name} {k} {seed} {dims(shape)}")
        for key, t in m.state_dict().items():
            if not key.endswith("num_batches_tracked"):
                lines.append(f"state {key} {dims(t.shape)}")
        lines.append(f"logits {dims(y.shape)}")
        for row in y.tolist():
            lines.append(" ".join(f"{v:.17g}" for v in row))
        lines.append("end")

    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
