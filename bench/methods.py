#!/usr/bin/python3
"""The quantization methods side by side on ResNet-20 (../shared), with the same command line: FP,
data-free, calibration with an activation observer (min-max and the KL histogram), the calibration
setting `brecq tune` picks on held-out calibration images, bias correction, layer-wise AdaRound,
BRECQ (faithful defaults and the qdrop recipe) and QAT, at W8A8, W4A4 and W2A4. Every row is one
`brecq` command, timed, whose quantized file `brecq eval --quantized` scores on the 10,000 test
images. The test set is read only by `brecq eval`; no setting is chosen on it. Writes
results/methods.md, .json and .svg (top-1 per method, one group per bit-width).

Run from the repository root after `cmake -S . -B build && cmake --build build --target brecq_cli`:

  /usr/bin/python3 bench/methods.py [--brecq build/brecq] [--iters-w 20000] [--iters-a 5000]
      [--qat-epochs 8] [--tune-trials 0] [--bits W8A8,W4A4,W2A4] [--only SUBSTRING] [--work /tmp/brecq-methods]
      [--out results/methods]
"""
import argparse
import concurrent.futures
import json
import os
import re
import shlex
import subprocess
import sys
import time

SHARED = "../shared"
MODEL = ["--model", "resnet20_cifar", "--weights", f"{SHARED}/models/resnet20_cifar10.safetensors"]
CALIB = ["--calib", f"{SHARED}/data/cifar10/calib"]
TEST = f"{SHARED}/data/cifar10/test"


# QAT schedules per bit-width, chosen on held-out calibration images by bench/qat_select.py
# (results/qat_selection.md); other bit-widths run the defaults with --qat-epochs.
QAT_SCHEDULES = {"W2A4": ["--epochs", "32", "--lr", "3e-4", "--lr-steps", "1e-3"],
                 "W4A4": ["--epochs", "32", "--lr", "3e-4", "--lr-steps", "1e-2"]}


def methods(args, bits):
    """(name, brecq arguments without --out and bit-widths, or None for the FP model)."""
    qat = QAT_SCHEDULES.get(bits, ["--epochs", str(args.qat_epochs)])
    brecq_iters = ["--iters-w", str(args.iters_w), "--iters-a", str(args.iters_a)]
    return [
        ("FP32", None),
        ("data-free (min-max weights, BatchNorm ranges)", ["calibrate", "--method", "datafree"]),
        ("calibration, min-max observer", ["calibrate", "--method", "minmax"] + CALIB),
        ("calibration, KL observer", ["calibrate", "--method", "kl"] + CALIB),
        ("calibration, KL + bias correction", ["calibrate", "--method", "kl", "--bias-correction"]
         + CALIB),
        ("layer-wise AdaRound (Nagel et al. 2020)", ["quantize", "--method", "adaround"] + CALIB
         + brecq_iters),
        ("BRECQ, faithful (--recipe brecq)", ["quantize"] + CALIB + brecq_iters),
        ("BRECQ, qdrop recipe", ["quantize", "--recipe", "qdrop"] + CALIB + brecq_iters),
        ("QAT (LSQ, distillation from FP)", ["qat"] + qat + CALIB),
    ] + ([("calibration, tuned on held-out calibration images",
           ["tune", "--trials", str(args.tune_trials)] + CALIB)] if args.tune_trials else [])


def run(cmd, log):
    t0 = time.time()
    with open(log, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    seconds = time.time() - t0
    if r.returncode != 0:
        sys.exit(f"methods: {' '.join(cmd)} failed with status {r.returncode}; see {log}")
    return seconds


def top1(brecq, eval_args, log, data=TEST):
    run([brecq, "eval"] + eval_args + ["--data", data], log)
    m = re.search(r"^top-1\s+([0-9.]+) %", open(log).read(), re.M)
    if not m:
        sys.exit(f"methods: no top-1 line in {log}")
    return float(m.group(1))


def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def svg(rows, bit_configs, names):
    """Grouped bars: one group per bit-width, one bar per method, top-1 from 0 to 100 %."""
    colors = ["#444", "#bbb", "#9ecae1", "#6baed6", "#3182bd", "#08519c", "#fdae6b", "#e6550d",
              "#a63603", "#31a354"]
    w, h, left, bottom, top = 900, 420, 60, 50, 20
    group_w = (w - left - 200) / len(bit_configs)
    bar_w = group_w * 0.85 / len(names)
    y = lambda v: top + (h - top - bottom) * (1 - v / 100.0)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
           'font-size="11">', f'<rect width="{w}" height="{h}" fill="white"/>']
    for v in range(0, 101, 20):
        out.append(f'<line x1="{left}" x2="{w - 200}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v}</text>')
    out.append(f'<text x="14" y="{h / 2}" transform="rotate(-90 14 {h / 2})" text-anchor="middle">'
               'top-1 % (CIFAR-10 test)</text>')
    for g, bits in enumerate(bit_configs):
        x0 = left + g * group_w + group_w * 0.075
        for i, name in enumerate(names):
            r = next((r for r in rows if r["bits"] == bits and r["method"] == name), None)
            if r is None:
                continue
            x = x0 + i * bar_w
            out.append(f'<rect x="{x:.1f}" y="{y(r["top1"]):.1f}" width="{bar_w * 0.9:.1f}" '
                       f'height="{y(0) - y(r["top1"]):.1f}" fill="{colors[i % len(colors)]}">'
                       f'<title>{name} {bits}: {r["top1"]:.2f} %</title></rect>')
        out.append(f'<text x="{left + (g + 0.5) * group_w:.1f}" y="{h - bottom + 18}" '
                   f'text-anchor="middle">{bits}</text>')
    for i, name in enumerate(names):
        ly = top + 14 * i
        out.append(f'<rect x="{w - 192}" y="{ly}" width="10" height="10" '
                   f'fill="{colors[i % len(colors)]}"/>')
        out.append(f'<text x="{w - 178}" y="{ly + 9}">{name.split(" (")[0]}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_files(out, texts):
    """out + ext for every (ext, text), each written whole or not at all (tmp file, rename)."""
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    for ext, text in texts:
        tmp = out + ext + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, out + ext)


