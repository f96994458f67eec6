"""What `tune` costs and finds, on the bundled digits at 28x28 or the generated shapes-small at 32x32 (no network),
written to results/tune_bench.md.

1. Search under S1's budgets against the seed's hand designs: `tune --space arch-recipe --max-params B` (or
   `--space arch`) for B = 722 and 7,500, TPE with hyperband trial pruning; then the best configuration (its
   architecture and, with arch-recipe, its training recipe) and the seed's hand-designed model of the same budget
   (mnist-722, mnist-7498, with S1's recipe) are each trained for S1's 100 epochs with 5 seeds and scored once on the
   test split: mean ± std, parameters, MACs, seconds per epoch, and the margin in standard deviations.
2. Per-trial overhead: a trial's wall time minus its training epochs' seconds (preparing, probing, building, writing).
3. Trial pruning: the same 40-trial study with `--pruner none` and `--pruner median`: epochs trained, wall time and the
   best validation accuracy each reached.

    .venv/bin/python benchmarks/tune_bench.py --part arch       # the search against the hand designs, ~15 minutes
    .venv/bin/python benchmarks/tune_bench.py --part arch --dataset shapes-small   # the same on colour shapes
    .venv/bin/python benchmarks/tune_bench.py --quick           # fewer trials, epochs and seeds, a few minutes
    .venv/bin/python benchmarks/tune_bench.py --smoke           # one-epoch trials: checks that it runs

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
from cnnbench.spec.run import RunSpec, resolve  # noqa: E402
from cnnbench.core.storage import write_text_atomic  # noqa: E402
from cnnbench.runs.kinds import run  # noqa: E402
from cnnbench.search import TuneOptions, load_space, parse_space, tune  # noqa: E402

SEEDS_MODELS = {722: "mnist-722", 7500: "mnist-7498"}
# S1's recipe for the hand-designed models (cnnbench/studies/s1.toml): Adam 1e-3, batch 256, no augmentation.
S1_RECIPE = {"train.optimizer": "adam", "train.lr": 1e-3, "train.batch_size": 256, "train.augment": "none"}


# The datasets it runs on: input side, and how the report's header describes them.
DATASETS = {"digits": (28, "digits at 28x28 (1,797 images; 1,078 train / 360 val / 359 test)"),
            "shapes-small": (32, "shapes-small at 32x32 (2,000 generated colour images of ten shape kinds; 1,400 "
                                 "train / 300 val / 300 test)")}  # fmt: skip


def base(root: Path, epochs: int, dataset: str = "digits", **values):
    return resolve({"data.dataset": dataset, "data.size": DATASETS[dataset][0], "data.root": root,
                    "train.epochs": epochs, "train.batch_size": 128, "train.lr": 3e-3, **values})  # fmt: skip


def test_runs(spec, out: Path, seeds: int) -> list[dict]:
    """Train `spec` with seeds 0..seeds-1; each run's test accuracy, parameters, MACs and seconds per epoch."""
    rows = []
    for seed in range(seeds):
        result = run(spec.with_values({"train.seed": seed}), out=out)
        rows.append({"accuracy": evaluate_run(result.run.path, split="test")["accuracy"],
                     "params": result.summary["params"]["trainable"], "macs": result.summary["params"]["macs"],
                     "seconds_per_epoch": result.summary["seconds_per_epoch_median"]})  # fmt: skip
    return rows


def architecture_search(root: Path, work: Path, space_name: str, trials: int, epochs: int, final_epochs: int,
                        seeds: int, dataset: str = "digits") -> list[str]:  # fmt: skip
    """Search each S1 budget, then train the best configuration (its architecture and, with arch-recipe, its
    recipe) and the seed's hand design (with S1's recipe) for `final_epochs` with the same seeds, scored once on
    test. The verdict asks for a margin of more than two standard deviations (the larger of the two groups')."""
    _, space = load_space(space_name)
    lines = ["| budget | model | parameters | MACs | s/epoch | test accuracy (mean ± std) | margin / std |",
             "|---:|---|---:|---:|---:|---|---|"]  # fmt: skip
    for budget, seed_model in SEEDS_MODELS.items():
        options = TuneOptions(study=f"{space_name}-{budget}", folder=work / f"{space_name}-{budget}",
                              n_trials=trials, max_params=budget, sampler="tpe", pruner="hyperband")  # fmt: skip
        summary = tune(base(root, epochs, dataset, **{"model.name": "arch"}), space_name, space, options)
        best = RunSpec.from_dict(summary["best"]["spec"]).with_values({"train.epochs": final_epochs})
        hand = base(root, final_epochs, dataset, **{"model.name": seed_model, **S1_RECIPE})
        found, seeded = test_runs(best, work / "final", seeds), test_runs(hand, work / "final", seeds)
        mean = {name: statistics.fmean(r["accuracy"] for r in rows) for name, rows in (("s", found), ("h", seeded))}
        std = {name: statistics.stdev(r["accuracy"] for r in rows) if seeds > 1 else 0.0
               for name, rows in (("s", found), ("h", seeded))}  # fmt: skip
        spread = max(std.values())
        margin = f"{(mean['s'] - mean['h']) / spread:+.1f}" if spread else "n/a (one seed)"
        for name, rows, key in ((f"{space_name} (best of {trials} trials)", found, "s"), (seed_model, seeded, "h")):
            lines.append(f"| {budget:,} | {name} | {rows[0]['params']:,} | {rows[0]['macs']:,} | "
                         f"{statistics.median(r['seconds_per_epoch'] for r in rows):.2f} | {mean[key]:.4f} ± "
                         f"{std[key]:.4f} | {margin if key == 's' else ''} |")  # fmt: skip
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


