from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cnnbench.cli.common import JsonFlag, QuietFlag, cells, emit_json, log_to_stderr, stdout


def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (results/runs/<run>).")],
    split: Annotated[str, typer.Option("--split", help="test | val | train")] = "test",
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="best | last")] = "best",
    root: Annotated[Path | None, typer.Option("--root", help="Where the dataset lives now (default: where it was "
                                              "when the run trained).", show_default=False)] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N | mps")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", "-b")] = 1024,
    quiet: QuietFlag = False,
    json_output: JsonFlag = False,
) -> None:
    """Score a run on a split: accuracy, top-5, precision/recall/F1, ROC AUC, log loss, per-class table, confusion."""
    from cnnbench.evaluation import evaluate_run

    result = evaluate_run(run_dir, split=split, checkpoint=checkpoint, root=root, device=device,
                          batch_size=batch_size, log=log_to_stderr(quiet))  # fmt: skip
    if json_output:
        emit_json(result)
        return
    console = stdout()
    table = Table(title=f"{result['run']} — {split} split ({result['n']:,} images, {checkpoint} checkpoint)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("accuracy", "top5_accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_weighted",
                "recall_weighted", "f1_weighted", "roc_auc", "loss"):  # fmt: skip
        if key in result:
            value = result[key]
            table.add_row(*cells(key, "nan" if value is None or value != value else f"{value:.4f}"))
    table.add_row(*cells("images/s (inference)", f"{result['images_per_s']:,.0f} on {result['device']}"))
    table.add_row(*cells("size", f"{result['size_mb']:.4f} MB"))
    console.print(table)
    for note in result["notes"]:
        console.print(f"note: {note}", markup=False)
    console.print(f"written: {Path(run_dir) / 'eval' / (split + '.json')} (+ per-class and confusion CSVs)",
                  markup=False)  # fmt: skip
