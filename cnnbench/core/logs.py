"""Log lines through the standard `logging` module: every module logs to `logging.getLogger(__name__)`, under the
"cnnbench" logger, and never decides where a line goes. The CLI attaches the one handler (cli/common.py); used as a
library, cnnbench prints nothing until the caller configures logging, as the logging HOWTO asks of libraries.

A warning's text carries no "warning:" prefix: the formatter adds it, so a plain log and a terminal read alike.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

ROOT = "cnnbench"


class PlainFormatter(logging.Formatter):
    """The message alone, as before logging: "warning: " in front of warnings and errors, nothing else."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        return f"{record.levelname.lower()}: {message}" if record.levelno >= logging.WARNING else message


@contextlib.contextmanager
def warnings_only() -> Iterator[None]:
    """Hold cnnbench's info lines back inside the block (a search trial's run: the search logs one line per trial
    instead); warnings still pass. The previous level comes back afterwards, even on Ctrl-C."""
    logger = logging.getLogger(ROOT)
    before = logger.level
    logger.setLevel(max(logging.WARNING, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        logger.setLevel(before)


def silence_process() -> None:
    """For a process that must not talk to the user at all (a torchrun worker other than rank 0)."""
    logging.getLogger(ROOT).setLevel(logging.CRITICAL + 1)
