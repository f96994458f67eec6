"""Holding a run to the CPU format probe's promise: a run that trains far slower than the probe measured for its
choice marks the choice's cache entry stale, so that the next run probes again.

A remembered choice serves every later run, so a wrong one that the probe's own checks let through must not stay:
a real run's speed is the last word on it. Apart from the measurement (autotune.py) because this is a Callback of a
training run, with the floors that say how far a run may fall short of bare training steps.
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any

from cnnbench.engine.autotune_cache import cache_path, cached_entry, update_cache
from cnnbench.engine.batches import InMemoryBatches
from cnnbench.engine.callbacks import Callback, EpochResult
from cnnbench.engine.trainer import Trainer

logger = logging.getLogger(__name__)

# A run is flagged when the median img/s of its first PROMISE_EPOCHS epochs is below this share of the probe's figure
# for its choice. The probe times bare steps; an epoch adds batching, normalisation, augmentation and the run's own
# optimizer. Measured on digits (1 thread, median of 3 epochs over the probe's figure): 0.70-1.08 without
# augmentation (mnist-722, mnist-7498, fit:7500, cifar-simple; batch 32-512), and with augmentation 0.85-1.08 except
# for the tiny mnist-722, whose step is cheaper than warping its batch: 0.43-0.51 (0.57-0.65 at batch 32). So half,
# and a quarter for augmented runs, stay clear of normal runs and still catch a choice that went wrong by 2-4x (a
# 2-thread choice on a machine where a neighbour took a core ran 0.03x).
PROMISE_FLOOR = 0.5
PROMISE_FLOOR_AUGMENTED = 0.25
PROMISE_EPOCHS = 3  # the median of three: the first epoch's one-off costs do not decide alone


def check_promise(digest: str, promised: float, measured: float, *, floor: float = PROMISE_FLOOR) -> str | None:
    """None when a run's measured img/s keeps the probe's promise for its choice (at least `floor` of it); else a log
    line, and the cache entry (when it still holds that promise) is marked stale so the next run with this
    configuration probes again."""
    if not promised or measured >= floor * promised:
        return None
    outcome = []

    def mark(cache: dict[str, Any]) -> None:
        entry = cache.get(digest)
        if entry is None:
            outcome.append("the choice was not cached, so the next run measures again anyway")
        elif entry.get("promised_images_per_s") != promised or entry.get("stale"):
            # Another process measured again or flagged it since this run read it: leave its word standing.
            outcome.append("its cache entry has been measured again or flagged since this run read it")
        else:
            entry["stale"] = {"reason": f"a run trained at {measured:,.0f} img/s of {promised:,.0f} promised",
                              "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
            outcome.append("the cached choice will be measured again by the next run")

    if cached_entry(digest) is None:
        mark({})
    elif not update_cache(mark):
        outcome[:] = [f"{cache_path()} could not be written, so the cached choice stands"]
    return (f"this run trains at {measured:,.0f} img/s, {measured / promised:.0%} of the {promised:,.0f} img/s the CPU "
            f"format probe measured for its choice: the machine is busier than when it was probed, or the choice does "
            f"not suit it; {outcome[0]}")  # fmt: skip


class PromiseWatch(Callback):
    """Holds a run to its CPU format choice: after PROMISE_EPOCHS epochs, the median img/s goes to check_promise (with
    the lower floor when the run augments) and its message, if any, as a log line. Runs whose batches stream from image
    files are not checked (decoding, not the format, sets their speed), nor runs of several processes (each process
    trains a share of every batch)."""

    def __init__(self, digest: str, promised: float) -> None:
        self.digest, self.promised = digest, promised
        self.rates: list[float] | None = []  # None once checked, or when the run is not comparable

    @classmethod
    def for_choice(cls, choice: dict[str, Any] | None) -> PromiseWatch | None:
        """The watch for a choice (`FormatChoice.choice` from autotune.choose_cpu_format), or None when nothing was
        measured."""
        if not choice or not choice.get("promised_images_per_s"):
            return None
        return cls(choice["digest"], choice["promised_images_per_s"])

    def on_epoch_end(self, trainer: Trainer, result: EpochResult) -> None:
        if self.rates is None:
            return
        if not isinstance(trainer.train_batches, InMemoryBatches) or trainer.world > 1:
            self.rates = None
            return
        self.rates.append(result.images_per_s)
        if len(self.rates) < PROMISE_EPOCHS:
            return
        augmented = getattr(getattr(trainer.preprocess, "augment", None), "enabled", False)
        floor = PROMISE_FLOOR_AUGMENTED if augmented else PROMISE_FLOOR
        message = check_promise(self.digest, self.promised, statistics.median(self.rates), floor=floor)
        self.rates = None
        if message:
            logger.info(message)
