#!/usr/bin/python3
"""Chooses the QAT schedule per bit-width (ResNet-20, W2A4 and W4A4, ../shared) on held-out
calibration images, never on the test set: the calibration folder is split per class (every fourth
image, sorted by name, held out), each schedule of a small grid trains on the rest and is scored by
`brecq eval` on the held-out images (their folder names are their labels); the best schedule is
then trained on all 1,024 calibration images and scored once on the test set. Writes
results/qat_selection.md and .json; bench/methods.py uses the chosen schedules (QAT_SCHEDULES).

Run from the repository root after `cmake -S . -B build && cmake --build build --target brecq_cli`:

  /usr/bin/python3 bench/qat_select.py [--brecq build/brecq] [--bits W2A4,W4A4] [--jobs 2]
      [--work /tmp/brecq-qat-select] [--out results/qat_selection]
"""
import argparse
import itertools
import json
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from methods import CALIB, MODEL, cpu_model, run, top1, write_files  # noqa: E402

GRID = {"--epochs": ["8", "32"], "--lr": ["3e-5", "3e-4"], "--lr-steps": ["1e-3", "1e-2"]}


def split(calib, work):
    """train/ and heldout/ beside each other under work, class folders of symlinks."""
    parts = {name: os.path.join(work, name) for name in ("train", "heldout")}
    counts = {"train": 0, "heldout": 0}
    for cls in sorted(os.listdir(calib)):
        src = os.path.join(calib, cls)
        if not os.path.isdir(src):
            continue
        for i, f in enumerate(sorted(os.listdir(src))):
            part = "heldout" if i % 4 == 3 else "train"
            os.makedirs(os.path.join(parts[part], cls), exist_ok=True)
            dst = os.path.join(parts[part], cls, f)
            if not os.path.lexists(dst):
                os.symlink(os.path.abspath(os.path.join(src, f)), dst)
            counts[part] += 1
    return parts, counts


def select(args, bits, parts, counts):
    """The trials of one bit-width on the split, then the chosen schedule on all images."""
    flags = ["--w-bits", bits[1], "--a-bits", bits[3]]
    schedules = [list(itertools.chain(*zip(GRID, v))) for v in itertools.product(*GRID.values())]

    def trial(i, sched):
        out = os.path.join(args.work, f"{bits}_trial{i}.safetensors")
        seconds = run([args.brecq, "qat"] + MODEL + ["--calib", parts["train"], "--calib-size",
                      str(counts["train"])] + sched + flags + ["--out", out, "--no-progress"],
                      out + ".log")
        score = top1(args.brecq, ["--quantized", out], out + ".eval.log", parts["heldout"])
        print(f"  {bits} {' '.join(sched)}: held-out top-1 {score:.2f} % ({seconds:.0f} s)",
              flush=True)
        return {"schedule": " ".join(sched), "heldout_top1": score, "seconds": seconds}

    with ThreadPoolExecutor(args.jobs) as pool:
        trials = list(pool.map(trial, range(len(schedules)), schedules))
    best = max(range(len(trials)), key=lambda i: trials[i]["heldout_top1"])  # first of ties
    final = os.path.join(args.work, f"{bits}_chosen.safetensors")
    seconds = run([args.brecq, "qat"] + MODEL + CALIB + schedules[best] + flags
                  + ["--out", final, "--no-progress"], final + ".log")
    test = top1(args.brecq, ["--quantized", final], final + ".eval.log")
    return {"bits": bits, "trials": trials, "chosen": trials[best]["schedule"], "best": best,
            "test_top1": test, "seconds": seconds}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--brecq", default="build/brecq")
    p.add_argument("--bits", default="W2A4,W4A4")
    p.add_argument("--jobs", type=int, default=2, help="schedules trained at once (1 thread each)")
    p.add_argument("--work", default="/tmp/brecq-qat-select")
    p.add_argument("--out", default="results/qat_selection")
    args = p.parse_args()
    if args.jobs < 1:
        sys.exit(f"qat_select: --jobs must be at least 1, got {args.jobs}")
    bit_configs = args.bits.split(",")
    for b in bit_configs:
        if not re.fullmatch(r"W[2-8]A[2-8]", b):
            sys.exit(f"qat_select: --bits expects a list like W2A4,W4A4, got '{b}'")
    os.environ["OMP_NUM_THREADS"] = "1"
    os.makedirs(args.work, exist_ok=True)
    parts, counts = split(CALIB[1], args.work)
    md = ["# QAT schedules chosen on held-out calibration images\n",
          f"CPU: {cpu_model()}, OMP_NUM_THREADS=1, {args.jobs} trials at once. ResNet-20, "
          f"../shared calibration images split per class: {counts['train']} train, "
          f"{counts['heldout']} held out (every fourth by name). Command: `/usr/bin/python3 "
          f"bench/qat_select.py {' '.join(sys.argv[1:])}`.\n"]
    results = []
    for bits in bit_configs:
        r = select(args, bits, parts, counts)
        results.append(r)
        md += [f"## {bits}\n", "| schedule | held-out top-1 % | wall s |", "|---|---|---|"]
        md += [f"| `{t['schedule']}`{' **(chosen)**' if i == r['best'] else ''} | "
               f"{t['heldout_top1']:.2f} | {t['seconds']:.0f} |" for i, t in enumerate(r["trials"])]
        md.append(f"\nThe chosen schedule trained on all {counts['train'] + counts['heldout']} "
                  f"calibration images: **{r['test_top1']:.2f} %** top-1 on the 10,000 test "
                  f"images ({r['seconds']:.0f} s), the only test evaluation.\n")
        result = {"cpu": cpu_model(), "train_images": counts["train"],
                  "heldout_images": counts["heldout"], "bits": results}
        write_files(args.out, ((".md", "\n".join(md) + "\n"),
                               (".json", json.dumps(result, indent=1) + "\n")))
    print("\n".join(md))


if __name__ == "__main__":
    main()
