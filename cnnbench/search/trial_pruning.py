"""Trial pruning's feed: the engine callback that reports each epoch's validation accuracy to the trial, keeps its
heartbeat fresh, and ends a hopeless trial's run with status `pruned`. (Trial pruning stops trials early; it is not
weight pruning, `cnnbench prune`.)

Imported by the loop only once trials start: the engine imports torch, and a space or option error should exit
without waiting for it.
"""

from __future__ import annotations

import math
import time

from cnnbench.engine import Callback, StopRun
from cnnbench.search.storage import STALE_AFTER_S


class TrialPruning(Callback):
    """One per run of a trial (one per repeat). A trial can run several phases, one run directory each (a fine-tune
    with head_epochs trains the head, then the whole policy), and this callback sees them all: its steps go on
    increasing across the phases, since Optuna ignores (with a warning) a step reported twice, and trial pruning
    would then judge phase 2 by phase 1's curve. `report` is False for the repeats after the first: trial pruning
    follows the first seed's curve, the others only keep the heartbeat."""

    def __init__(self, trial, *, report: bool) -> None:
        self.trial, self.report = trial, report
        self.earlier_epochs = 0  # epochs of the phases before the current one
        self.epochs = 0  # epochs run across the phases so far
        self.last_heartbeat = 0.0

    def on_fit_start(self, trainer) -> None:
        self.earlier_epochs = self.epochs  # a new phase: its epoch 1 is the step after the last phase's last

    def on_epoch_end(self, trainer, result) -> None:
        now = time.time()
        if now - self.last_heartbeat > STALE_AFTER_S / 10:  # a write to the study about once a minute, not per epoch
            self.trial.set_user_attr("heartbeat", now)
            self.last_heartbeat = now
        self.epochs = step = self.earlier_epochs + result.epoch
        if not self.report or math.isnan(result.val_acc):
            return
        self.trial.report(result.val_acc, step)
        if self.trial.should_prune():
            raise StopRun("pruned", f"trial pruning: val_acc {result.val_acc:.4f} at epoch {result.epoch} is below "
                                    f"the other trials' median")  # fmt: skip
