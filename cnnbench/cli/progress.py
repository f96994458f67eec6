"""The training progress display on stderr: a live bar per epoch and one line per finished epoch."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class RichProgress:
    """Implements the engine's Progress protocol. Asks the engine for running stats (a device sync) at most 5x/s."""

    def __init__(self, console: Console, *, label: str = "") -> None:
        self.console = console
        self.label = label
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
            TimeRemainingColumn(), console=console, transient=True,
        )  # fmt: skip
        self.task = None
        self.last_refresh = 0.0
        self.epochs = 0

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None:
        self.epochs = epochs
        description = f"{self.label} epoch {epoch}/{epochs}".strip()
        if self.task is None:
            self.task = self.progress.add_task(description, total=batches, stats="")
        else:
            self.progress.reset(self.task, total=batches, description=description, stats="")

    def batch(self, done: int, stats: Callable[[], tuple[float, float, float]]) -> None:
        now = time.monotonic()
        if now - self.last_refresh < 0.2:
            return
        self.last_refresh = now
        loss, acc, rate = stats()
        self.progress.update(self.task, completed=done, stats=f"loss {loss:.4f} acc {acc:.3f} {rate:,.0f} img/s")

    def end_epoch(self, result) -> None:
        mark = " *" if result.improved else ""
        self.console.print(
            f"{self.label} epoch {result.epoch:>3}/{self.epochs}  loss {result.train_loss:.4f} acc {result.train_acc:.4f}"
            f"  val_loss {result.val_loss:.4f} val_acc {result.val_acc:.4f}  lr {result.lr:.2e}"
            f"  {result.seconds:.2f}s {result.images_per_s:,.0f} img/s{mark}".strip(),
            markup=False, highlight=False,
        )  # fmt: skip