def write(out, md, rows, bit_configs, names):
    """The table, JSON and plot so far (after every row: a long run interrupted keeps its rows)."""
    write_files(out, ((".md", "\n".join(md) + "\n"), (".json", json.dumps(rows, indent=1) + "\n"),
                      (".svg", svg(rows, bit_configs, [n for n in names if n != "FP32"]))))


def measure(args, bits, name, cmd):
    """Runs one method at one bit-width and scores its file: the table row as a dict."""
    tag = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    log = os.path.join(args.work, f"{bits}_{tag}")
    out = log + ".safetensors"
    full = [args.brecq] + cmd[:1] + MODEL + cmd[1:] + ["--w-bits", bits[1], "--a-bits", bits[3],
                                                       "--out", out]
    if cmd[0] in ("quantize", "qat"):
        full.append("--no-progress")
    seconds = run(full, log + ".log")
    acc = top1(args.brecq, ["--quantized", out], log + ".eval.log")
    return {"method": name, "bits": bits, "top1": acc, "seconds": seconds,
            "command": " ".join(full), "shown": " ".join(cmd)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--brecq", default="build/brecq")
    p.add_argument("--iters-w", type=int, default=20000)
    p.add_argument("--iters-a", type=int, default=5000)
    p.add_argument("--qat-epochs", type=int, default=8,
                   help="QAT epochs where QAT_SCHEDULES has none")
    p.add_argument("--tune-trials", type=int, default=0,
                   help="also a `brecq tune` row with this many random trials (0: none)")
    p.add_argument("--bits", default="W8A8,W4A4,W2A4")
    p.add_argument("--only", default="", help="run only the methods whose name contains this")
    p.add_argument("--jobs", type=int, default=1,
                   help="rows run at a time (each with OMP_NUM_THREADS=1 unless it is set)")
    p.add_argument("--work", default="/tmp/brecq-methods")
    p.add_argument("--out", default="results/methods")
    args = p.parse_args()
    if not os.path.isdir(SHARED):
        sys.exit(f"methods: {SHARED} not found (run from the repository root, ../shared beside it)")
    bit_configs = args.bits.split(",")
    for b in bit_configs:
        if not re.fullmatch(r"W[2-8]A[2-8]", b):
            sys.exit(f"methods: --bits expects a list like W8A8,W4A4, got '{b}'")
    if not 1 <= args.jobs <= (os.cpu_count() or 1):
        sys.exit(f"methods: --jobs expects 1..{os.cpu_count()} (the CPUs here), got {args.jobs}")
    if args.jobs > 1:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.makedirs(args.work, exist_ok=True)
    names = [n for n, _ in methods(args, "W8A8") if args.only in n]
    head = [f"# Quantization methods on ResNet-20 (CIFAR-10, ../shared)\n",
            f"CPU: {cpu_model()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
            f"{args.jobs} row(s) at a time. "
            f"BRECQ and AdaRound: {args.iters_w} + {args.iters_a} iterations per unit; QAT: "
            f"{args.qat_epochs} epochs over the 1,024 calibration images, except "
            + ", ".join(f"{b}: `{' '.join(v)}`" for b, v in QAT_SCHEDULES.items())
            + " (chosen on held-out calibration images, results/qat_selection.md); tune: "
            f"{args.tune_trials or 'no'} trials. First and last layers at 8 bits, 8-bit input. Command: `/usr/bin/python3 "
            f"bench/methods.py {shlex.join(sys.argv[1:])}`.\n",
            "| method | bits | top-1 % | wall s | command |", "|---|---|---|---|---|"]
    rows = []  # in table order
    if "FP32" in names:
        fp = top1(args.brecq, MODEL, os.path.join(args.work, "FP32.eval.log"))
        rows.append({"method": "FP32", "bits": "FP32", "top1": fp, "seconds": 0,
                     "command": "brecq eval", "shown": "eval"})
    tasks = [(bits, name, cmd) for bits in bit_configs for name, cmd in methods(args, bits)
             if name in names and cmd is not None]
    done = {}
    wall = lambda r: "-" if r["bits"] == "FP32" else f"{r['seconds']:.0f}"

    def emit():
        ordered = rows + [done[i] for i in range(len(tasks)) if i in done]
        md = head + [f"| {r['method']} | {r['bits']} | {r['top1']:.2f} | {wall(r)} | "
                     f"`brecq {r['shown']}` |" for r in ordered]
        write(args.out, md, [{k: v for k, v in r.items() if k != "shown"} for r in ordered],
              bit_configs, names)

    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(measure, args, *t): i for i, t in enumerate(tasks)}
        for f in concurrent.futures.as_completed(futures):
            r = done[futures[f]] = f.result()
            print(f"| {r['method']} | {r['bits']} | {r['top1']:.2f} | {r['seconds']:.0f} |",
                  flush=True)
            emit()  # after every row: a long run interrupted keeps its rows
    emit()
    print(f"written to {args.out}.md, .json, .svg")


if __name__ == "__main__":
    main()
