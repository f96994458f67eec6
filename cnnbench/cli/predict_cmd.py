from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from cnnbench.cli.common import JsonFlag, QuietFlag, cells, configure_logging, emit_json, stderr, stdout
from cnnbench.core.storage import ensure_writable_folder, unwritable_as_usage_error, write_text_atomic

SHOWN_ROWS = 50  # printed without --out; the CSV holds them all


def predict(
    source: Annotated[Path, typer.Argument(help="A run directory, or a model from `cnnbench export` (.onnx, .pt2, .pt).")],
    paths: Annotated[list[Path], typer.Argument(help="Image files and folders (searched recursively).")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Labels per image, most probable first.")] = 3,
    out: Annotated[Path | None, typer.Option("--out", help="Write every prediction to this CSV.",
                                             show_default="print a table")] = None,
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="A run's checkpoint: best | last")] = "best",
    root: Annotated[Path | None, typer.Option("--root", help="Where a run's dataset lives now (its classes and "
                                              "normalisation are read from it).", show_default=False)] = None,
    device: Annotated[str, typer.Option("--device", help="A run's device: auto | cpu | cuda | cuda:N | mps "
                                        "(exported models run on the CPU)")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", "-b")] = 64,
    quiet: QuietFlag = False,
    json_output: JsonFlag = False,
) -> None:
    """Label image files with a trained run or an exported model: the top-k classes with their probabilities (and the
    temperature-scaled ones where `evaluate` fitted a temperature). Files that do not decode are listed, not dropped."""
    from cnnbench.export.predicting import find_images, open_predictor, predict_images, predictions_csv

    configure_logging(quiet)
    images = find_images(paths)
    if out is not None:
        with unwritable_as_usage_error(out, elsewhere="give --out a writable place"):
            ensure_writable_folder(out.parent)  # before any work; a refused --out leaves no folder behind
    predictor = open_predictor(source, checkpoint=checkpoint, root=root, device=device)
    show_bar = not quiet and not json_output and len(images) > 512
    bar = Progress(TextColumn("predicting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=stderr(), transient=True, disable=not show_bar)  # fmt: skip
    with bar:
        task = bar.add_task("predict", total=len(images))
        result = predict_images(predictor, images, top_k=top_k, batch_size=batch_size,
                                progress=lambda done, total: bar.update(task, completed=done))  # fmt: skip
    shown_k = min(top_k, len(result.classes))
    if out is not None:
        with unwritable_as_usage_error(out, elsewhere="give --out a writable place"):
            write_text_atomic(out, predictions_csv(result, shown_k))
    if json_output:
        emit_json({"source": result.source, "classes": result.classes, "temperature": result.temperature,
                   "predictions": result.rows, "skipped": result.skipped, "out": str(out) if out else None})
        return
    console = stdout()
    if out is None:
        table = Table(title=f"{_images(len(result.rows))}, {result.source}")
        table.add_column("image")
        for k in range(1, shown_k + 1):
            table.add_column(f"#{k}")
        for entry in result.rows[:SHOWN_ROWS]:
            table.add_row(*cells(entry["path"], *(f"{t['label']} {t['probability']:.3f}" for t in entry["top"])))
        console.print(table)
        if len(result.rows) > SHOWN_ROWS:
            console.print(f"... and {len(result.rows) - SHOWN_ROWS:,} more: --out FILE.csv writes them all",
                          markup=False)  # fmt: skip
    else:
        console.print(f"written: {out} ({_images(len(result.rows))}, {result.source})", markup=False)
    if result.skipped:
        console.print(f"skipped {len(result.skipped):,} file(s) that do not decode (listed above"
                      f"{' and in the CSV' if out else ''})", markup=False)  # fmt: skip


def _images(count: int) -> str:
    return f"{count:,} image{'' if count == 1 else 's'}"
