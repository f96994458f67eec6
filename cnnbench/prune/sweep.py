"""`cnnbench prune`: weight pruning of any finished run, one pruned child run per amount (or MACs target), then the
honest before/after measurement (measure.py).

The pruning itself is in models/pruning.py (masks, channel removal), keeping pruned weights at zero while a child
fine-tunes in engine/sparsity.py, and a child run is the `prune` run kind (runs/prune.py): `oneshot` prunes before
fine-tuning; `polynomial` raises sparsity during it with TF-MOT's PolynomialDecay (what S3 used), updating the masks
every `frequency` optimizer steps; `structured` removes whole channels with Torch-Pruning.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnbench.core.errors import UsageError
from cnnbench.prune.measure import measure_and_report
from cnnbench.runs import kinds
from cnnbench.runs.pipeline import RunResult
from cnnbench.runs.prune import METHODS, SCHEDULES, PruneChild, PruneOptions, PruneRequest, prepare_prune
from cnnbench.runs.record import RunConfig
from cnnbench.runs.rundir import RunDir, find_runs

logger = logging.getLogger(__name__)

__all__ = ["METHODS", "SCHEDULES", "PruneOptions", "PruneOutcome", "parse_amounts", "parse_macs", "prune_run",
           "resume_pruned", "run_prune"]  # fmt: skip


def parse_amounts(text: str) -> tuple[float, ...]:
    """'0.5,0.7,0.9' -> (0.5, 0.7, 0.9); each strictly between 0 and 1."""
    values = []
    for item in (part.strip() for part in text.split(",")):
        try:
            value = float(item)
        except ValueError:
            value = math.nan
        if not 0.0 < value < 1.0:
            raise UsageError(f"bad --amount {item!r}: expected fractions strictly between 0 and 1, separated by commas "
                             f"(e.g. 0.5,0.7,0.9)")  # fmt: skip
        if value in values:
            raise UsageError(f"--amount {text!r} gives {item} twice; each amount trains one run, so give it once")
        values.append(value)
    return tuple(values)


_MAC_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}


def parse_macs(text: str) -> tuple[int, ...]:
    """'2.5M,1e6' -> (2500000, 1000000): MACs per image, with an optional k/M/G suffix."""
    values = []
    for item in (part.strip() for part in text.split(",")):
        match = re.fullmatch(r"([0-9.eE+]+)\s*([kKmMgG]?)", item)
        try:
            value = float(match.group(1)) * _MAC_SUFFIXES[match.group(2).lower()] if match else math.nan
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value >= 1):
            raise UsageError(f"bad --target-macs {item!r}: expected MACs per image, e.g. 2.5M or 400k (comma-separated "
                             f"for several runs)")  # fmt: skip
        if int(value) in values:
            raise UsageError(f"--target-macs {text!r} gives {item} twice; each target trains one run, so give it once")
        values.append(int(value))
    return tuple(values)


# --- choosing layers --------------------------------------------------------------------------------------------------


# --- unstructured pruning ---------------------------------------------------------------------------------------------


# --- structured pruning -----------------------------------------------------------------------------------------------


# --- runs -------------------------------------------------------------------------------------------------------------


@dataclass
class PruneOutcome:
    parent: RunDir
    runs: list[RunResult]  # one per amount or MACs target, in order; the last may have stopped (interrupted, ...)
    rows: list[dict[str, Any]] = field(default_factory=list)  # the measured report, parent first
    layer_rows: list[dict[str, Any]] = field(default_factory=list)
    report_dir: Path | None = None

    @property
    def stopped(self) -> RunResult | None:
        return next((result for result in self.runs if result.status != "completed"), None)


def prune_run(parent_path: Path, options: PruneOptions, *, train_values: dict[str, Any] | None = None,
              out: Path = Path("results/runs"), root: Path | None = None, progress: Any = None,
              callbacks: list[Any] | tuple[Any, ...] = (),
              measure: bool = True) -> PruneOutcome:  # fmt: skip
    """Prune the best checkpoint of the run at `parent_path` once per amount (or MACs target), fine-tune each pruned
    model as a new run under `out`, then evaluate and measure parent and children and write the report."""
    request = prepare_prune(parent_path, options, train_values=train_values, root=root)
    return run_prune(request, out=out, progress=progress, callbacks=callbacks, measure=measure)


def run_prune(request: PruneRequest, *, out: Path = Path("results/runs"), progress: Any = None,
              callbacks: list[Any] | tuple[Any, ...] = (), measure: bool = True) -> PruneOutcome:  # fmt: skip
    """The child runs of a checked request, then (with `measure`) evaluation, measurement and the report.

    `callbacks` join every child run's trainer (as in `kinds.run`). A sweep stops at the first run that does not
    complete (interrupted, diverged), and its outcome says which."""
    parent, options = request.parent, request.options
    targets: list[tuple[str, float]] = [("amount", a) for a in options.amounts]
    targets += [("target_macs", m) for m in options.target_macs]
    results: list[RunResult] = []
    for kind, target in targets:
        what = f"{target:,} MACs" if kind == "target_macs" else f"{target:g}"
        logger.info(f"pruning {parent.name} ({options.method}, {options.schedule}) to {what}")
        result = kinds.run(request.spec, kind="prune", request=PruneChild(request=request, kind=kind, target=target),
                     out=out, progress=progress, callbacks=callbacks)  # fmt: skip
        results.append(result)
        if result.status != "completed":
            logger.info(f"stopping the sweep: {result.run.path if result.run else 'the run'} ended {result.status}")
            break
    outcome = PruneOutcome(parent=parent, runs=results)
    if measure and outcome.stopped is None and results and results[0].run is not None:
        folder = options.report_dir or Path(out) / report_folder_name(parent.name, options)
        measure_and_report(outcome, options, device=request.spec.train.device, root=request.root, folder=folder)
    return outcome


def report_folder_name(parent_name: str, options: PruneOptions) -> str:
    suffix = "-polynomial" if options.schedule == "polynomial" else ""
    return f"prune-{parent_name}-{options.method}{suffix}"


def open_pruned(path: Path) -> tuple[RunDir, RunConfig]:
    """A pruned run directory and its config.json, or a UsageError saying what the folder is instead."""
    run = RunDir.open(path)
    config = run.read_config()
    if config.kind != "prune":
        raise UsageError(f"{run.name} is a {config.kind} run, not a pruned one; resume it with "
                         f"`cnnbench train --resume {run.path}`")  # fmt: skip
    return run, config


def resume_pruned(path: Path, *, epochs: int | None = None, device: str | None = None, repeats: int = 10,
                  progress: Any = None, measure: bool = True) -> PruneOutcome:  # fmt: skip
    """Continue an interrupted pruned run with its masks (and polynomial schedule) in force; once it completes,
    evaluate and measure it against its parent, write its prune.json and the sweep's report again: the sweep stopped at
    this run, so its report (where a sweep writes it by default, beside the runs) holds the runs of the same parent,
    method and schedule completed in that folder, this one included."""
    run, config = open_pruned(path)
    # the prune kind puts the masks (and polynomial schedule) back in force itself (runs/prune.py)
    result = kinds.resume_run(run.path, epochs=epochs, device=device, progress=progress,
                              epochs_flag="--finetune-epochs")
    parent_path = Path(config.parent)
    if not (parent_path / "config.json").is_file():
        logger.info(f"note: the parent run {parent_path} is gone; nothing to measure against")
        return PruneOutcome(parent=RunDir(parent_path), runs=[result])
    parent = RunDir.open(parent_path)
    if not (measure and result.status == "completed" and result.run is not None):
        return PruneOutcome(parent=parent, runs=[result])
    record = config.pruning
    options = PruneOptions(method=record["method"], layers=record["layers"], schedule=record["schedule"],
                           finetune_epochs=result.summary["epochs_planned"], repeats=repeats)  # fmt: skip
    outcome = PruneOutcome(parent=parent, runs=_sweep_of(result, config))
    measure_and_report(outcome, options, device=device or config.run_spec().train.device, root=None,
                       folder=run.path.parent / report_folder_name(parent.name, options))  # fmt: skip
    return outcome


def _sweep_of(result: RunResult, config: RunConfig) -> list[RunResult]:
    """`result` and the completed runs beside it pruned from the same parent with the same method and schedule (the
    rest of its sweep), in the order they were made (find_runs: by name, which starts with the start time); damaged
    runs are passed over."""
    parent, record = Path(config.parent).resolve(), config.pruning
    runs = []
    for sibling in find_runs([result.run.path.parent]):
        if sibling.path.resolve() == result.run.path.resolve():
            runs.append(result)
            continue
        if sibling.status() != "completed":
            continue
        try:
            other = sibling.read_config()
        except UsageError:  # DamagedRun
            continue
        if (other.kind == "prune" and Path(other.parent).resolve() == parent
                and (other.pruning["method"], other.pruning["schedule"]) == (record["method"], record["schedule"])):
            runs.append(RunResult(run=sibling, status="completed", summary=sibling.summary() or {}))
    return runs
