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
from cnnbench.report import PRUNE_MEASURED, collect, format_mean_std, format_number
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
    "latency_ms_b64": "latency ms (b64)",
    "test_ece": "test ECE",
}  # fmt: skip


def write_study_report(recipe: Recipe, context: StudyContext, rows: list[Row], *, seeds: int, trials: int,
                       tally: Tally, seconds: float) -> dict[str, Any]:  # fmt: skip
    out = context.out
    frame = collect([row.path for row in rows])
    records = {Path(r["path"]).resolve(): r for r in frame.to_dict(orient="records")}
    _add_parent_measurements(rows, records)
    per_run = [{"step": row.variant.step.name, "row": row.variant.label, "seed": row.seed,
                **records[row.path.resolve()]} for row in rows]  # fmt: skip
    import pandas as pd

    write_text_atomic(out / "report.csv", pd.DataFrame(per_run).to_csv(index=False))
    compact, full, plots, structured, findings = [], [], [], {}, []
    for table in recipe.tables:
        variants = _variants_of(rows, table["name"])
        if not variants:
            continue
        columns = [*table["columns"], *(c for c in compact_columns(table) if c not in table["columns"])]
        lines, table_rows = _table(table, columns, variants, rows, records)
        full.append("\n".join(lines))
        compact.append("\n".join(_table(table, compact_columns(table), variants, rows, records)[0]))
        structured[table["name"]] = table_rows
        findings += _findings(table, variants, table_rows)
        plot = _plot(table, table_rows, out)
        if plot:
            plots.append(plot)
    text = "\n".join([*_header(recipe, context, rows, records, seeds, trials, tally, seconds), "",
                      *_reproduces(recipe, findings), "## Results", "", *compact, *_notes(tally),
                      *_plots_section(plots, out), "## Full metrics", "",
                      "Every measured column of each table (report.csv has every run, one line per seed).", "", *full,
                      *_run_links(rows, out)]) + "\n"  # fmt: skip
    write_text_atomic(out / "report.md", text)
    return {"study": recipe.name, "scale": recipe.scale, "runs": [str(r.path) for r in rows], "tables": structured,
            "findings": [f["text"] for f in findings], "ran": tally.ran, "resumed": tally.resumed, "kept": tally.kept,
            "seconds": round(seconds, 1),
            "files": {"markdown": str(out / "report.md"), "csv": str(out / "report.csv"),
                      "plots": [str(p) for p in plots]}, "table": "\n\n".join(compact)}  # fmt: skip


def headline(table: dict[str, Any]) -> str:
    """The metric a table answers its question with: its `headline`, else the one it plots, else test accuracy."""
    return table.get("headline") or table.get("plot") or "test_accuracy"


def compact_columns(table: dict[str, Any]) -> list[str]:
    """The few columns the compact view shows: the recipe's `compact`, else parameters, the headline metric and
    seconds per epoch."""
    return list(table.get("compact") or ["params", headline(table), "seconds_per_epoch"])


def _add_parent_measurements(rows: list[Row], records: dict[Path, dict[str, Any]]) -> None:
    """A pruning step's parent gets the figures its children are measured against (nonzero parameters, compressed
    size, latency), from the prune step's own report: measured in the same session as the children, so they compare;
    its run directory holds none of them."""
    import pandas as pd

    for row in rows:
        report = row.path.parent / "report" / "prune_report.csv"
        if not row.variant.step.prune or not report.is_file():
            continue
        try:
            table = pd.read_csv(report)
        except (OSError, ValueError):
            continue  # a damaged report leaves the parent's cells empty, as before
        for parent in table[table["role"] == "parent"].to_dict(orient="records"):
            record = records.get(Path(str(parent.get("path"))).resolve())
            if record is not None:
                record.update({k: parent[k] for k in PRUNE_MEASURED if k in parent and not _is_number(record.get(k))})


def _variants_of(rows: list[Row], table: str) -> list[Variant]:
    seen: dict[int, Variant] = {}
    for row in rows:
        if table in row.variant.step.tables:
            seen.setdefault(id(row.variant), row.variant)
    return list(seen.values())


