"""A study's report: its tables with the original report's figures beside ours, like a paper's results section.

report.md holds, per table, one row per run of the recipe (mean ± std over seeds, and n), each measured column followed
by the original figure where the seed report gave one; a bar chart per table (ours with their spread, the originals as
markers); the environment (device, versions, git revision); the wall time; and links to every row's curves and
confusion matrix. report.csv holds every run (one line per seed) with the columns of `cnnbench report`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cnnbench.core.environment import git_revision, package_versions
from cnnbench.core.plots import study_bars
from cnnbench.core.storage import write_text_atomic
from cnnbench.core.tables import markdown_table
from cnnbench.report import collect, format_mean_std, format_number
from cnnbench.runs.rundir import RunDir
from cnnbench.studies.context import StudyContext
from cnnbench.studies.recipes import Recipe, Row, Tally, Variant, aggregate


# How each column reads in a table's header (the report's own column names elsewhere).
HEADERS = {
    "params": "params", "keras_params": "Keras params", "macs": "MACs", "accuracy": "train acc",
    "val_accuracy": "val acc", "test_accuracy": "test acc", "test_loss": "test loss",
    "test_f1_weighted": "test F1 (weighted)", "test_precision_weighted": "test precision (w)",
    "test_recall_weighted": "test recall (w)", "test_roc_auc": "test AUC", "best_epoch": "best epoch",
    "epochs": "epochs", "seconds_per_epoch": "s/epoch", "size_mb": "MB", "nonzero_params": "nonzero params",
    "sparsity": "sparsity", "checkpoint_gzip_bytes": "gzip bytes", "latency_ms_b1": "latency ms (b1)",
    "test_ece": "test ECE",
}  # fmt: skip


def write_study_report(recipe: Recipe, context: StudyContext, rows: list[Row], *, seeds: int, trials: int,
                       tally: Tally, seconds: float) -> dict[str, Any]:  # fmt: skip
    out = context.out
    frame = collect([row.path for row in rows])
    records = {Path(r["path"]).resolve(): r for r in frame.to_dict(orient="records")}
    per_run = [{"step": row.variant.step.name, "row": row.variant.label, "seed": row.seed,
                **records[row.path.resolve()]} for row in rows]  # fmt: skip
    import pandas as pd

    write_text_atomic(out / "report.csv", pd.DataFrame(per_run).to_csv(index=False))
    tables, plots, structured = [], [], {}
    for table in recipe.tables:
        variants = _variants_of(rows, table["name"])
        if not variants:
            continue
        lines, table_rows = _table(table, variants, rows, records, out)
        tables.append("\n".join(lines))
        structured[table["name"]] = table_rows
        plot = _plot(table, table_rows, out)
        if plot:
            plots.append(plot)
    text = "\n".join([*_header(recipe, context, rows, records, seeds, trials, tally, seconds), "", *tables,
                      *_notes(tally), *_plots_section(plots, out), *_run_links(rows, out)]) + "\n"  # fmt: skip
    write_text_atomic(out / "report.md", text)
    return {"study": recipe.name, "scale": recipe.scale, "runs": [str(r.path) for r in rows], "tables": structured,
            "ran": tally.ran, "resumed": tally.resumed, "kept": tally.kept, "seconds": round(seconds, 1),
            "files": {"markdown": str(out / "report.md"), "csv": str(out / "report.csv"),
                      "plots": [str(p) for p in plots]}, "table": "\n\n".join(tables)}  # fmt: skip


def _variants_of(rows: list[Row], table: str) -> list[Variant]:
    seen: dict[int, Variant] = {}
    for row in rows:
        if table in row.variant.step.tables:
            seen.setdefault(id(row.variant), row.variant)
    return list(seen.values())


def _table(table: dict[str, Any], variants: list[Variant], rows: list[Row], records: dict[Path, dict[str, Any]],
           out: Path) -> tuple[list[str], list[dict[str, Any]]]:  # fmt: skip
    columns = table["columns"]
    with_original = [c for c in columns if any(c in v.original for v in variants)]
    header = ["run", "n"]
    for column in columns:
        header.append(HEADERS.get(column, column))
        if column in with_original:
            header.append("original")
    lines = [f"### {table['title']}", ""]
    if table.get("note"):
        lines += [table["note"], ""]
    cells_of_rows, structured = [], []
    for variant in variants:
        runs = [records[row.path.resolve()] for row in rows if row.variant is variant]
        cells, record = [variant.label, str(len(runs))], {"row": variant.label, "n": len(runs)}
        for column in columns:
            values = [r.get(column) for r in runs]
            numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if numbers:
                mean, std, n = aggregate(numbers)
                cells.append(format_mean_std(mean, std if n > 1 and std > 0 else math.nan))
                record[column] = {"mean": mean, "std": std, "n": n}
            else:
                text = next((str(v) for v in values if v is not None and v == v), "")
                cells.append(text)
                record[column] = text or None
            if column in with_original:
                figure = variant.original.get(column)
                cells.append("" if figure is None else _original(figure))
                record[f"{column} (original)"] = figure
        cells_of_rows.append(cells)
        structured.append(record)
    lines += [*markdown_table(header, cells_of_rows), ""]
    return lines, structured


def _original(figure: Any) -> str:
    """A number the seed reported, formatted as ours are; its words ("too large", "0.92-0.93") as they are."""
    return format_number(figure) if isinstance(figure, (int, float)) and not isinstance(figure, bool) else str(figure)


def _header(recipe: Recipe, context: StudyContext, rows: list[Row], records: dict[Path, dict[str, Any]], seeds: int,
            trials: int, tally: Tally, seconds: float) -> list[str]:  # fmt: skip
    versions = package_versions()
    device = RunDir(rows[0].path).read_config().device if rows else {}
    training = sum(getattr(RunDir(r.path).read_summary(), "seconds_this_session", None) or 0.0 for r in rows)
    lines = [f"# {recipe.title}: reproduced with cnnbench", ""]
    if recipe.scale == "smoke":
        lines += [f"**Smoke run on stand-in data.** {recipe.data_note}. Every figure of ours below comes from that "
                  f"stand-in, with fewer epochs and search trials than the seed used; the original figures are the "
                  f"seed's, on its real data. Compare the shape of the results (which model or policy wins, what "
                  f"collapses), not the numbers. `make {recipe.name} SCALE=full` runs it on the real data.", ""]  # fmt: skip
    else:
        lines += [f"**Full run.** {recipe.data_note}.", ""]
    if recipe.weights_note:
        lines += [f"Pretrained weights: {recipe.weights_note}.", ""]
    lines += [f"- Source: {recipe.source} (digest in STUDIES.md); recipe: `cnnbench/studies/{recipe.path.name}`",
              f"- Scale: {recipe.scale}; seeds per row: {seeds}; search trials: {trials}",
              f"- Environment: {device.get('type', '?')} ({device.get('name', '?')}, {device.get('threads', '?')} "
              f"threads), python {versions.get('python')}, torch {versions.get('torch')}, torchvision "
              f"{versions.get('torchvision')}, cnnbench {versions.get('cnnbench')} at git {git_revision() or 'unknown'}",
              f"- Wall time of this invocation: {_duration(seconds)} ({tally.ran} runs trained, {tally.resumed} "
              f"resumed, {tally.kept} kept from an earlier invocation with the same specification); training time "
              f"of all {len(rows)} runs as recorded in their summaries: {_duration(training)}",
              "- n is the number of seeds behind each figure (mean ± sample standard deviation when n > 1); "
              "'original' is the figure the seed report gave for that row, where it gave one"]  # fmt: skip
    return lines


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60} s" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _notes(tally: Tally) -> list[str]:
    if not tally.notes:
        return []
    return ["### Searches", "", *(f"- {note}" for note in tally.notes), ""]


def _plot(table: dict[str, Any], table_rows: list[dict[str, Any]], out: Path) -> Path | None:
    """Ours (mean with the seeds' spread) as bars, the original figure of each row as a marker, for the table's main
    metric."""
    metric = table.get("plot", "test_accuracy")
    ours = [(r["row"], r.get(metric)) for r in table_rows]
    if not any(isinstance(v, dict) for _, v in ours):
        return None
    return study_bars([label for label, _ in ours], [v["mean"] if isinstance(v, dict) else float("nan") for _, v in ours],
                      [v["std"] if isinstance(v, dict) else 0.0 for _, v in ours],
                      [r.get(f"{metric} (original)") for r in table_rows], out / f"table_{table['name']}.png",
                      y_label=HEADERS.get(metric, metric), title=table["title"])  # fmt: skip


def _plots_section(plots: list[Path], out: Path) -> list[str]:
    if not plots:
        return []
    return ["### Plots", "", *(f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in plots), ""]


def _run_links(rows: list[Row], out: Path) -> list[str]:
    """Each row's first run: its training curves and test confusion matrix (evaluate writes more beside them)."""
    cells = []
    for row in rows:
        rel = row.path.resolve().relative_to(out.resolve()) if row.path.resolve().is_relative_to(out.resolve()) \
            else row.path.resolve()  # fmt: skip
        links = [f"[curves]({(rel / 'curves.png').as_posix()})" if (row.path / "curves.png").is_file() else "",
                 f"[confusion]({(rel / 'eval' / 'test_confusion.png').as_posix()})"
                 if (row.path / "eval" / "test_confusion.png").is_file() else ""]  # fmt: skip
        cells.append([row.variant.label, row.seed, f"`{rel.as_posix()}`", *links])
    return ["### Runs", "", *markdown_table(["row", "seed", "run", "curves", "confusion"], cells,
                                            left=("row", "run", "curves", "confusion")), ""]