def overhead_and_pruning(root: Path, work: Path, trials: int, epochs: int, seeds: int,
                         dataset: str = "digits") -> list[str]:  # fmt: skip
    """The same random search with and without the median pruner (its default warm-up), once per sampler seed: the
    epochs each trained, its wall time and the best validation accuracy it reached; and the per-trial overhead."""
    space = parse_space({"train.lr": {"float": [1e-4, 1e-1], "log": True}, "model.dropout": {"float": [0.0, 0.6]},
                         "train.batch_size": {"choices": [32, 64, 128, 256]}}, "benchmark")  # fmt: skip
    rows = []
    for seed in range(7, 7 + seeds):
        for pruner in ("none", "median"):
            options = TuneOptions(study=f"pruner-{pruner}-{seed}", folder=work / f"pruner-{pruner}-{seed}",
                                  n_trials=trials, pruner=pruner, seed=seed)  # fmt: skip
            started = time.perf_counter()
            summary = tune(base(root, epochs, dataset, **{"model.name": "mnist-7498"}), "lr", space, options)
            wall = time.perf_counter() - started
            epochs_run, overheads = 0, []
            with open(options.folder / "trials.csv") as handle:
                for trial in csv.DictReader(handle):
                    for path in filter(None, trial["runs"].split(" ")):
                        metrics = list(csv.DictReader(open(Path(path) / "metrics.csv")))
                        epochs_run += len(metrics)
                        if trial["duration_s"]:
                            overheads.append(float(trial["duration_s"]) - sum(float(m["seconds"]) for m in metrics))
            rows.append((seed, pruner, epochs_run, wall, summary["best"]["value"], statistics.median(overheads)))
            print(f"sampler seed {seed}, pruner {pruner}: {epochs_run} epochs, {wall:.1f} s, best "
                  f"{summary['best']['value']:.4f}", flush=True)
    lines = ["| sampler seed | trial pruning | trials | epochs trained | wall s | best val_acc | per-trial overhead s "
             "(median) |", "|---:|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    lines += [f"| {s} | {p} | {trials} | {e} | {w:.1f} | {b:.4f} | {o:.2f} |" for s, p, e, w, b, o in rows]
    if seeds > 1:
        for pruner in ("none", "median"):
            mine = [r for r in rows if r[1] == pruner]
            lines.append(f"| median | {pruner} | {trials} | {statistics.median(r[2] for r in mine):.0f} | "
                         f"{statistics.median(r[3] for r in mine):.1f} | {statistics.median(r[4] for r in mine):.4f} | "
                         f"{statistics.median(r[5] for r in mine):.2f} |")  # fmt: skip
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials, epochs and seeds: a few minutes")
    parser.add_argument("--smoke", action="store_true", help="one trial of one epoch: checks that it runs")
    parser.add_argument("--part", choices=("all", "arch", "pruning"), default="all")
    parser.add_argument("--space", choices=("arch", "arch-recipe"), default="arch-recipe")
    parser.add_argument("--dataset", choices=tuple(DATASETS), default="digits")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    # trials, search epochs, final epochs (S1's 100), seeds, trials of the pruning comparison
    trials, epochs, final, seeds, pruning_trials = ((2, 1, 1, 1, 2) if args.smoke else (12, 10, 30, 3, 16)
                                                    if args.quick else (40, 20, 100, 5, 40))  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        root = work / "data"
        scale = "smoke run" if args.smoke else "quick subset" if args.quick else "full run"
        header = f"{DATASETS[args.dataset][1]}, CPU; {scale}; {time.strftime('%Y-%m-%d')}"
        search = (architecture_search(root, work, args.space, trials, epochs, final, seeds, args.dataset)
                  if args.part != "pruning" else [])  # fmt: skip
        pruning = overhead_and_pruning(root, work, pruning_trials, epochs, 1 if args.smoke else 3, args.dataset) \
            if args.part != "arch" else []  # fmt: skip
    text = "\n".join([header, "", f"`tune --space {args.space}` (TPE, hyperband trial pruning, {trials} trials of "
                      f"{epochs} epochs) under each S1 budget; the best configuration and the seed's hand design "
                      f"(S1's recipe: Adam 1e-3, batch 256) then trained for {final} epochs with {seeds} seed(s), "
                      "test split:", "", *search, "", f"A {pruning_trials}-trial search of {epochs} epochs per "
                      "trial over lr, dropout and batch size (mnist-7498), random sampler, with and without the median "
                      "pruner (default warm-up), per sampler seed:", "",
                      *pruning, ""])  # fmt: skip
    suffix = ("" if args.part == "all" else "_" + args.part) + ("" if args.dataset == "digits" else "_" + args.dataset)
    write_text_atomic(args.out / f"tune_bench{suffix}.md", text)
    print(text)


if __name__ == "__main__":
    main()
