"""Small helpers shared by the training tests."""

from __future__ import annotations

from pathlib import Path

from cnnbench.data.prepare import PrepareOptions

DIGITS28 = ["--dataset", "digits", "--size", "28"]


def digits(root: Path, **options) -> PrepareOptions:
    """The bundled digits at 28x28, the size the S1 models need."""
    return PrepareOptions(dataset="digits", root=root, size=28, **options)


class StopAfter:
    """An on_epoch_end callback that simulates Ctrl-C at the end of a given epoch."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, result) -> None:
        if result.epoch == self.epoch:
            raise KeyboardInterrupt