def _table(table: dict[str, Any], columns: list[str], variants: list[Variant], rows: list[Row],
           records: dict[Path, dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:  # fmt: skip
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


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _findings(table: dict[str, Any], variants: list[Variant], table_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The orderings the seed reported in this table, each set against ours on the table's headline metric: the order
    of the rows it gave figures for (two or more), and the table's `seed_order` (steps or rows, worst first, from the
    seed's words: "freezing collapses accuracy"). A step with several rows counts with its best."""
    metric = headline(table)
    ours = {v.label: r[metric]["mean"] for v, r in zip(variants, table_rows) if isinstance(r.get(metric), dict)}
    found = []
    figures = {v.label: float(v.original[metric]) for v in variants
               if _is_number(v.original.get(metric)) and v.label in ours}  # fmt: skip
    if len(figures) >= 2:
        order = sorted(figures, key=figures.get)
        found.append(_compare(table, metric, order, ours, figures=figures, seed_words=" < ".join(
            f"{label} ({_original(figures[label])})" for label in order)))  # fmt: skip
    stated = table.get("seed_order") or []
    for named in stated if stated and isinstance(stated[0], list) else [stated] if stated else []:
        groups = [(name, [v.label for v in variants if (v.step.name == name or v.label == name) and v.label in ours])
                  for name in named]  # fmt: skip
        best = {name: max(labels, key=ours.get) for name, labels in groups if labels}
        if len(best) >= 2:  # rows a scale does not run (S2's 224-pixel input at smoke scale) drop out
            several = any(len(labels) > 1 for _, labels in groups)
            order = [name for name in named if name in best]
            found.append(_compare(table, metric, order, {name: ours[best[name]] for name in order},
                                  seed_words=" < ".join(order) + (" (each at its best row)" if several else "")))
    return [f for f in found if f is not None]


def _compare(table: dict[str, Any], metric: str, order: list[str], ours: dict[str, float], *, seed_words: str,
             figures: dict[str, float] | None = None) -> dict[str, Any] | None:  # fmt: skip
    """One sentence: the seed's order (worst first), ours beside it, and whether it holds (every pair the same way;
    two rows the seed gave the same figure are not an order)."""
    figures = figures or {}
    pairs = [(a, b) for i, a in enumerate(order) for b in order[i + 1:]
             if not (a in figures and figures[a] == figures.get(b))]  # fmt: skip
    if not pairs:  # the seed gave every row the same figure: no order to hold or break
        return None
    flips = [(a, b) for a, b in pairs if not ours[a] < ours[b]]
    name = HEADERS.get(metric, metric)
    measured = ", ".join(f"{label} {format_number(ours[label])}" for label in order)
    text = f"*{table['title']}* ({name}): the seed has {seed_words}; ours: {measured}"
    if not flips:
        text += ": **the same order**."
    else:
        shown = "; ".join(f"{b} ({format_number(ours[b])}) {'ties' if ours[a] == ours[b] else 'is below'} {a} "
                          f"({format_number(ours[a])})" for a, b in flips[:3])  # fmt: skip
        more = f" and {len(flips) - 3} more pairs" if len(flips) > 3 else ""
        text += f": **not the same order** ({shown}{more})."
    return {"table": table["name"], "holds": not flips, "text": text}


def _reproduces(recipe: Recipe, findings: list[dict[str, Any]]) -> list[str]:
    """What the study reproduces and what it does not, from the figures alone: every ordering the seed reported,
    set against ours."""
    lines = ["## What this reproduces and what it does not", ""]
    if not findings:
        return [*lines, "No table has two or more of the seed's figures (or a stated order) to set ours against: "
                        "compare the rows below by hand.", ""]  # fmt: skip
    held = sum(f["holds"] for f in findings)
    where = ("on stand-in data at smoke scale, where the order of the rows is what can compare, not the figures"
             if recipe.scale == "smoke" else "on the seed's data")  # fmt: skip
    lines += [f"Of the {len(findings)} orderings the seed reported, {held} hold in ours and {len(findings) - held} "
              f"do not ({where}):", ""]  # fmt: skip
    return [*lines, *(f"- {f['text']}" for f in findings), ""]


def _header(recipe: Recipe, context: StudyContext, rows: list[Row], records: dict[Path, dict[str, Any]], seeds: int,
            trials: int, tally: Tally, seconds: float) -> list[str]:  # fmt: skip
    versions = package_versions()
    device = RunDir(rows[0].path).read_config().device if rows else {}
    training = sum(getattr(RunDir(r.path).read_summary(), "seconds_this_session", None) or 0.0 for r in rows)
    lines = [f"# {recipe.title}: reproduced with cnnbench", ""]
    weights = f" Pretrained weights: {recipe.weights_note}." if recipe.weights_note else ""
    if recipe.scale == "smoke":
        lines += [f"**Smoke run on stand-in data.**{weights} Data: {recipe.data_note}. Every figure of ours below "
                  f"comes from that "
                  f"stand-in, with fewer epochs and search trials than the seed used; the original figures are the "
                  f"seed's, on its real data. Compare the shape of the results (which model or policy wins, what "
                  f"collapses), not the numbers. `make {recipe.name} SCALE=full` runs it on the real data.", ""]  # fmt: skip
    else:
        lines += [f"**Full run.** {recipe.data_note}.{weights}", ""]
    lines += [f"- Source: {recipe.source} (digest in STUDIES.md); recipe: `cnnbench/studies/{recipe.path.name}`",
              f"- Scale: {recipe.scale}; seeds per row: {seeds}; search trials: {trials}",
              f"- Environment: {device.get('type', '?')} ({device.get('name', '?')}, {device.get('threads', '?')} "
              f"threads), python {versions.get('python')}, torch {versions.get('torch')}, torchvision "
              f"{versions.get('torchvision')}, cnnbench {versions.get('cnnbench')} at git {git_revision() or 'unknown'}",
              f"- Wall time of this invocation: {duration(seconds)} ({tally.ran} runs trained, {tally.resumed} "
              f"resumed, {tally.kept} kept from an earlier invocation with the same specification); training time "
              f"of all {len(rows)} runs as recorded in their summaries: {duration(training)}",
              "- n is the number of seeds behind each figure (mean ± sample standard deviation when n > 1); "
              "'original' is the figure the seed report gave for that row, where it gave one"]  # fmt: skip
    return lines


def duration(seconds: float) -> str:
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
