"""`--retrain-best`: what a search hands on once its trials are done, the best configuration retrained for its final
test figure. The retrain is a run directory under STUDY/best recording which trial it retrains: a rerun of the same
command reuses a finished one and resumes one that was stopped, instead of training it again beside it."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from cnnbench.core.errors import UsageError
from cnnbench.core.storage import jsonable
from cnnbench.data.catalog import get_dataset
from cnnbench.runs.rundir import DamagedRun, RunDir
from cnnbench.search.journal import run_of
from cnnbench.search.options import TuneOptions
from cnnbench.spec.run import RunSpec

logger = logging.getLogger(__name__)


def merged_split(spec: RunSpec) -> tuple[float, float, float]:
    """The split a retrain uses: train and validation together, the same test. Checked before a search starts."""
    split = spec.data.split
    if split is None:
        split = get_dataset(spec.data.dataset).default_split
    if split is None:
        raise UsageError(f"--retrain-best needs explicit split ratios for {spec.data.dataset}, which has its own test "
                         f"set (the validation part is folded into train): give --split train,val,test, e.g. "
                         f"--split 0.7,0.1,0.2")  # fmt: skip
    return (split[0] + split[1], 0.0, split[2])


def retrain_best(best: dict[str, Any], options: TuneOptions, progress) -> dict[str, Any]:
    """The best configuration trained on train + val for the best trial's best epoch count, then evaluated once on
    test: the one test figure the search reports (the trials only ever saw validation)."""
    # here, not at the top: these import torch, and a space or option error should exit without waiting for it
    from cnnbench.evaluate.evaluation import evaluate_run
    from cnnbench.runs import kinds

    spec = RunSpec.from_dict(best["spec"])
    merged = merged_split(spec)
    summary = RunDir(run_of(options.folder, best["run"])).read_summary()
    epochs = max(1, int((summary.best_epoch if summary else None) or spec.train.epochs))
    spec = replace(spec, data=replace(spec.data, split=merged), train=replace(spec.train, epochs=epochs, patience=0))
    record = jsonable({"study": options.study, "trial": best["trial"], "spec": spec.to_dict()})  # as JSON reads back
    folder = options.folder / "best"
    earlier = _earlier_retrain(folder, record)
    with (progress("retrain best") if progress else contextlib.nullcontext()) as bar:
        if earlier is not None and earlier.status() == "completed":
            logger.info(f"the best configuration (trial {best['trial']}) was retrained already: {earlier.path}")
            result_path = earlier.path
        elif earlier is not None and earlier.checkpoint_path("last").is_file():
            logger.info(f"resuming the stopped retrain of trial {best['trial']}: {earlier.path}")
            result = kinds.resume_run(earlier.path, progress=bar)
            result.raise_if_interrupted()
            result_path = result.run.path
        else:
            logger.info(f"retraining the best configuration on train+val ({merged[0]:.2f}) for {epochs} epochs; "
                        f"test once")  # fmt: skip
            result = kinds.run(spec, out=folder, progress=bar, extra={"retrain_of": record})
            result.raise_if_interrupted()
            result_path = result.run.path
    test = evaluate_run(result_path, split="test")
    return {"run": str(result_path), "epochs": epochs, "test_accuracy": test["accuracy"]}


def _earlier_retrain(folder: Path, record: dict[str, Any]) -> RunDir | None:
    """The newest run under STUDY/best retraining exactly this (same trial, same specification), if any."""
    if not folder.is_dir():
        return None
    for path in sorted((path for path in folder.iterdir() if path.is_dir()), reverse=True):
        try:
            if RunDir(path).read_config(require=()).records.get("retrain_of") == record:
                return RunDir(path)
        except DamagedRun:
            continue  # a damaged run directory: train afresh beside it
    return None
