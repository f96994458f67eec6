"""How a run reports and how it ends: each epoch's `EpochResult`, the `Callback` hooks and the `Progress` display that
receive it, `EarlyStopping`, and `StopRun`, which ends a run with a named status.

Apart from the trainer so that the parts that plug into a run (the run directory's writer, a fine-tune's feature
cache, a search's trial pruner, a pruning schedule) depend on this small interface, not on the loop. The hooks name
the Trainer they are given without importing it: trainer.py imports this module, and an import back, even one for
type checkers only, would be an import cycle (tests/test_layers.py refuses those).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass
class EpochResult:
    epoch: int  # 1-based
    lr: float
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    seconds: float
    images_per_s: float
    improved: bool  # best so far on the monitored metric
    stop: bool  # early stopping triggered

    def row(self) -> dict[str, float | int]:
        return {k: v for k, v in vars(self).items() if k not in ("improved", "stop")}


class Progress(Protocol):
    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None: ...
    def batch(self, done: int, stats: Callable[[], tuple[float, float, float]]) -> None: ...
    def end_epoch(self, result: EpochResult) -> None: ...


@dataclass
class EarlyStopping:
    monitor: str
    patience: int
    min_delta: float
    best: float = math.nan
    best_epoch: int = 0
    bad_epochs: int = 0

    def update(self, epoch: int, value: float) -> tuple[bool, bool]:
        """Returns (improved, stop)."""
        sign = -1.0 if self.monitor == "val_loss" else 1.0
        # With no validation split (NaN), the latest epoch is the best one: there is nothing to prefer an older by.
        improved = math.isnan(value) or math.isnan(self.best) or sign * (value - self.best) > self.min_delta
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return improved, self.patience > 0 and self.bad_epochs >= self.patience


class StopRun(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a callback (or by the engine when the loss diverges) to end a run with a named status, such as
    `diverged` or a search's `pruned`; the run directory records the status and the reason in summary.json."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class Callback:
    """Hooks into a run; override what you need. A hook may raise StopRun to end the run with its own status.

    on_fit_start: after a resumed state is loaded, before the first step (a fine-tune's feature cache starts here).
    on_step_end: after every optimizer step; only callbacks that override it are called from the step loop, and
        reading a device value here costs a host synchronisation per step.
    on_epoch_end: after every epoch's validation, in the order given (the run directory's writer comes first).
    """

    def on_fit_start(self, trainer: Trainer) -> None:  # noqa: F821 - trainer.Trainer, not importable here
        pass

    def on_step_end(self, trainer: Trainer) -> None:  # noqa: F821
        pass

    def on_epoch_end(self, trainer: Trainer, result: EpochResult) -> None:  # noqa: F821
        pass


class EpochCallback(Callback):
    """A plain function as an on_epoch_end callback."""

    def __init__(self, function: Callable[[EpochResult], None]) -> None:
        self.function = function

    def on_epoch_end(self, trainer: Trainer, result: EpochResult) -> None:  # noqa: F821
        self.function(result)
