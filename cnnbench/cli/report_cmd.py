from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnnbench.cli.common import JsonFlag, emit_json, stderr, stdout


def report(
    paths: Annotated[list[Path] | None, typer.Argument(help="Run directories or folders holding them. "
                                                       "[default: results/runs]", show_default=False)] = None,
    columns: Annotated[str | None, typer.Option("--columns", help="Comma-separated columns (default: the seeds' "
                                                "table). `--columns list` shows them all.")] = None,
    sort: Annotated[str | None, typer.Option("--sort", help="Column to sort by; prefix - for descending, "
                                             "e.g. -test_accuracy.")] = None,
    group_by: Annotated[str | None, typer.Option("--group-by", help="Comma-separated columns; other numeric "
                                                 "columns become mean ± std with n (e.g. over seeds).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for report.csv and report.md.")] = Path("results"),
    plots: Annotated[bool, typer.Option("--plots", help="Also draw to OUT/plots/, embedded in report.md: accuracy "
                                        "against parameters (Pareto front) and against seconds per epoch, with "
                                        "mean ± std error bars when grouped, and each run's curves.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Gather runs into one table (written as OUT/report.csv and OUT/report.md); never modifies a run.

    A run with a damaged file is a row with status "damaged" and its reason; the table of the others is still made."""
    from cnnbench.report import (build_table, collect, damaged_runs, parse_columns, plot_comparisons, plot_curves,
                                 plottable_runs, to_markdown, write_report)  # fmt: skip

    sources = paths or [Path("results/runs")]
    frame = collect(sources)
    damaged = damaged_runs(frame)
    if len(damaged):  # a note, not an error: the table is made, and each damaged row carries its reason
        stderr().print(f"note: {len(damaged)} damaged run(s), shown with status damaged and a reason: "
                       f"{', '.join(damaged['run'])}", markup=False)  # fmt: skip
    if columns == "list":
        stdout().print("\n".join(frame.columns), markup=False)
        return
    chosen = parse_columns(columns, frame)
    groups = [c.strip() for c in group_by.split(",") if c.strip()] if group_by else None
    table = build_table(frame, columns=chosen, sort=sort, group_by=groups)
    comparisons: list[Path] = []
    curves: list[Path] = []
    if plots:
        comparisons, notes = plot_comparisons(frame, out / "plots", group_by=groups)
        for note in notes:
            stderr().print(f"note: {note}", markup=False)
        curves = plot_curves(plottable_runs(frame), out / "plots")
    images = comparisons + curves
    written = write_report(table, out, images=images)
    if json_output:
        emit_json({"rows": table.to_dict(orient="records"), "files": {k: str(v) for k, v in written.items()},
                   "plots": [str(p) for p in curves], "comparisons": [str(p) for p in comparisons]})  # fmt: skip
        return
    console = stdout()
    console.print(to_markdown(table), markup=False)
    console.print(f"\nwritten: {written['csv']}, {written['markdown']}"
                  + (f", {len(images)} plot(s) in {out / 'plots'}" if images else ""), markup=False)  # fmt: skip
