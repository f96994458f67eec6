"""The tune loop: ask for a trial under the study lock, sample its configuration, reject it if over budget or a
repeat, train it (--repeats seeds) through the one door for runs, tell the study how it went; then write the study's
outputs and, with --retrain-best, retrain the best."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import statistics
import time
from collections.abc import Callable
from typing import Any

from optuna.trial import TrialState

from cnnbench.core.logs import warnings_only
from cnnbench.core.errors import CheckFailed, CnnbenchError, Terminated, UsageError
from cnnbench.search.journal import recorded_run
from cnnbench.search.options import TuneOptions, validate_options
from cnnbench.search.outputs import trial_line, write_outputs
from cnnbench.search.retrain import merged_split, retrain_best
from cnnbench.search.retries import hand_over, interrupted_run, replay_reports
from cnnbench.search.space import Param, budget_of, trial_spec, with_space_base
from cnnbench.search.storage import (
    counted,
    grid_exhausted,
    make_sampler,
    open_study,
    recover_dead_trials,
    study_lock,
)
from cnnbench.spec.run import RunSpec

logger = logging.getLogger(__name__)

MAX_REJECTED_IN_A_ROW = 2000  # samples over budget (or repeated) before the space is declared (nearly) empty


def _sampled_data(base: RunSpec, space: list[Param]) -> list[RunSpec]:
    """The base with each value the space can give its data.dataset and data.split (the retrain's split depends on
    them); the base alone when the space samples neither."""
    specs = [base]
    for param in space:
        if param.name in ("data.dataset", "data.split") and param.kind == "categorical":
            specs = [spec.with_values({param.name: choice}) for spec in specs for choice in param.choices]
    return specs


def tune(base: RunSpec, space_name: str, space: list[Param], options: TuneOptions, *,
         progress: Callable[[str], Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """Run trials until the study holds --n-trials finished or running ones; returns the study's summary."""
    validate_options(options)
    # here, not at the top: these import torch, and a space or option error should exit without waiting for it
    from cnnbench.models.families import family_of
    from cnnbench.runs.kinds import run

    family_of(base.model_name)  # an unknown model is a usage error before the study exists, not a failed trial
    if options.retrain_best:  # its usage is checked before the trials, not after them: for every dataset and split
        for spec in _sampled_data(base, space):  # the space can sample
            merged_split(spec)
    _check_space_fits_the_kind(space_name, space, base)
    base = with_space_base(base, space_name)
    study = open_study(options, space, _longest_trial(base, space))
    with study_lock(options, study):  # another worker between ask() and naming itself on the trial looks dead
        recover_dead_trials(study)
    rejected_in_a_row = 0
    started = time.perf_counter()
    try:
        while True:
            with study_lock(options, study):
                if counted(study) >= options.n_trials:
                    break
                size = grid_exhausted(study)
                if size is not None:
                    logger.warning(f"the grid has {size} point(s), all tried: the study ends with {counted(study)} "
                                   f"trial(s), short of --n-trials {options.n_trials}")  # fmt: skip
                    break
                trial = study.ask()
                trial.set_user_attr("host", socket.gethostname())
                trial.set_user_attr("pid", os.getpid())
                trial.set_user_attr("started", time.time())
            params = {p.name: p.suggest(trial) for p in space}
            spec = trial_spec(base, params)
            reason = _reject(study, trial, spec, params, options)
            if reason:
                trial.set_user_attr("rejected", reason)
                study.tell(trial, state=TrialState.FAIL)
                rejected_in_a_row += 1
                if reason.startswith("repeats trial"):  # another worker drew the same sequence: move this one off it
                    study.sampler = make_sampler(options, space, options.seed + len(study.trials) + os.getpid())
                if rejected_in_a_row >= MAX_REJECTED_IN_A_ROW:
                    raise CheckFailed(f"{rejected_in_a_row} sampled configurations in a row were rejected ({reason}); "
                                      f"widen the space or raise the budget")  # fmt: skip
                continue
            rejected_in_a_row = 0
            try:
                value, status, runs = _run_trial(study, trial, spec, params, options, run, progress)
            except (KeyboardInterrupt, Terminated):
                _fail_and_requeue(study, trial, "interrupted")
                raise
            except Exception as error:
                _fail_and_requeue(study, trial, f"{type(error).__name__}: {error}")
                raise
            if status == "pruned":
                study.tell(trial, state=TrialState.PRUNED)
            elif status == "completed":
                study.tell(trial, value)
            else:  # diverged: a result of the configuration, not an accident; not retried
                trial.set_user_attr("failure", status)
                study.tell(trial, state=TrialState.FAIL)
            logger.info(trial_line(trial.number, status, value, params, runs))
    except (KeyboardInterrupt, Terminated):  # a stopped study still gets its tables, of the trials so far
        if study.get_trials(deepcopy=False):
            write_outputs(study, options, space)
        raise
    summary = write_outputs(study, options, space)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    if options.retrain_best and summary.get("best"):
        summary["retrained"] = retrain_best(summary["best"], options, progress)
    return summary


def _longest_trial(base: RunSpec, space: list[Param]) -> int:
    """The most epochs a trial may train: the space's own range or choices of train.epochs, else the base's."""
    for param in space:
        if param.name == "train.epochs":
            return int(max(param.choices) if param.kind == "categorical" else param.high)
    return base.train.epochs


