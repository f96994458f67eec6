"""What every study step is given (`StudyContext`) and the rule for going on after a run (`check_finished`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnbench.core.errors import CheckFailed


@dataclass(frozen=True, kw_only=True)
class StudyContext:
    out: Path  # the study's folder: runs/ and report.{csv,md} go here
    root: Path  # dataset root
    epochs: int | None  # override every run's epochs (for a quick look)
    progress: Callable[[str], Any]  # label -> a context manager implementing the engine's Progress, or None
    scale: str = "smoke"  # a recipe study's scale (recipes.SCALES)
    seeds: int | None = None  # seeds per row; None: the recipe's own
    trials: int | None = None  # search trials; None: the recipe's own
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted names set on every run of a recipe study


def check_finished(result, accepted: tuple[str, ...] = ("completed",)) -> None:
    """A study goes on only after a run it accepts: Ctrl-C (interrupted) stops it as an interruption, anything else
    (diverged, failed) as a failed check naming the run and why, so a Makefile sees exit 1, not 130."""
    result.raise_if_interrupted()
    if result.status not in accepted:
        raise CheckFailed(f"study stopped: run {result.run.path} ended {result.status}: "
                          f"{result.summary.get('reason') or result.summary.get('error', '')}")  # fmt: skip

