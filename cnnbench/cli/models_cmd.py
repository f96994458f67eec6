from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from cnnbench.cli.common import JsonFlag, cells, emit_json, stdout


def models(
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="Count parameters at this dataset's shape "
                                                 "instead of each model's seed input.")] = None,
    json_output: JsonFlag = False,
) -> None:  # fmt: skip
    """List the model families, the zoo with parameter counts (PyTorch trainable and Keras-style totals) and MACs, and
    the torchvision backbones."""
    from cnnbench.budget import dataset_input, describe_model
    from cnnbench.models import FAMILIES, MODELS
    from cnnbench.models.transfer import describe_backbones

    spec = dataset_input(dataset) if dataset else None
    rows = [describe_model(name, spec or MODELS.get(name).seed_input) for name in MODELS]
    families = [f"{name:<12} {FAMILIES.get(name).summary}" for name in FAMILIES]
    backbones, aliases = describe_backbones()
    if json_output:
        emit_json({"models": rows, "families": families, "backbones": backbones, "aliases": aliases})
        return
    table = Table()
    for column in ("name", "input", "trainable", "keras total", "MACs", "MB", "description"):
        table.add_column(column, justify="right" if column in ("trainable", "keras total", "MACs", "MB") else "left")
    for row in rows:
        table.add_row(*cells(row["name"], row["input"], f"{row['trainable']:,}", f"{row['keras_total']:,}",
                      f"{row['macs']:,}", f"{row['size_mb']:.2f}", row["description"]))  # fmt: skip
    console = stdout()
    console.print(table)
    console.print("Model families (`--model` takes a name from any of them):", markup=False)
    for line in families:
        console.print(line, markup=False)
    console.print("\nBackbones (the torchvision family; `cnnbench finetune` loads their ImageNet weights from "
                  "torch's cache or a download):", markup=False)
    listing = Table()
    for column in ("backbone", "feature params", "features", "blocks (for --freeze last:N / from:)", "weights file"):
        listing.add_column(column, justify="right" if column in ("feature params", "features") else "left")
    for row in backbones:
        listing.add_row(*cells(row["name"], f"{row['params']:,}", row["channels"], row["blocks"], row["weights_file"]))
    console.print(listing)
    for alias, note in aliases.items():
        console.print(f"{alias}: {note}")
