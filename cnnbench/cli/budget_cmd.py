from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from cnnbench.cli.common import JsonFlag, cells, emit_json, stdout
from cnnbench.cli.options import data_values, with_options


@with_options("budget")
def budget(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="A zoo model name, fit:N or a torchvision backbone.")],
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="Dataset whose shape and classes to use "
                                                 "(no files needed). Default: the model's seed input.")] = None,
    max_params: Annotated[int | None, typer.Option("--max-params", help="Exit 1 when the count exceeds N.")] = None,
    count: Annotated[str, typer.Option("--count", help="Which count --max-params compares: trainable (PyTorch) or "
                                       "keras_total (trainable + BatchNorm statistics).")] = "trainable",
    json_output: JsonFlag = False,
    **options: Any,  # --size, --grayscale, --classes (cnnbench/spec/run.py OPTIONS)
) -> None:  # fmt: skip
    """Count a model's parameters, BatchNorm statistics, Keras-style total, nonzero parameters and sparsity, MACs and
    size; check a budget."""
    from cnnbench.models.budget import check, dataset_input, seed_input

    shape = data_values(ctx, "budget")  # size, grayscale, classes
    size, grayscale, classes = shape["size"], shape["grayscale"], shape["classes"]
    if dataset is not None:
        spec = dataset_input(dataset, size=size, grayscale=grayscale, classes=classes)
    elif size is not None or grayscale or classes is not None:
        raise typer.BadParameter("--size, --grayscale and --classes need --dataset", param_hint="--dataset")
    else:
        spec = seed_input(model)  # an unknown name raises here, listing every family's names
        if spec is None:
            raise typer.BadParameter(f"{model} is sized for a dataset; pass --dataset", param_hint="--dataset")
    result = check(model, spec, max_params=max_params, count=count)
    verdict = result["budget"]
    if json_output:
        emit_json(result)
    else:
        table = Table(show_header=False)
        table.add_column("what")
        table.add_column("value", justify="right")
        table.add_row(*cells("model", model))
        table.add_row(*cells("input", result["input"]))
        for key, label in (("trainable", "trainable parameters (PyTorch)"), ("frozen", "frozen parameters"),
                           ("bn_statistics", "BatchNorm statistics (buffers)"),
                           ("keras_total", "Keras-style total"), ("nonzero", "nonzero parameters")):  # fmt: skip
            table.add_row(*cells(label, f"{result[key]:,}"))
        table.add_row(*cells("sparsity (zero weights / parameters)", f"{result['sparsity']:.2%}"))
        table.add_row(*cells("MACs per image", f"{result['macs']:,}"))
        table.add_row(*cells("size", f"{result['size_mb']:.4f} MB"))
        console = stdout()
        console.print(table)
        if verdict:
            word = "within" if verdict["within"] else "OVER"
            console.print(f"{word} budget: {verdict['count']} = {verdict['value']:,} vs max {verdict['max_params']:,}",
                          markup=False)  # fmt: skip
    if verdict and not verdict["within"]:
        raise typer.Exit(1)
