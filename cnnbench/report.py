"""Gather run directories into one table: `report` only reads what other commands wrote, and never writes into a run.

One row per run: its configuration (model, data, optimiser), its training outcome at the best epoch (summary.json),
and every evaluation it has (eval/<split>.json, as <split>_accuracy, <split>_loss, ...). Interrupted, failed and
incomplete runs are rows too, with their status, so a table never silently drops a run. A run with a damaged file
(a truncated config.json, summary.json, metrics.csv or evaluation) is a row with status "damaged" and the one-line
`reason`, keeping what could be read: one broken run never stops the table of the others. Runs being trained are read
as a snapshot: their files are replaced atomically, and metrics.csv's half-appended last line is left out.

With `--plots` it also compares the runs in pictures (accuracy against parameters with the Pareto front marked,
accuracy against seconds per epoch, means with their standard deviation as error bars when grouped) and draws each
run's curves, and report.md embeds them with relative links, so the folder reads as a page on a code-hosting site.
Damaged runs are left out of every picture: their figures may be partial or wrong.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

from cnnbench.core.errors import UsageError
from cnnbench.core.storage import write_text_atomic
from cnnbench.runs.record import RunConfig, RunSummary
from cnnbench.runs.rundir import IN_EVERY_CONFIG, DamagedRun, RunDir, find_runs, unwritable_as_usage_error

# The seeds' tables: epochs, batch size, model, dropout, lr, loss, accuracy, val loss, val accuracy, test accuracy,
# params, seconds per epoch, size MB.
DEFAULT_COLUMNS = ["run", "status", "model", "dataset", "epochs", "batch_size", "dropout", "lr", "loss", "accuracy",
                   "val_loss", "val_accuracy", "test_accuracy", "params", "seconds_per_epoch", "size_mb"]  # fmt: skip
EVAL_KEYS = ("accuracy", "loss", "top5_accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_weighted",
             "recall_weighted", "f1_weighted", "roc_auc", "ece", "mce", "brier", "temperature", "ece_scaled",
             "brier_scaled")  # fmt: skip


def run_row(run: RunDir) -> dict[str, Any]:
    """One run's row; a damaged file makes it a "damaged" row with the reason, holding whatever else could be read."""
    try:
        config = run.read_config(require=IN_EVERY_CONFIG)
    except DamagedRun as damage:
        return {"run": run.name, "status": "damaged", "reason": str(damage), "path": str(run.path)}
    damages: list[DamagedRun] = []

    def read(reader, default):
        try:
            return reader()
        except DamagedRun as damage:
            damages.append(damage)
            return default

    summary = read(run.read_summary, None) or RunSummary(status="incomplete")
    metrics, evaluations = read(run.metrics, []), read(run.evaluations, {})
    try:
        row = _row(run, config, summary, metrics, evaluations)
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        # A value of an unexpected type inside a file that parsed (a hand edit, another tool's file): the row says so
        # rather than ending the report of every other run.
        return {"run": run.name, "status": "damaged", "path": str(run.path),
                "reason": f"{run.path}: config.json or summary.json holds a value of an unexpected type "
                          f"({type(error).__name__}: {error}); restore the file from a copy, or train the run again"}
    if damages:
        row.update(status="damaged", reason=str(damages[0]))
    return row


