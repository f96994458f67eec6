"""cnnbench against Keras on the same CPU, measured in alternation so that both see the same machine.

    make bench-keras KERAS_PYTHON=keras-env/bin/python            # every seed scratch model, 3 pairs each
    make bench-keras-quick KERAS_PYTHON=keras-env/bin/python      # mnist-722, mnist-7498, cifar-simple, 2 pairs
    .venv/bin/python benchmarks/against_keras.py --keras-python keras-env/bin/python --cases mnist-7498 --repeats 5

The Keras side is `../shared/bench/keras_peer.py` (`--peer` moves it), run with a Python that has `tensorflow-cpu`
(`python3 -m venv keras-env && keras-env/bin/pip install tensorflow-cpu`; it is not a cnnbench dependency). The
cnnbench side is `train_speed.py`'s engine measurement of the same model, input shape and batch size. Each measurement
runs in its own process; the two frameworks take turns (which goes first alternates), and every pair gives a ratio.
On a shared 2-core virtual machine a model's speed drifts by tens of percent over minutes, so the figure to read is
the median of the per-pair ratios, not a ratio of figures taken at different times.

Writes results/keras.csv (every measurement) and results/keras.md (medians per model).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path

from train_speed import CASES, ROOT, measure_in_process, write_csv

KERAS_MODELS = ["mnist-722", "mnist-7498", "cifar-simple", "cifar-basic", "catsdogs-base", "catsdogs-deep"]
QUICK = ["mnist-722", "mnist-7498", "cifar-simple"]  # the S1 models and the smallest CIFAR one: minutes, not an hour


def measure_keras(python: Path, peer: Path, model: str) -> dict:
    done = subprocess.run([str(python), str(peer), model, "--json"], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"keras peer failed for {model}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description="cnnbench vs Keras training speed, measured in alternation")
    parser.add_argument("--keras-python", type=Path, required=True, help="a Python with tensorflow-cpu installed")
    parser.add_argument("--peer", type=Path, default=ROOT.parent / "shared" / "bench" / "keras_peer.py")
    parser.add_argument("--cases", default=",".join(KERAS_MODELS), help=f"comma-separated, from: {', '.join(KERAS_MODELS)}")
    parser.add_argument("--repeats", type=int, default=None, help="pairs of measurements per model (3; --quick: 2)")
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}, two pairs each (3 "
                        "minutes on a slow 2-core day, against 10.5 for the four small models with three pairs)")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    names = list(QUICK) if args.quick else [c.strip() for c in args.cases.split(",") if c.strip()]
    args.repeats = args.repeats if args.repeats is not None else 2 if args.quick else 3
    unknown = [c for c in names if c not in KERAS_MODELS]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(KERAS_MODELS)}")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    for path, what in ((args.keras_python, "--keras-python"), (args.peer, "--peer")):
        if not path.exists():
            parser.error(f"{what} {path} does not exist")
    rows = []
    for name in names:
        for pair in range(args.repeats):
            measured = {}
            for side in (("keras", "cnnbench") if pair % 2 == 0 else ("cnnbench", "keras")):
                if side == "keras":
                    measured[side] = measure_keras(args.keras_python, args.peer, name)
                else:
                    measured[side] = measure_in_process(name, "cnnbench", "cpu")
            keras_rate = measured["keras"]["train_images_per_s"]
            ours = measured["cnnbench"]["train_images_per_s"]
            rows.append({"model": name, "pair": pair + 1, "batch_size": CASES[name].batch_size,
                         "keras_images_per_s": keras_rate, "cnnbench_images_per_s": ours,
                         "ratio": round(ours / keras_rate, 3), "keras": measured["keras"]["framework"],
                         "cnnbench_format": f"{measured['cnnbench']['precision']}, "
                                            f"{'channels_last' if measured['cnnbench']['channels_last'] else 'contiguous'}, "
                                            f"{measured['cnnbench']['threads']} threads",
                         "data": "synthetic"})  # fmt: skip
            print(f"{name:<14} pair {pair + 1}: keras {keras_rate:>9,.1f}  cnnbench {ours:>9,.1f} img/s  "
                  f"ratio {ours / keras_rate:.2f}", flush=True)
    write(rows, args.out)


def write(rows: list[dict], out: Path) -> None:
    import torch

    from cnnbench.core.storage import write_text_atomic

    write_csv(rows, out / "keras.csv")
    lines = [
        f"Synthetic data of each seed's shape; {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, {rows[0]['keras']}; {time.strftime('%Y-%m-%d')}. "
        "Training images/s; the two frameworks measured in alternation, one process per measurement.",
        "",
        "| model | batch | pairs | Keras img/s (median) | cnnbench img/s (median) | cnnbench / Keras (median of pairs) "
        "| range of pair ratios |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        ratios = [r["ratio"] for r in mine]
        lines.append(f"| {name} | {mine[0]['batch_size']} | {len(mine)} "
                     f"| {statistics.median(r['keras_images_per_s'] for r in mine):,.1f} "
                     f"| {statistics.median(r['cnnbench_images_per_s'] for r in mine):,.1f} "
                     f"| {statistics.median(ratios):.2f}x | {min(ratios):.2f}x – {max(ratios):.2f}x |")  # fmt: skip
    write_text_atomic(out / "keras.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
