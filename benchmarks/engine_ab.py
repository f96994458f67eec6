"""Training speed of two cnnbench source trees, measured in alternation: did a change slow the engine down?

Each measurement is one `cnnbench train` process on the bundled digits (resized to the model's seed size; what is
measured is the engine's speed, not accuracy), with the format pinned (fp32, contiguous, all threads by default) so
both trees run the same kernels, and reads the run's median training images/s over its epochs. The trees run A, B,
A, B ... with a fresh run folder each time; the figure to read is the median of the per-pair ratios B/A, because this
machine's speed drifts by tens of percent over minutes and both members of a pair see the same drift.

    .venv/bin/python benchmarks/engine_ab.py --baseline /tmp/old-clone           # the working tree against a clone
    .venv/bin/python benchmarks/engine_ab.py --baseline /tmp/old --quick         # the small models only, ~3 minutes

Run it on a quiet machine (no tests or other benchmarks at the same time); the command line is the interface both
trees share, so any two versions of cnnbench can be compared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (model, image side, batch size, epochs): the seed models at their seeds' input side and batch size.
CASES = {
    "mnist-722": (28, 256, 12),
    "mnist-7498": (28, 256, 12),
    "cifar-simple": (32, 128, 8),
    "cifar-basic": (32, 128, 4),
    "catsdogs-base": (200, 64, 2),
}
QUICK = ("mnist-722", "mnist-7498", "cifar-simple")


def measure(tree: Path, model: str, data_root: Path, threads: int) -> float:
    size, batch, epochs = CASES[model]
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-c", "from cnnbench.cli import run; run()", "train", "--model", model,
                   "--dataset", "digits", "--size", str(size), "--batch-size", str(batch), "--epochs", str(epochs),
                   "--precision", "fp32", "--no-channels-last", "--threads", str(threads), "--root", str(data_root),
                   "--out", out, "--json", "--quiet"]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, cwd=out,
                              env={**os.environ, "PYTHONPATH": str(tree)})  # fmt: skip
        if done.returncode != 0:
            sys.exit(f"{tree} {model} failed:\n{done.stderr[-2000:]}")
        return float(json.loads(done.stdout.strip().splitlines()[-1])["images_per_s_median"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="the source tree to compare against (A)")
    parser.add_argument("--candidate", type=Path, default=ROOT, help="the tree under test (B); default this one")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from: {', '.join(CASES)}")
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    names = list(QUICK) if args.quick else [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    print(f"A = {args.baseline}\nB = {args.candidate}\ntraining images/s, fp32 contiguous, {args.threads} threads, "
          f"digits resized; {args.pairs} alternated pairs per model\n")  # fmt: skip
    print("| model | A img/s (median) | B img/s (median) | B / A (median of pairs) | range of pair ratios |")
    print("|---|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as data_root:
        for model in names:
            measure(args.candidate, model, Path(data_root), args.threads)  # warm-up: prepares the data, loads caches
            a, b = [], []
            for _ in range(args.pairs):
                a.append(measure(args.baseline, model, Path(data_root), args.threads))
                b.append(measure(args.candidate, model, Path(data_root), args.threads))
            ratios = [y / x for x, y in zip(a, b)]
            print(f"| {model} | {statistics.median(a):,.0f} | {statistics.median(b):,.0f} | "
                  f"{statistics.median(ratios):.2f}x | {min(ratios):.2f}x – {max(ratios):.2f}x |", flush=True)


if __name__ == "__main__":
    main()
