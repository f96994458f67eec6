"""A retried trial continues from where its interrupted run stopped, instead of training from scratch.

A trial whose run was cut short (Ctrl-C, SIGTERM, SIGKILL, a dead machine, a full disk) is failed and its
configuration queued again with `retry_of`, the number of the trial it repeats (loop.py, storage.py). When the retry
starts, each repeat looks in the study folder for that trial's run of the same repeat: one that did not finish, has
a `checkpoints/last.pt` and was started with exactly the specification the retry would train. That run is handed to
the retry (its config.json's trial record names the new trial, and the one it was taken from) and resumed from its
last checkpoint, as `train --resume` does; the epochs it had validated are reported to the new trial first, so trial
pruning judges the whole curve. Anything else (no such run, a damaged one, a fine-tune in two phases, whose head
phase and second phase are two runs) trains afresh.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from cnnbench.core.errors import CnnbenchError
from cnnbench.runs.rundir import DamagedRun, RunDir
from cnnbench.search.journal import trial_runs
from cnnbench.spec.run import RunSpec

logger = logging.getLogger(__name__)

FINISHED = ("completed", "pruned", "diverged", "failed")


def interrupted_run(folder: Path, study: str, retry_of: int | None, repeat: int, spec: RunSpec) -> Path | None:
    """The run of trial `retry_of`'s `repeat` to continue, or None when there is none to continue."""
    if retry_of is None or (spec.kind == "finetune" and spec.train.head_epochs):
        return None
    for found in reversed(trial_runs(folder, study)):  # the newest first: a trial retried twice left two
        if found.number != retry_of or found.repeat != repeat or found.status in FINISHED:
            continue
        run = RunDir(found.path)
        if not run.checkpoint_path("last").is_file():
            continue  # stopped before its first epoch ended: nothing to continue
        try:
            saved = run.read_config().run_spec()
        except (DamagedRun, CnnbenchError):
            continue
        if saved.to_dict() == spec.to_dict():
            return found.path
    return None


def hand_over(path: Path, record: dict) -> dict:
    """Make `record` the run's config.json trial section (for a retry: the section a new run of it would have, with
    `continues_trial`); returns the section it replaced, so that a failed hand-over can be undone."""
    run = RunDir(path)
    config = run.read_config()
    before = config.records.get("trial") or {}
    config.records["trial"] = record
    run.write_config(config)
    return before


def replay_reports(trial, path: Path) -> int:
    """Report the epochs the run had validated to the retry's trial (trial pruning then sees the whole curve);
    returns how many."""
    reported = 0
    for row in RunDir(path).metrics():
        value = row.get("val_acc")
        if value is not None and not math.isnan(value):
            trial.report(float(value), int(row["epoch"]))
            reported += 1
    return reported
