from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cnnbench.cli.common import JsonFlag, QuietFlag, cells, configure_logging, emit_json, stdout


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
    """Score a run on a split: accuracy, top-5, precision/recall/F1, ROC AUC, log loss, per-class table, confusion;
    calibration (ECE, MCE, Brier) before and after temperature scaling; pictures and tables of errors in RUN/eval/."""
    from cnnbench.evaluate.evaluation import evaluate_run
    from cnnbench.core.plots import GALLERY_LIMIT

    configure_logging(quiet)
    result = evaluate_run(run_dir, split=split, checkpoint=checkpoint, root=root, device=device,
                          batch_size=batch_size)  # fmt: skip
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
    calibration = result["calibration"]
    scaling = calibration["temperature_scaling"]
    for key, name in (("ece", f"ECE ({calibration['bins']} bins)"), ("mce", "MCE"), ("brier", "Brier score")):
        table.add_row(*cells(name, f"{result[key]:.4f}"))
    if "temperature" in scaling:
        table.add_row(*cells("temperature T (fitted on val)", f"{scaling['temperature']:.4f}"))
        for key, name in (("ece_scaled", "ECE after scaling"), ("mce_scaled", "MCE after scaling"),
                          ("brier_scaled", "Brier after scaling"), ("loss_scaled", "loss after scaling")):  # fmt: skip
            table.add_row(*cells(name, f"{result[key]:.4f}"))
    table.add_row(*cells("images/s (inference)", f"{result['images_per_s']:,.0f} on {result['device']}"))
    table.add_row(*cells("size", f"{result['size_mb']:.4f} MB"))
    console.print(table)
    if "temperature" in scaling:
        console.print("temperature scaling divides the logits by T: every image keeps its most probable class, so "
                      "accuracy is unchanged; only the confidence moves", markup=False)  # fmt: skip
    for note in result["notes"]:
        console.print(f"note: {note}", markup=False)
    analysis = result["error_analysis"]
    wrong = analysis["misclassified"]
    if wrong == 0:
        console.print("misclassified: none, so no gallery was drawn", markup=False)
    else:
        gallery = analysis["pictures"].get("misclassified")
        shown = f"the {min(wrong, GALLERY_LIMIT)} most confident in {gallery}" if gallery else "none could be drawn"
        console.print(f"misclassified: {wrong:,} of {result['n']:,} ({shown})", markup=False)
    console.print(f"written: {Path(run_dir) / 'eval' / (split + '_analysis.md')} (pictures and tables on one page)",
                  markup=False)  # fmt: skip
    console.print(f"         and in {run_dir}: {', '.join(result['files'])}", markup=False)
