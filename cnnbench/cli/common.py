"""What every command shares: the consoles, the log handler, JSON output, and the --quiet/--json flags.

Results go to stdout (a rich table, or exactly one JSON object with --json); progress and logs go to stderr.
Nothing here imports torch, so `cnnbench --help` stays fast.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

JsonFlag = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")]
QuietFlag = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or info lines on stderr (warnings still "
                                         "print).")]


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

    Called by each command; `main` releases it when the command ends (the tests run many commands, and library calls
    between them, in one process)."""
    from rich.highlighter import NullHighlighter
    from rich.logging import RichHandler

    from cnnbench.core.logs import ROOT, PlainFormatter

    release_logging()
    logger = logging.getLogger(ROOT)
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


def release_logging() -> None:
    """Take the command's handler off again, and its level: what cnnbench logs afterwards reaches only handlers the
    caller configured."""
    from cnnbench.core.logs import ROOT

    logger = logging.getLogger(ROOT)
    for handler in [h for h in logger.handlers if getattr(h, "cnnbench_cli", False)]:
        logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)


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
