"""What one search is asked to do (`TuneOptions`: the study, its folder and storage, trial count, sampler, trial
pruner, repeats, budgets), and the check of those options before anything opens or runs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cnnbench.core.errors import UsageError

SAMPLERS = ("random", "tpe", "grid")
PRUNERS = ("none", "median", "hyperband")  # trial pruners (stopping hopeless trials), not weight pruning


@dataclass(frozen=True, kw_only=True)
class TuneOptions:
    study: str
    folder: Path  # results/tune/<study>: the journal, trial runs, tables, plots
    storage: str | None = None  # a database URL; None: the journal file in `folder`
    n_trials: int = 20
    sampler: str = "random"
    pruner: str = "none"
    repeats: int = 1
    seed: int = 0
    max_params: int | None = None
    max_macs: int | None = None
    retrain_best: bool = False
    rebuild: bool = False  # a journal study: rebuild study.journal from the trial run directories first
    pruner_warmup: int | None = None  # epochs a trial runs before trial pruning may stop it; None: a quarter, >= 2


def validate_options(options: TuneOptions) -> None:
    if options.sampler not in SAMPLERS:
        raise UsageError(f"bad --sampler {options.sampler!r}: choose from {', '.join(SAMPLERS)}")
    if options.pruner not in PRUNERS:
        raise UsageError(f"bad --pruner {options.pruner!r}: choose from {', '.join(PRUNERS)}")
    for name in ("n_trials", "repeats"):
        if getattr(options, name) < 1:
            raise UsageError(f"bad --{name.replace('_', '-')} {getattr(options, name)}: expected 1 or more")
    if options.pruner_warmup is not None and options.pruner_warmup < 0:
        raise UsageError(f"bad --pruner-warmup {options.pruner_warmup}: expected 0 or more epochs")
    for name in ("max_params", "max_macs"):
        value = getattr(options, name)
        if value is not None and value < 1:
            raise UsageError(f"bad --{name.replace('_', '-')} {value}: expected a positive number")
    if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", options.study):  # a folder name on every system
        raise UsageError(f"bad --study {options.study!r}: use a plain name (ASCII letters, digits, - and _; dots "
                         f"inside)")
    if options.rebuild and options.storage:
        raise UsageError("--rebuild rebuilds a study's journal file from its trial run directories; a --storage "
                         "database keeps its own records (leave --rebuild out)")
