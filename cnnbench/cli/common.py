"""What every command shares: the consoles, JSON output, option aliases defined once, and data options.

Results go to stdout (a rich table, or exactly one JSON object with --json); progress and logs go to stderr.
Nothing here imports torch, so `cnnbench --help` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

JsonFlag = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")]
QuietFlag = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or log lines on stderr.")]
RootOption = Annotated[Path, typer.Option("--root", help="Folder the datasets live in (torchvision's layout).")]
DatasetOption = Annotated[str, typer.Option("--dataset", "-d", help="A name from `cnnbench datasets`, or folder:PATH.")]
SplitOption = Annotated[
    str | None,
    typer.Option("--split", help="train,val,test ratios over all labelled data, e.g. 0.64,0.16,0.20. "
                 "Default: the dataset's own test (and val) set, validation carved from train."),
]  # fmt: skip
ValFractionOption = Annotated[float, typer.Option("--val-fraction", help="Part of train held out for validation "
                                                  "when the dataset has its own test set and no --split.")]
DataSeedOption = Annotated[int | None, typer.Option("--data-seed", help="Seed for the split and class subset "
                                                    "(default: --seed).")]
ClassesOption = Annotated[int | None, typer.Option("--classes", help="Keep N classes, chosen by the seed (S2).")]
GrayscaleFlag = Annotated[bool, typer.Option("--grayscale", help="Convert images to one channel.")]
SizeOption = Annotated[int | None, typer.Option("--size", help="Resize images to SIZE x SIZE.")]
SourceOption = Annotated[Path | None, typer.Option("--source", help="catsdogs: the Kaggle archive or its folder.")]
DownloadFlag = Annotated[bool, typer.Option("--download", help="Fetch the files if they are not under --root.")]
StorageOption = Annotated[str, typer.Option("--storage", help="auto | memory | files (a file index, decoded "
                                            "while training).")]


def stderr() -> Console:
    # Made on demand rather than at import, so output capture in tests (and redirected stderr) is honoured.
    return Console(stderr=True, highlight=False, soft_wrap=True)


def stdout() -> Console:
    # Piped output (a Makefile, `| less`, a CI log) gets a wide console instead of rich's 80 columns, so tables of
    # paths and descriptions are not squeezed into slivers.
    return Console(highlight=False, markup=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def cells(*values: object) -> list[Text]:
    """Table cells as plain text: data such as "[conv-relu-pool-BN] x3" must not be read as rich markup."""
    return [Text(str(value)) for value in values]


def log_to_stderr(quiet: bool = False):
    console = stderr()
    return (lambda message: None) if quiet else (lambda message: console.print(message, markup=False))


def emit_json(obj: Any) -> None:
    from cnnbench.core.storage import jsonable

    sys.stdout.write(json.dumps(jsonable(obj), allow_nan=False) + "\n")
    sys.stdout.flush()


def data_options(*, dataset: str, root: Path, split: str | None, val_fraction: float, seed: int,
                 classes: int | None, grayscale: bool, size: int | None, source: Path | None, download: bool,
                 storage: str = "auto"):  # fmt: skip
    from cnnbench.data.prepare import PrepareOptions, parse_split

    return PrepareOptions(dataset=dataset, root=root, split=parse_split(split), val_fraction=val_fraction, seed=seed,
                          classes=classes, grayscale=grayscale, size=size, source=source, download=download,
                          storage=storage)  # fmt: skip
