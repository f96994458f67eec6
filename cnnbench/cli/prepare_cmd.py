from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cnnbench.cli.common import (
    ClassesOption,
    DownloadFlag,
    GrayscaleFlag,
    JsonFlag,
    QuietFlag,
    RootOption,
    SizeOption,
    SourceOption,
    SplitOption,
    StorageOption,
    ValFractionOption,
    cells,
    configure_logging,
    data_options,
    emit_json,  # fmt: skip
    stdout,
)


def prepare(
    dataset: Annotated[str, typer.Argument(help="A name from `cnnbench datasets`, or folder:PATH.")],
    root: RootOption = Path("data"),
    split: SplitOption = None,
    val_fraction: ValFractionOption = 0.1,
    seed: Annotated[int, typer.Option("--seed", help="Seed for the split and the class subset.")] = 0,
    classes: ClassesOption = None,
    grayscale: GrayscaleFlag = False,
    size: SizeOption = None,
    source: SourceOption = None,
    download: DownloadFlag = False,
    storage: StorageOption = "auto",
    quiet: QuietFlag = False,
    json_output: JsonFlag = False,
) -> None:
    """Read a dataset's files, split them (stratified, seeded) and write the prepared cache under ROOT/prepared/."""
    from cnnbench.data.prepare import load_or_prepare

    options = data_options(dataset=dataset, root=root, split=split, val_fraction=val_fraction, seed=seed,
                           classes=classes, grayscale=grayscale, size=size, source=source, download=download,
                           storage=storage)  # fmt: skip
    configure_logging(quiet)
    prepared = load_or_prepare(options)
    manifest = prepared.manifest
    if json_output:
        emit_json({"directory": str(prepared.directory), **manifest})
        return
    shape = manifest["input"]
    table = Table(show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row(*cells("dataset", manifest["dataset"]))
    table.add_row(*cells("prepared cache", str(prepared.directory)))
    table.add_row(*cells("source", manifest["source"]))
    table.add_row(*cells("images", f"{shape['channels']}x{shape['height']}x{shape['width']}, {manifest['storage']}"))
    table.add_row(*cells("classes", f"{len(manifest['classes'])}: {', '.join(manifest['classes'][:12])}"
                  + (" ..." if len(manifest["classes"]) > 12 else "")))  # fmt: skip
    for name, counts in manifest["counts"].items():
        table.add_row(*cells(name, f"{counts['total']:,}  (hash {manifest['split_hashes'][name][:12]})"))
    by_reason = manifest.get("skipped_by_reason") or {}  # caches prepared before it was recorded have the list only
    reasons = ", ".join(f"{count} {kind}" for kind, count in by_reason.items())
    table.add_row(*cells("skipped files", f"{len(manifest['skipped'])}" + (f" ({reasons})" if reasons else "")))
    stdout().print(table)