def _row(run: RunDir, config: RunConfig, summary: RunSummary, metrics: list[dict[str, float]],
         evaluations: dict[str, dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    train, model = config.train, config.model
    params = summary.params or config.params
    best = summary.best
    finetune = config.finetune or {}
    head = finetune.get("head") or {}
    row: dict[str, Any] = {
        "run": run.name,
        "status": summary.status,
        "reason": summary.reason or summary.error,  # why a run stopped: diverged, pruned, failed
        "kind": config.kind,
        "model": model.get("name", train.get("model")),
        "dataset": config.data.get("dataset"),
        "seed": train.get("seed"),
        "epochs": summary.epochs_completed if summary.epochs_completed is not None else len(metrics),
        "best_epoch": summary.best_epoch,
        "batch_size": train.get("batch_size"),
        "optimizer": train.get("optimizer"),
        "lr": train.get("lr"),
        "dropout": model.get("options", {}).get("dropout", head.get("dropout")),
        "backbone": finetune.get("backbone"),
        "weights": (finetune.get("weights") or {}).get("source"),
        "head": head.get("kind"),
        "units": ",".join(map(str, head["widths"])) if head.get("widths") else None,
        "pool": head.get("pool"),
        "activation": head.get("activation"),
        "freeze": finetune.get("freeze"),
        "parent": config.parent,
        "augment": train.get("augment"),
        "loss": best.get("train_loss"),
        "accuracy": best.get("train_acc"),
        "val_loss": best.get("val_loss"),
        "val_accuracy": best.get("val_acc"),
        "params": params.get("trainable"),
        "frozen_params": params.get("frozen"),
        "keras_params": params.get("keras_total"),
        "macs": params.get("macs"),
        "size_mb": params.get("size_mb"),
        "seconds_per_epoch": summary.seconds_per_epoch_median,
        "images_per_s": summary.images_per_s_median,
        "device": config.device.get("type"),
        "synthetic_data": config.prepared.get("synthetic", False),
        "path": str(run.path),
    }
    # Every option of the run's specification under its dotted name (train.lr, model.head.units, data.size), so a
    # table can show whatever a search varied; runs from before specifications have none of these columns.
    row.update({name: value for name, value in _dotted(config.spec or {}) if name not in row})
    # A pruned run's honest figures (pruning.py writes prune.json after measuring): nonzero parameters, sparsity,
    # MACs of the nonzero weights, compressed size and latency; its params columns would otherwise read as dense.
    pruning = config.pruning or {}
    row.update({"pruning.method": pruning.get("method"), "pruning.amount": pruning.get("amount")})
    measured = _optional_json(run.path / "prune.json")
    for key in PRUNE_MEASURED:
        row[key] = measured.get(key)
    for split, result in evaluations.items():
        for key in EVAL_KEYS:
            if key in result:
                row[f"{split}_{key}"] = result[key]
    return row


# What the prune step measures of a model (prune.json holds a child's; its report a parent's too).
PRUNE_MEASURED = ("nonzero_params", "sparsity", "macs_nonzero", "checkpoint_gzip_bytes", "latency_ms_b1",
                  "latency_ms_b64", "csr_latency_ms_b1", "csr_latency_ms_b64")


def _optional_json(path: Path) -> dict[str, Any]:
    """A file some runs have (prune.json); {} when absent or unreadable (a report never fails because of one run)."""
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _dotted(section: dict[str, Any], prefix: str = ""):
    for key, value in section.items():
        if isinstance(value, dict):
            yield from _dotted(value, f"{prefix}{key}.")
        else:
            yield prefix + key, ",".join(map(str, value)) if isinstance(value, list) else value


def collect(paths: list[Path]) -> pd.DataFrame:
    runs = find_runs(paths)
    if not runs:
        raise UsageError(f"no run directories found under {', '.join(map(str, paths))}; train one with cnnbench train")
    frame = pd.DataFrame([run_row(run) for run in runs])
    for column in [*DEFAULT_COLUMNS, "reason"]:  # a table over runs never evaluated still has the seeds' columns
        if column not in frame:
            frame[column] = math.nan
    return frame


def damaged_runs(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"] == "damaged"]


def plottable_runs(frame: pd.DataFrame) -> list[RunDir]:
    """The runs of the table whose files could all be read: a damaged run's curves would be partial or wrong."""
    return [RunDir(Path(path)) for path, status in zip(frame["path"], frame["status"]) if status != "damaged"]


def parse_columns(text: str | None, frame: pd.DataFrame) -> list[str]:
    if not text:
        # A damaged row says nothing but its status without its reason, so the default table shows why.
        return [*DEFAULT_COLUMNS, "reason"] if len(damaged_runs(frame)) else list(DEFAULT_COLUMNS)
    columns = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in columns if c not in frame.columns]
    if unknown:
        raise UsageError(f"unknown --columns {', '.join(unknown)}; available: {', '.join(frame.columns)}")
    return columns


def build_table(frame: pd.DataFrame, *, columns: list[str], sort: str | None = None,
                group_by: list[str] | None = None) -> pd.DataFrame:  # fmt: skip
    """Select, group (mean and std over the other rows, e.g. seeds, with n) and sort."""
    if group_by:
        unknown = [c for c in group_by if c not in frame.columns]
        if unknown:
            raise UsageError(f"unknown --group-by {', '.join(unknown)}; available: {', '.join(frame.columns)}")
        values = [c for c in columns if c not in group_by and pd.api.types.is_numeric_dtype(frame[c])
                  and not pd.api.types.is_bool_dtype(frame[c])]  # fmt: skip
        grouped = frame.groupby(group_by, dropna=False)
        table = grouped[values].agg(["mean", "std"])
        table.columns = [f"{column}_{stat}" for column, stat in table.columns]
        table.insert(0, "n", grouped.size())
        table = table.reset_index()
    else:
        table = frame[columns].copy()
    if sort:
        descending = sort.startswith("-")
        key = sort.lstrip("-")
        if key not in table.columns and f"{key}_mean" in table.columns:
            key = f"{key}_mean"
        if key not in table.columns:
            raise UsageError(f"bad --sort {sort!r}: not a column of the table; choose from {', '.join(table.columns)}")
        table = table.sort_values(key, ascending=not descending, kind="stable", na_position="last")
    return table.reset_index(drop=True)


def to_markdown(table: pd.DataFrame) -> str:
    """Markdown with `mean ± std` cells for grouped tables and compact numbers."""
    shown = table.copy()
    for column in [c for c in table.columns if c.endswith("_mean")]:
        base = column[: -len("_mean")]
        std = table.get(f"{base}_std")
        shown[base] = [format_mean_std(m, s) for m, s in zip(table[column], std if std is not None else [math.nan] * len(table))]
        shown = shown.drop(columns=[column, f"{base}_std"], errors="ignore")
    for column in shown.columns:
        if pd.api.types.is_numeric_dtype(shown[column]) and not pd.api.types.is_bool_dtype(shown[column]):
            shown[column] = shown[column].map(format_number)
        else:
            shown[column] = shown[column].map(lambda v: "" if v is None or v != v else v)  # None/NaN: empty cell
    return shown.to_markdown(index=False)


def format_number(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if float(value).is_integer() and abs(value) >= 1:
        return f"{int(value):,}"
    return f"{value:.4g}"


def format_mean_std(mean: float, std: float) -> str:
    """'mean ± std' as report tables show it; the mean alone when std is NaN (one value)."""
    if isinstance(mean, float) and math.isnan(mean):
        return ""
    if isinstance(std, float) and math.isnan(std):
        return format_number(mean)
    return f"{format_number(mean)} ± {format_number(std)}"


def write_report(table: pd.DataFrame, out: Path, *, images: list[Path] | None = None) -> dict[str, Path]:
    """report.csv and report.md under `out`; the markdown embeds `images` (under `out`) by relative links."""
    out = Path(out)
    paths = {"csv": out / "report.csv", "markdown": out / "report.md"}
    with unwritable_as_usage_error(paths["csv"], elsewhere="give another --out"):
        write_text_atomic(paths["csv"], table.to_csv(index=False))
    with unwritable_as_usage_error(paths["markdown"], elsewhere="give another --out"):
        write_text_atomic(paths["markdown"], to_markdown(table) + "\n" + _embedded(images or [], out))
    return paths


def _embedded(images: list[Path], out: Path) -> str:
    """Markdown image links relative to report.md's folder (forward slashes, as web pages want them)."""
    if not images:
        return ""
    comparisons = [path for path in images if path.stem in COMPARISONS]
    curves = [path for path in images if path.stem not in COMPARISONS]
    blocks = []
    for heading, group in (("Comparisons", comparisons), ("Curves per run", curves)):
        if group:
            blocks.append(f"## {heading}")
            for path in group:
                link = Path(os.path.relpath(path, out)).as_posix()
                blocks.append(f"![{COMPARISONS.get(path.stem, f'curves of {path.stem}')}]({link})")
    return "\n" + "\n\n".join(blocks) + "\n"


# --- pictures -------------------------------------------------------------------------------------------------------

COMPARISONS = {  # the comparison pictures, by file stem, with the words report.md shows for them
    "accuracy_vs_params": "accuracy against parameters",
    "accuracy_vs_seconds": "accuracy against seconds per epoch",
}
_TIMESTAMP = re.compile(r"^\d{8}-\d{6}-")  # the start time heading every run folder's name


def plot_curves(runs: list[RunDir], out: Path) -> list[Path]:
    """Loss and accuracy curves per run (train and validation), one PNG each under `out`."""
    from cnnbench.core.plots import curves

    written = []
    for run in runs:
        try:
            rows = run.metrics()
        except DamagedRun:  # no curve beats a wrong one; the table's status column says why (plottable_runs)
            continue
        if not rows:
            continue
        path = Path(out) / f"{run.name}.png"
        with unwritable_as_usage_error(path, elsewhere="give another --out"):
            written.append(curves(rows, run.name, path))
    return written


def accuracy_column(frame: pd.DataFrame) -> str | None:
    """The accuracy the comparisons plot: the test split's where any run has one, else validation at the best epoch."""
    for column in ("test_accuracy", "val_accuracy"):
        if column in frame and pd.to_numeric(frame[column], errors="coerce").notna().any():
            return column
    return None


def comparison_points(frame: pd.DataFrame, x: str, y: str, group_by: list[str] | None = None) -> list[dict[str, Any]]:
    """The points of one comparison: a run each, or with `group_by` a group each (mean and standard deviation over its
    runs, e.g. over seeds). Damaged runs and runs without both figures are left out; `front` marks the Pareto front
    (no other point has an x as small and a y as large, one of them strictly)."""
    usable = frame[frame["status"] != "damaged"].copy()
    usable[x] = pd.to_numeric(usable[x], errors="coerce")
    usable[y] = pd.to_numeric(usable[y], errors="coerce")
    usable = usable[usable[x].notna() & usable[y].notna()]
    if usable.empty:
        return []
    if group_by:
        points = []
        for key, rows in usable.groupby(group_by, dropna=False, sort=True):
            key = key if isinstance(key, tuple) else (key,)
            points.append({"label": ", ".join("" if v is None or v != v else str(v) for v in key),
                           "x": float(rows[x].mean()), "y": float(rows[y].mean()), "x_std": float(rows[x].std()),
                           "y_std": float(rows[y].std()), "n": len(rows)})  # fmt: skip
    else:
        points = [{"label": _TIMESTAMP.sub("", str(name)), "x": float(vx), "y": float(vy), "x_std": math.nan,
                   "y_std": math.nan, "n": 1} for name, vx, vy in zip(usable["run"], usable[x], usable[y])]  # fmt: skip
    for point, on_front in zip(points, pareto_front([p["x"] for p in points], [p["y"] for p in points])):
        point["front"] = on_front
    return points


def pareto_front(costs: list[float], scores: list[float]) -> list[bool]:
    """For each point, whether no other point is at least as cheap and at least as good, and better in one of them."""
    return [not any(c <= cost and s >= score and (c < cost or s > score) for c, s in zip(costs, scores))
            for cost, score in zip(costs, scores)]  # fmt: skip


def plot_comparisons(frame: pd.DataFrame, out: Path, *, group_by: list[str] | None = None
                     ) -> tuple[list[Path], list[str]]:  # fmt: skip
    """accuracy_vs_params.png and accuracy_vs_seconds.png under `out`; returns them and a note for each not drawn."""
    from cnnbench.core.plots import comparison

    accuracy = accuracy_column(frame)
    if accuracy is None:
        return [], ["no comparison plots: no run has a test or validation accuracy yet"]
    y_label = "test accuracy" if accuracy == "test_accuracy" else "validation accuracy (best epoch)"
    over = f", mean ± std over runs grouped by {', '.join(group_by)}" if group_by else ""
    written, notes = [], []
    for name, x, x_label in (("accuracy_vs_params", "params", "trainable parameters"),
                             ("accuracy_vs_seconds", "seconds_per_epoch", "seconds per epoch (median)")):  # fmt: skip
        points = comparison_points(frame, x, accuracy, group_by)
        if not points:
            notes.append(f"no {name} plot: no run has both {x} and {accuracy}")
            continue
        path = Path(out) / f"{name}.png"
        with unwritable_as_usage_error(path, elsewhere="give another --out"):
            written.append(comparison(points, path, x_label=x_label, y_label=y_label,
                                      title=f"{y_label} against {x_label}{over}", front_label="Pareto front"))
    return written, notes
