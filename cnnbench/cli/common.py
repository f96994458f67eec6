"""What every command shares: the consoles, JSON output, option aliases defined once, and data options.

Results go to stdout (a rich table, or exactly one JSON object with --json); progress and logs go to stderr.
Nothing here imports torch, so `cnnbench --help` stays fast.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

JsonFlag = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")]
QuietFlag = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or info lines on stderr (warnings still "
                                         "print).")]
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


@functools.cache
def stderr() -> Console:
    """The one stderr console of the process, shared by the progress bars and the log handler: rich prints a log line
    above a live bar only when both go through the same console. A console made with stderr=True looks up
    sys.stderr on every write, so output capture in tests (and redirected stderr) is honoured."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def stdout() -> Console:
    # Piped output (a Makefile, `| less`, a CI log) gets a wide console instead of rich's 80 columns, so tables of
    # paths and descriptions are not squeezed into slivers.
    return Console(highlight=False, markup=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def cells(*values: object) -> list[Text]:
    """Table cells as plain text: data such as "[conv-relu-pool-BN] x3" must not be read as rich markup."""
    return [Text(str(value)) for value in values]


def configure_logging(quiet: bool = False) -> None:
    """Send cnnbench's log lines to stderr for this command: rich's handler on a terminal (lines above the live
    progress bar), the bare message otherwise (a CI log, a pipe). --quiet keeps warnings and drops the rest.

    Called by each command, replacing the handler an earlier call in the same process attached (the tests run many
    commands in one process)."""
    from rich.highlighter import NullHighlighter
    from rich.logging import RichHandler

    from cnnbench.core.logs import ROOT, PlainFormatter

    logger = logging.getLogger(ROOT)
    for handler in [h for h in logger.handlers if getattr(h, "cnnbench_cli", False)]:
        logger.removeHandler(handler)
    console = stderr()
    if console.is_terminal:
        handler: logging.Handler = RichHandler(console=console, show_time=False, show_level=False, show_path=False,
                                               markup=False, highlighter=NullHighlighter(), keywords=[])  # fmt: skip
    else:
        handler = _CurrentStderr()
    handler.setFormatter(PlainFormatter())
    handler.cnnbench_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


class _CurrentStderr(logging.StreamHandler):
    """A stream handler that writes to whatever sys.stderr is when a line is logged, not when it was made (a test's
    captured stderr is gone after its command; a caller may redirect stderr between commands)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the property above answers instead
        pass


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
