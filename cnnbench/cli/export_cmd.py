from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cnnbench.cli.common import JsonFlag, QuietFlag, cells, configure_logging, emit_json, stderr, stdout
from cnnbench.core.errors import CheckFailed


def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (results/runs/<run>): trained, fine-tuned, pruned or "
                                            "a search trial.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="onnx (needs pip install 'cnnbench[export]') | "
                                     "pt2 (torch.export) | torchscript (deprecated by PyTorch)")] = "onnx",
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="best | last")] = "best",
    out: Annotated[Path | None, typer.Option("--out", help="Folder of the exported files.",
                                             show_default="RUN/export")] = None,
    root: Annotated[Path | None, typer.Option("--root", help="Where the dataset lives now (default: where it was "
                                              "when the run trained).", show_default=False)] = None,
    samples: Annotated[int, typer.Option("--samples", help="Test images the parity check compares (a seeded sample "
                                         "of a larger split).")] = 256,
    repeats: Annotated[int, typer.Option("--repeats", help="Timed rounds per latency.")] = 20,
    quiet: QuietFlag = False,
    json_output: JsonFlag = False,
) -> None:
    """Export a run's model (with its preprocessing inside: float32 pixels 0-255 in, logits and probabilities out) as
    ONNX, torch.export (pt2) or TorchScript, and check it against PyTorch on the run's test images: largest logit difference, top-1
    agreement, latency at batch 1 and 64. Exit 1 when the exported model disagrees beyond the tolerance."""
    from cnnbench.export.exporting import METADATA_FILE, PARITY_FILE, export_run

    configure_logging(quiet)
    result = export_run(run_dir, fmt=fmt, checkpoint=checkpoint, out=out, root=root, samples=samples, repeats=repeats)
    parity, file = result["parity"], result["file"]
    if json_output:
        emit_json({"file": str(file), "metadata": str(file.parent / METADATA_FILE),
                   "parity_file": str(file.parent / PARITY_FILE), "parity": parity})  # fmt: skip
    else:
        console = stdout()
        table = Table(title=f"{result['metadata']['run']} as {fmt}: parity with PyTorch on {parity['images']:,} "
                            f"{parity['split']} images (CPU, {parity['threads']} threads)")  # fmt: skip
        table.add_column("check")
        table.add_column("value", justify="right")
        table.add_row(*cells("max |logit difference|", f"{parity['max_abs_diff']:.2e} (tolerance "
                                                       f"{parity['tolerance']:.1e})"))  # fmt: skip
        table.add_row(*cells("top-1 agreement", f"{parity['top1_agreement']:.4f}"))
        for batch in (1, 64):
            table.add_row(*cells(f"latency, batch {batch}", f"PyTorch {parity[f'pytorch_ms_b{batch}']:.3f} ms, "
                                                           f"{fmt} {parity[f'exported_ms_b{batch}']:.3f} ms"))  # fmt: skip
        table.add_row(*cells("passed", "yes" if parity["passed"] else "NO"))
        console.print(table)
        console.print(f"written: {file} (+ {METADATA_FILE}, {PARITY_FILE})", markup=False)
    if not parity["passed"]:
        message = (f"the exported model's logits differ from PyTorch's by {parity['max_abs_diff']:.2e}, over the "
                   f"tolerance of {parity['tolerance']:.1e}; see {file.parent / PARITY_FILE}")  # fmt: skip
        if json_output:  # the one JSON object is printed, with "passed": false; the reason goes to stderr
            stderr().print(f"cnnbench: error: {message}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(1)
        raise CheckFailed(message)
