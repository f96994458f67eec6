"""What a training run shows: its progress on stderr (a live bar per epoch, one line per finished epoch) and its
result (`show_result`: the summary and the exit code a stopped run earns)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cnnbench.cli.common import emit_json, stderr, stdout


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

def progress_display(quiet: bool, *, label: str = ""):
    """A context manager giving the engine's progress display on stderr (None when quiet); `label` names the run
    among many (a search's trial, a study's step)."""
    return contextlib.nullcontext() if quiet else RichProgress(stderr(), label=label)


def show_result(result, *, json_output: bool) -> None:
    """Print a finished (or stopped) run: the JSON summary, or two lines. Exit 130 when interrupted, 1 when the run
    ended without completing (diverged, or a callback's own status)."""
    if result.run is None:  # a torchrun rank other than 0: rank 0 reports
        return
    summary = result.summary
    if json_output:
        emit_json({"run_dir": str(result.run.path), **summary})
    else:
        best = summary["best"]
        stdout().print(
            f"{result.status}: {result.run.path}\n"
            f"best epoch {summary['best_epoch']}/{summary['epochs_completed']}: val_loss {best['val_loss']:.4f} "
            f"val_acc {best['val_acc']:.4f} (train acc {best['train_acc']:.4f}); "
            f"{summary['params']['trainable']:,} trainable parameters, {summary['params']['frozen']:,} frozen"
        )  # fmt: skip
    if result.status == "interrupted":
        how = "terminated (SIGTERM)" if summary.get("signal") == "SIGTERM" else "interrupted"
        stderr().print(f"{how} after epoch {summary['epochs_completed']}; resume with: "
                       f"cnnbench train --resume {result.run.path}", markup=False)  # fmt: skip
        raise typer.Exit(143 if summary.get("signal") == "SIGTERM" else 130)
    if result.status != "completed":
        stderr().print(f"cnnbench: error: run {result.status}: {summary.get('reason', '')}", markup=False)
        raise typer.Exit(1)
