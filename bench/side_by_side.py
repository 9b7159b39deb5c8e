#!/usr/bin/python3
"""Side by side with PyTorch's CPU backend, in one run, same thread count: runs build/bench/conv and
build/bench/models (per-layer convolution passes; whole-model forward and forward+backward), then
times the same layers and models with PyTorch, and prints the ratio PyTorch time / our time
(> 1: we are faster). Both sides: median of 7 samples after a warm-up, a sample being back-to-back
calls lasting about 10 ms. The two sides alternate for --rounds rounds and each keeps its fastest
round, so that a slow spell of a shared machine does not fall on one side only; the table also
gives the range of the per-round ratios. Writes results/side_by_side.md (or --out).

Run from the repository root with Debian's python3 and python3-torch / python3-torchvision:

  /usr/bin/python3 bench/side_by_side.py [--threads 2] [--rounds 3] [--build build]
      [--out results/side_by_side.md]

The PyTorch models are torchvision's ResNet-18 and MobileNetV2 and the CIFAR ResNet-20 of
tools/make_golden_models.py (the definitions our golden-logit tests check against).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
from make_golden_models import torch_model  # noqa: E402


def median_time(f, samples=7):
    t0 = time.perf_counter()
    f()
    first = max(time.perf_counter() - t0, 1e-7)
    calls = min(max(int(0.01 / first), 1), 1000)
    t = []
    for _ in range(samples):
        t0 = time.perf_counter()
        for _ in range(calls):
            f()
        t.append((time.perf_counter() - t0) / calls)
    return sorted(t)[samples // 2]


def run_ours(build, name, out, threads):
    exe = os.path.join(build, "bench", name)
    if not os.access(exe, os.X_OK):
        sys.exit(f"side_by_side: {exe} not found; build it with "
                 "cmake -S . -B build -DBRECQ_BUILD_BENCH=ON && cmake --build build -j2")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    subprocess.run([exe, "--out", out], check=True, env=env, stdout=subprocess.DEVNULL)
    with open(os.path.splitext(out)[0] + ".json") as f:
        return json.load(f)


def torch_conv_times(l):
    n, c, hw, k, g = l["batch"], l["in_channels"], l["hw"], l["kernel"], l["groups"]
    x = torch.rand(n, c, hw, hw) - 0.5
    w = torch.rand(l["out_channels"], c // g, k, k) - 0.5
    b = torch.zeros(l["out_channels"])
    conv = dict(stride=l["stride"], padding=l["pad"], groups=g)
    y = F.conv2d(x, w, b, **conv)
    dy = torch.rand_like(y)

    def bwd(mask):
        return lambda: torch.ops.aten.convolution_backward(
            dy, x, w, None, [l["stride"]] * 2, [l["pad"]] * 2, [1, 1], False, [0, 0], g, mask)

    with torch.no_grad():
        return (median_time(lambda: F.conv2d(x, w, b, **conv)),
                median_time(bwd([True, False, False])), median_time(bwd([False, True, False])))


def torch_model_times(m):
    model = torch_model(m["model"], m["num_classes"])
    x = torch.rand(m["batch"], 3, m["hw"], m["hw"]) * 2 - 1
    labels = torch.arange(m["batch"]) % m["num_classes"]
    model.eval()

    def forward():
        with torch.no_grad():
            model(x)

    t_fwd = median_time(forward)
    model.train()

    def train_step():
        F.cross_entropy(model(x), labels).backward()
        model.zero_grad(set_to_none=True)

    return t_fwd, median_time(train_step)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--build", default="build")
    ap.add_argument("--out", default="results/side_by_side.md")
    a = ap.parse_args()
    if a.threads < 1:
        sys.exit(f"side_by_side: --threads expects a positive count, got {a.threads}")
    if a.rounds < 1:
        sys.exit(f"side_by_side: --rounds expects a positive count, got {a.rounds}")
    torch.set_num_threads(a.threads)
    out_dir = os.path.dirname(a.out) or "."
    os.makedirs(out_dir, exist_ok=True)

    # rounds[r] = (our conv layers, our models, PyTorch conv times, PyTorch model times)
    rounds = []
    for r in range(a.rounds):
        print(f"round {r + 1} of {a.rounds}", file=sys.stderr, flush=True)
        conv = run_ours(a.build, "conv", os.path.join(out_dir, "conv.md"), a.threads)["layers"]
        models_json = run_ours(a.build, "models", os.path.join(out_dir, "models.md"), a.threads)
        rounds.append((conv, models_json["models"], [torch_conv_times(l) for l in conv],
                       [torch_model_times(m) for m in models_json["models"]]))
    peak = models_json["peak_gflops"]

    def best(values):  # fastest round, and the range of the per-round ratios theirs / ours
        ours, theirs = min(v[0] for v in values), min(v[1] for v in values)
        ratios = [v[1] / v[0] for v in values]
        return ours, theirs, f"{min(ratios):.2f}–{max(ratios):.2f}"

    lines = [
        "# Side by side with PyTorch CPU",
        "",
        f"Command: `/usr/bin/python3 bench/side_by_side.py --threads {a.threads} --rounds {a.rounds}`. "
        f"PyTorch {torch.__version__}, {a.threads} threads on both sides, "
        f"{platform.processor() or platform.machine()}; FP32 peak {peak:.0f} GFLOP/s (threads x one "
        "core's FMA-loop rate). Each time: median of 7 samples after a warm-up, the fastest of "
        f"{a.rounds} alternating rounds. Ratio = PyTorch time / brecq time (> 1: brecq is faster); "
        "the range is that of the per-round ratios.",
        "",
        "## Whole models (random weights)",
        "",
        "| model | input | pass | brecq ms | brecq % peak | PyTorch ms | ratio | per-round range |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for i, m in enumerate(rounds[0][1]):
        shape = f"{m['batch']}x3x{m['hw']}x{m['hw']}"
        for p, (name, key) in enumerate((("forward", "forward_ms"),
                                         ("forward+backward", "forward_backward_ms"))):
            ours, theirs, spread = best([(r[1][i][key], r[3][i][p] * 1e3) for r in rounds])
            flop = m["gflop_forward"] * (1 if p == 0 else 3)
            lines.append(f"| {m['model']} | {shape} | {name} | {ours:.2f} | "
                         f"{100 * flop / (ours * 1e-3) / peak:.0f}% | {theirs:.2f} | "
                         f"{theirs / ours:.2f} | {spread} |")
    lines += ["", "## Convolution layers", "",
              "| layer | N | fwd brecq / PyTorch ms | ratio | bwd-input brecq / PyTorch ms | ratio "
              "| bwd-weight brecq / PyTorch ms | ratio |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for i, l in enumerate(rounds[0][0]):
        cells = []
        for p, key in enumerate(("forward_ms", "backward_input_ms", "backward_weight_ms")):
            ours, theirs, _ = best([(r[0][i][key], r[2][i][p] * 1e3) for r in rounds])
            cells += [f"{ours:.3f} / {theirs:.3f}", f"{theirs / ours:.2f}"]
        lines.append(f"| {l['name']} | {l['batch']} | " + " | ".join(cells) + " |")
    print("\n".join(lines), flush=True)
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"written to {a.out}")


if __name__ == "__main__":
    main()
