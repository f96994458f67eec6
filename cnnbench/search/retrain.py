"""`--retrain-best`: what a search hands on once its trials are done, the best configuration retrained for its final
test figure."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from typing import Any

from cnnbench.core.errors import UsageError
from cnnbench.data.catalog import get_dataset
from cnnbench.runs.rundir import RunDir
from cnnbench.search.options import TuneOptions
from cnnbench.spec.run import RunSpec

logger = logging.getLogger(__name__)


def retrain_best(best: dict[str, Any], options: TuneOptions, progress) -> dict[str, Any]:
    """The best configuration trained on train + val for the best trial's best epoch count, then evaluated once on
    test: the one test figure the search reports (the trials only ever saw validation)."""
    # here, not at the top: these import torch, and a space or option error should exit without waiting for it
    from cnnbench.evaluate.evaluation import evaluate_run
    from cnnbench.runs.kinds import run

    spec = RunSpec.from_dict(best["spec"])
    split = spec.data.split
    if split is None:
        split = get_dataset(spec.data.dataset).default_split
    if split is None:
        raise UsageError("--retrain-best needs explicit split ratios for a dataset with its own test set (the "
                         "validation part is folded into train): give --split train,val,test")  # fmt: skip
    merged = (split[0] + split[1], 0.0, split[2])
    summary = RunDir(best["run"]).read_summary()
    epochs = max(1, int((summary.best_epoch if summary else None) or spec.train.epochs))
    spec = replace(spec, data=replace(spec.data, split=merged), train=replace(spec.train, epochs=epochs, patience=0))
    logger.info(f"retraining the best configuration on train+val ({merged[0]:.2f}) for {epochs} epochs; test once")
    with (progress("retrain best") if progress else contextlib.nullcontext()) as bar:
        result = run(spec, out=options.folder / "best", progress=bar)
    test = evaluate_run(result.run.path, split="test")
    return {"run": str(result.run.path), "epochs": epochs, "test_accuracy": test["accuracy"]}
