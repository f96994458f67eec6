"""What `tune` costs and finds, on the bundled digits at 28x28 (no network), written to results/tune_bench.md.

1. Architecture search under S1's budgets: `tune --space arch --max-params B` for B = 722 and 7,500, then the best
   architecture and the seed's hand-designed model of the same budget (mnist-722, mnist-7498) each trained with
   several seeds for the same epochs and scored once on the test split (mean ± std).
2. Per-trial overhead: a trial's wall time minus its training epochs' seconds (preparing, probing, building, writing).
3. Trial pruning: the same 40-trial study with `--pruner none` and `--pruner median`: epochs trained, wall time and the
   best validation accuracy each reached.

    .venv/bin/python benchmarks/tune_bench.py            # everything, about 15 minutes on 2 CPU cores
    .venv/bin/python benchmarks/tune_bench.py --quick    # fewer trials, epochs and seeds, a few minutes

Run it on a quiet machine: it measures wall time.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cnnbench.evaluate.evaluation import evaluate_run  # noqa: E402
from cnnbench.spec.run import resolve  # noqa: E402
from cnnbench.core.storage import write_text_atomic  # noqa: E402
from cnnbench.runs.kinds import run  # noqa: E402
from cnnbench.search import TuneOptions, load_space, parse_space, tune  # noqa: E402

SEEDS_MODELS = {722: "mnist-722", 7500: "mnist-7498"}


def base(root: Path, epochs: int, **values):
    return resolve({"data.size": 28, "data.root": root, "train.epochs": epochs, "train.batch_size": 128,
                    "train.lr": 3e-3, **values})  # fmt: skip


def test_accuracy(spec, out: Path, seeds: int) -> list[float]:
    scores = []
    for seed in range(seeds):
        result = run(spec.with_values({"train.seed": seed}), out=out)
        scores.append(evaluate_run(result.run.path, split="test")["accuracy"])
    return scores


def architecture_search(root: Path, work: Path, trials: int, epochs: int, seeds: int) -> list[str]:
    _, space = load_space("arch")
    lines = ["| budget | model | parameters | MACs | test accuracy (mean ± std) |", "|---:|---|---:|---:|---|"]
    for budget, seed_model in SEEDS_MODELS.items():
        options = TuneOptions(study=f"arch-{budget}", folder=work / f"arch-{budget}", n_trials=trials,
                              max_params=budget, sampler="tpe")  # fmt: skip
        summary = tune(base(root, epochs, **{"model.name": "arch"}), "arch", space, options, log=print)
        best = base(root, epochs).with_values({k: v for k, v in _flat(summary["best"]["spec"]).items()
                                               if k.startswith("model.")})  # fmt: skip
        for name, spec in ((f"arch (best of {trials} trials)", best),
                           (seed_model, base(root, epochs, **{"model.name": seed_model}))):  # fmt: skip
            scores = test_accuracy(spec, work / "final", seeds)
            counts = run(spec.with_values({"train.epochs": 1}), out=work / "count").summary["params"]
            lines.append(f"| {budget:,} | {name} | {counts['trainable']:,} | {counts['macs']:,} | "
                         f"{statistics.fmean(scores):.4f} ± {statistics.pstdev(scores):.4f} |")  # fmt: skip
            print(lines[-1], flush=True)
    return lines


def _flat(section: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in section.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def overhead_and_pruning(root: Path, work: Path, trials: int, epochs: int) -> list[str]:
    space = parse_space({"train.lr": {"float": [1e-4, 1e-1], "log": True}, "model.dropout": {"float": [0.0, 0.6]},
                         "train.batch_size": {"choices": [32, 64, 128, 256]}}, "benchmark")  # fmt: skip
    rows = []
    for pruner in ("none", "median"):
        options = TuneOptions(study=f"pruner-{pruner}", folder=work / f"pruner-{pruner}", n_trials=trials,
                              pruner=pruner, seed=7)  # fmt: skip
        started = time.perf_counter()
        summary = tune(base(root, epochs, **{"model.name": "mnist-7498"}), "lr", space, options, log=lambda m: None)
        wall = time.perf_counter() - started
        epochs_run, overheads = 0, []
        with open(options.folder / "trials.csv") as handle:
            for trial in csv.DictReader(handle):
                for path in filter(None, trial["runs"].split(" ")):
                    metrics = list(csv.DictReader(open(Path(path) / "metrics.csv")))
                    epochs_run += len(metrics)
                    if trial["duration_s"]:
                        overheads.append(float(trial["duration_s"]) - sum(float(m["seconds"]) for m in metrics))
        rows.append((pruner, epochs_run, wall, summary["best"]["value"], statistics.median(overheads)))
    lines = [f"| trial pruning | trials | epochs trained | wall s | best val_acc | per-trial overhead s (median) |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    lines += [f"| {p} | {trials} | {e} | {w:.1f} | {b:.4f} | {o:.2f} |" for p, e, w, b, o in rows]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--part", choices=("all", "arch", "pruning"), default="all")
    args = parser.parse_args()
    trials, epochs, seeds, pruning_trials = (12, 15, 2, 16) if args.quick else (40, 40, 3, 40)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        root = work / "data"
        header = (f"digits at 28x28 (1,797 images; 1,078 train / 360 val / 359 test), Adam lr 3e-3, batch 128, "
                  f"{epochs} epochs, CPU; {'quick subset' if args.quick else 'full run'}; {time.strftime('%Y-%m-%d')}")
        search = architecture_search(root, work, trials, epochs, seeds) if args.part != "pruning" else []
        pruning = overhead_and_pruning(root, work, pruning_trials, epochs) if args.part != "arch" else []
    text = "\n".join([header, "", "Architecture search (TPE) against S1's hand-designed models, same data and epochs:",
                      "", *search, "", "A 40-trial search over lr, dropout and batch size (mnist-7498), random "
                      "sampler, with and without trial pruning:", "", *pruning, ""])  # fmt: skip
    write_text_atomic(ROOT / "results" / f"tune_bench{'' if args.part == 'all' else '_' + args.part}.md", text)
    print(text)


if __name__ == "__main__":
    main()