def _check_space_fits_the_kind(space_name: str, space: list[Param], base: RunSpec) -> None:
    """A space that samples fine-tuning options (a head, a freezing policy) over scratch runs would train the same
    model in every trial, ignoring them: refuse it, saying what the search lacks."""
    from cnnbench.spec.run import OPTIONS

    transfer_only = {o.name for o in OPTIONS if "finetune" in o.commands and "train" not in o.commands}
    sampled = [p.name for p in space if p.name in transfer_only]
    if sampled and base.kind != "finetune":
        raise UsageError(f"the space {space_name} samples fine-tuning options ({', '.join(sampled)}), so its trials "
                         f"fine-tune a backbone: give --backbone NAME (e.g. --backbone resnet18; `cnnbench models` "
                         f"lists them) or --weights")  # fmt: skip


def _reject(study, trial, spec: RunSpec, params: dict[str, Any], options: TuneOptions) -> str | None:
    counts = budget_of(spec)
    if counts is None and spec.model_name == "arch":
        return "the input is too small for this architecture"
    if counts is not None:
        trial.set_user_attr("params", counts[0])
        trial.set_user_attr("macs", counts[1])
        if options.max_params is not None and counts[0] > options.max_params:
            return f"{counts[0]:,} parameters > --max-params {options.max_params:,}"
        if options.max_macs is not None and counts[1] > options.max_macs:
            return f"{counts[1]:,} MACs > --max-macs {options.max_macs:,}"
    if options.sampler == "random":  # a configuration already tried is skipped, as the seeds' random searches did
        for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                              TrialState.RUNNING)):  # fmt: skip
            if other.number != trial.number and other.params == params:
                return f"repeats trial {other.number}"
    return None


def _run_trial(study, trial, spec: RunSpec, params: dict[str, Any], options: TuneOptions, run, progress):
    """Train the configuration --repeats times (seeds seed, seed+1, ...); the score is the mean best val_acc."""
    from cnnbench.search.trial_pruning import TrialPruning  # the engine imports torch: see trial_pruning.py

    folder = options.folder / "trials"
    values, runs, status = [], [], "completed"
    for repeat in range(options.repeats):
        seeded = spec.with_values({"train.seed": spec.train.seed + repeat})
        if options.max_params is not None:
            seeded = seeded.with_values({"train.max_params": options.max_params})
        extra = {"trial": {"study": options.study, "number": trial.number, "repeat": repeat, "params": params}}
        label = f"trial {trial.number}" + (f".{repeat}" if options.repeats > 1 else "")
        reporter = TrialPruning(trial, report=repeat == 0)  # trial pruning follows the first seed's curve
        stopped = interrupted_run(options.folder, options.study, trial.user_attrs.get("retry_of"), repeat, seeded)
        # the trial's run keeps its info lines to itself: the search logs one line per trial instead
        with (progress(label) if progress else contextlib.nullcontext()) as bar, warnings_only():
            result = _continue(stopped, trial, extra["trial"], reporter, bar) if stopped is not None else None
            if result is None:
                result = run(seeded, out=folder, progress=bar, callbacks=[reporter], extra=extra)
        runs.append(recorded_run(options.folder, result.run.path, database=bool(options.storage)))
        trial.set_user_attr("runs", runs)
        result.raise_if_interrupted()
        # the result is the last phase's run (a fine-tune with head_epochs runs two): count the earlier phases too;
        # recorded for a stopped (pruned, diverged) trial as well: the epochs it cost are what trial pruning saves
        trial.set_user_attr("epochs", reporter.earlier_epochs + result.summary["epochs_completed"])
        if result.status != "completed":
            status = result.status
            break
        values.append(result.summary["best"]["val_acc"])
        trial.set_user_attr("seconds_per_epoch", result.summary["seconds_per_epoch_median"])
        trial.set_user_attr("params", result.summary["params"]["trainable"])
        trial.set_user_attr("macs", result.summary["params"]["macs"])
    value = statistics.fmean(values) if values and status == "completed" else None
    if value is not None and math.isnan(value):
        raise UsageError("trials are scored by validation accuracy, but this data has no validation split; "
                         "give --split with a validation part")
    return value, status, runs


def _continue(path, trial, record: dict[str, Any], reporter, bar):
    """Resume the interrupted run at `path` as this retry's run (retries.py)."""
    from cnnbench.runs.kinds import resume_run

    before = hand_over(path, {**record, "continues_trial": trial.user_attrs.get("retry_of")})
    if reporter.report:
        replay_reports(trial, path)
    logger.info(f"trial {trial.number} continues trial {trial.user_attrs.get('retry_of')}'s run {path.name} from "
                f"its last checkpoint")  # fmt: skip
    try:
        return resume_run(path, progress=bar, callbacks=[reporter])
    except CnnbenchError as error:  # refused before training (a damaged checkpoint; all epochs done, no summary)
        hand_over(path, before)  # still the interrupted trial's run: a rebuild must not count it for this one
        logger.warning(f"trial {trial.number}: {path.name} cannot be continued ({error}); training it afresh")
        return None


def _fail_and_requeue(study, trial, why: str) -> None:
    trial.set_user_attr("failure", why[:300])
    study.tell(trial, state=TrialState.FAIL)
    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
