"""The run pipeline: a model plan in, a run directory out. It owns the run directory's life cycle (config first, a
metrics row and checkpoint each epoch, summary last) and leaves the loops to the engine.

What differs between kinds of run (scratch, finetune, prune: runs/kinds.py) is only how the model is made, a
`ModelPlan`, and what a resumed run needs again; `train_with_plan` and `resume_run` do everything else. Many runs can
share one process (a study, a search): the prepared data, the CPU format choice and the process group are resolved
once per process and reused (`resources.py`), and one run's failure or stop leaves the next run's settings as they
were.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cnnbench import __version__
from cnnbench.core import plots
from cnnbench.core.environment import device_info, git_revision, package_versions
from cnnbench.core.errors import CheckFailed, Terminated, UsageError
from cnnbench.core.logs import silence_process
from cnnbench.core.storage import ensure_writable_folder
from cnnbench.data.prepare import Prepared, PrepareOptions
from cnnbench.engine import Callback, EpochCallback, StopRun, build_trainer, select_device
from cnnbench.engine.autotune import PromiseWatch
from cnnbench.runs import tensorboard
from cnnbench.models import build
from cnnbench.models.accounting import budget, count_parameters
from cnnbench.runs import resources
from cnnbench.runs.lock import RunLock
from cnnbench.runs.record import SCHEMA, RunConfig, RunSummary
from cnnbench.runs.rundir import DamagedRun, RunDir
from cnnbench.spec.run import RunSpec
from cnnbench.spec.train import TrainConfig

logger = logging.getLogger(__name__)



@dataclass
class RunResult:
    run: RunDir | None  # None on a torchrun rank other than 0, which writes nothing
    status: str  # completed | interrupted | failed | diverged | a callback's own status (a search's "pruned")
    summary: dict[str, Any]

    def raise_if_interrupted(self) -> None:
        """For a caller running many runs (a search, a study): stop the way this run was stopped, so the command
        exits as documented (130 after Ctrl-C, 143 after SIGTERM)."""
        if self.status == "interrupted":
            raise Terminated if self.summary.get("signal") == "SIGTERM" else KeyboardInterrupt


def check_budget(counts: dict[str, int], max_params: int | None, *, model: str, count: str = "trainable") -> None:
    if max_params is not None and counts[count] > max_params:
        raise CheckFailed(f"{model} has {counts[count]:,} {count.replace('_', ' ')} parameters, over the budget of "
                          f"{max_params:,}")  # fmt: skip


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed every generator and set the algorithm choice for this run, and only this run: a deterministic run is
    followed by a normal one in the same process (a study), so both settings are set every time."""
    import os
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.benchmark = not deterministic


@dataclass
class ModelPlan:
    """The model a run trains, how to rebuild it, the input normalisation it expects, run-level facts (kind, parent
    run, weights source) that go into config.json, and the parts a kind of run adds to the trainer."""

    model: Any
    spec: Any  # cnnbench.models.ModelSpec
    normalization: dict[str, Any]
    kind: str = "train"
    extra: dict[str, Any] = field(default_factory=dict)
    callbacks: list[Any] = field(default_factory=list)  # engine.Callback parts (a fine-tune's feature cache)
    trained_module: Any = None  # what the step calls when not the whole model (the head, on cached features)


def dataset_normalization(prepared: Prepared) -> dict[str, Any]:
    return {"mean": prepared.mean, "std": prepared.std, "source": "train split statistics"}


# What a kind puts back into a resumed run's rebuilt plan: (its config.json, the plan, the run's train config) -> None.
Restore = Callable[[RunConfig, "ModelPlan", TrainConfig], None]


def resume_run(path: Path, *, restore: Restore, epochs: int | None = None, device: str | None = None,
               progress: Any = None, callbacks: list[Any] | tuple[Any, ...] = (),
               epochs_flag: str = "--epochs") -> RunResult:  # fmt: skip
    """Continue the run at `path` from its last checkpoint, exactly as if it had not stopped; `restore` is its kind's
    (kinds.resume_run chooses it from config.json).

    Only the total number of epochs (to train a finished run further) and the device may change; `epochs_flag` is
    the option that sets it in the calling command (prune's is --finetune-epochs), for the message that asks for it.
    """
    import os

    run_dir = RunDir.open(path)
    # Before reading its state: a run still training is refused here. Under torchrun only rank 0 writes (and locks).
    lock = RunLock(run_dir.path) if int(os.environ.get("RANK", "0")) == 0 else None
    if lock is not None:
        lock.acquire()
    try:
        return _resume(run_dir, restore=restore, epochs=epochs, device=device, progress=progress,
                       callbacks=callbacks, epochs_flag=epochs_flag)  # fmt: skip
    finally:
        if lock is not None:
            lock.release()


def _resume(run_dir: RunDir, *, restore: Restore, epochs: int | None, device: str | None, progress: Any,
            callbacks: list[Any] | tuple[Any, ...], epochs_flag: str) -> RunResult:  # fmt: skip
    saved = run_dir.read_config(require=("data", "prepared", "train", "model", "device"))  # older runs lack the rest
    spec = saved.run_spec()
    config = replace(spec.train, epochs=epochs or spec.train.epochs, device=device or spec.train.device)
    if device is None:  # the same device trains on exactly as before: no new format probe
        config = replace(config, precision=saved.device["precision"], channels_last=saved.device["channels_last"],
                         threads=saved.device.get("threads"))
    if not run_dir.checkpoint_path("last").is_file():
        raise UsageError(f"{run_dir.name} has no checkpoints/last.pt to resume from (it stopped before its first epoch)")
    state = run_dir.load_checkpoint("last")
    run_dir.metrics()  # a damaged metrics.csv says so now, before the run is touched
    summary = run_dir.read_summary()  # likewise a damaged summary.json (None: the run never wrote one)
    status = summary.status if summary else "incomplete"
    finished = status in ("completed", "diverged") and epochs is None  # more needs an explicit --epochs
    if state["epoch"] >= config.epochs or finished:
        raise UsageError(f"{run_dir.name} already completed {state['epoch']} epochs; pass {epochs_flag} N with N "
                         f"larger to train it further")  # fmt: skip

    def rebuild(prepared: Prepared) -> ModelPlan:
        model_spec = saved.model_spec()
        normalization = saved.normalization or dataset_normalization(prepared)  # older runs lack it
        plan = ModelPlan(model=build(model_spec), spec=model_spec, normalization=normalization, kind=saved.kind)
        restore(saved, plan, config)  # the kind's own parts: a fine-tune's feature cache, a pruned run's masks
        return plan

    spec = replace(spec, train=config, data=PrepareOptions.from_dict(saved.data))
    return train_with_plan(spec, rebuild, run_dir=run_dir, state=state, progress=progress,
                           callbacks=callbacks)  # fmt: skip


class RunWriter(Callback):
    """The engine callback that writes a run directory: each epoch's metrics row, then its checkpoints."""

    def __init__(self, run_dir: RunDir, monitor: str) -> None:
        self.run_dir, self.monitor = run_dir, monitor

    def on_epoch_end(self, trainer, result) -> None:
        self.run_dir.append_metrics(result.row())  # the row first: a crash before the checkpoint only re-runs this epoch
        if result.improved:
            self.run_dir.save_checkpoint("best", {"model": trainer.model.state_dict(), "epoch": result.epoch,
                                                  "monitor": self.monitor})  # fmt: skip
        self.run_dir.save_checkpoint("last", trainer.state_dict())


def train_with_plan(spec: RunSpec, plan_model: Callable[[Prepared], ModelPlan], *, out: Path | None = None,
                    run_dir: RunDir | None = None, state: dict[str, Any] | None = None, progress: Any = None,
                    callbacks: list[Any] | tuple[Any, ...] = (),
                    extra: dict[str, Any] | None = None) -> RunResult:  # fmt: skip
    """The one training path behind every kind of run: everything but how the model is made. `extra` (a caller's
    records, such as a search's trial) joins the plan's own sections in config.json.

    A new run directory is locked as soon as it exists (a resumed one by resume_run) and stays locked until the
    summary is written: one writer per run (runlock.py)."""
    config = spec.train
    if config.tensorboard:
        tensorboard.check_available()
    # Absolute paths, so `evaluate` and `--resume` find the data from any working directory.
    data = replace(spec.data, root=Path(spec.data.root).resolve(),
                   source=Path(spec.data.source).resolve() if spec.data.source else None)  # fmt: skip
    spec = replace(spec, data=data)
    if run_dir is None:
        ensure_writable_folder(out)  # an unwritable or full --out fails now, not after preparing and probing
    device = select_device(config.device)
    device, rank = resources.join_process_group(device)
    main = rank in (None, 0)  # under torchrun only rank 0 writes the run directory and talks to the user
    if not main:
        silence_process()
        progress = None
    prepared = resources.prepared(data)
    seed_everything(config.seed, config.deterministic)
    plan = plan_model(prepared)
    plan.extra.update(extra or {})
    model, model_spec = plan.model, plan.spec
    if spec.model.name is None:  # the spec records the model actually built (a default, or a parent run's)
        spec = replace(spec, model=replace(spec.model, name=model_spec.name))
    counts = budget(model, prepared.input_spec)
    check_budget(counts, config.max_params, model=model_spec.name)  # before any training, and before any run folder
    fmt = resources.choose_format(model, model_spec, prepared, config, device)
    if rank is not None:  # one format for all ranks: rank 0's measurement
        import torch.distributed as dist

        choice = [fmt]
        dist.broadcast_object_list(choice, src=0)
        fmt = choice[0]
    resources.apply_threads(fmt)
    if fmt.choice is not None and rank is None:  # a run much slower than the probe promised flags its cache entry
        callbacks = [*callbacks, PromiseWatch.for_choice(fmt.choice)]
    # The trainer before any run directory: its checks (penalised layers, a validation split for early stopping,
    # batch size per process) fail first.
    trainer = build_trainer(model, prepared, config, device, precision=fmt.precision, channels_last=fmt.channels_last,
                            normalization=(plan.normalization["mean"], plan.normalization["std"]),
                            trained_module=plan.trained_module, callbacks=plan.callbacks)  # fmt: skip
    if not main:
        return _follow(trainer, state)
    # what TensorBoard is told once (the settings) and traces once (an input of the model's shape)
    watch = (spec.flat(), model_spec.input) if config.tensorboard else None
    if run_dir is None:
        run_dir = RunDir.create(out, model=model_spec.name, dataset=data.dataset, seed=config.seed)
        with RunLock(run_dir.path):  # held until the summary is written
            run_dir.write_config(RunConfig.from_dict({
                "cnnbench_version": __version__,
                "kind": plan.kind,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "spec": spec.to_dict(),
                "data": data.to_dict(),
                "prepared": {"directory": str(prepared.directory), "split_hashes": prepared.manifest["split_hashes"],
                             "counts": {k: v["total"] for k, v in prepared.manifest["counts"].items()},
                             "synthetic": prepared.manifest.get("synthetic", False)},
                "train": config.to_dict(),
                "model": model_spec.to_dict(),
                "normalization": plan.normalization,
                **plan.extra,  # the kind's sections (parent, finetune, pruning) and the caller's records (trial)
                "params": counts,
                "device": {**device_info(device), "precision": fmt.precision, "channels_last": fmt.channels_last,
                           "format_probe_images_per_s": fmt.probe,  # device_info's threads: the count applied
                           "format_choice": fmt.choice},  # the probe's answer: cache entry, promise, cached or not
                "versions": package_versions(),
                "git": git_revision(),
                "schema": SCHEMA,
            }))  # fmt: skip
            return _fit_into(run_dir, trainer, counts, state=None, progress=progress, callbacks=callbacks, watch=watch)
    run_dir.remove_stale_temp_files()  # a killed writer's half-written files; its caller holds the lock
    saved = run_dir.read_config()  # a resumed run
    saved.train.update(epochs=config.epochs, device=config.device)
    if saved.spec is not None:
        saved.spec["train"].update(epochs=config.epochs, device=config.device)
    saved.resumed.append(time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    run_dir.write_config(saved)
    run_dir.clear_summary()  # the run is live again; a stale "interrupted" must not show while it trains
    return _fit_into(run_dir, trainer, counts, state=state, progress=progress, callbacks=callbacks, watch=watch)


def _fit_into(run_dir: RunDir, trainer, counts: dict[str, Any], *, state: dict[str, Any] | None, progress: Any,
              callbacks: list[Any] | tuple[Any, ...], watch: tuple[dict[str, Any], Any] | None = None
              ) -> RunResult:  # fmt: skip
    """Train with the run directory's writer as the first callback (and, given `watch`, TensorBoard's beside it),
    and end with the summary whatever happens."""
    logger.info(f"run directory: {run_dir.path}")
    board = tensorboard.TensorBoardWriter(run_dir.path, *watch) if watch else None
    # The writer first, so a callback that stops the run (a search's pruner) does so after the epoch is on disk.
    trainer.callbacks = [RunWriter(run_dir, trainer.config.monitor), *([board] if board else []), *trainer.callbacks,
                         *(cb if isinstance(cb, Callback) else EpochCallback(cb) for cb in callbacks)]
    if state is not None:
        trainer.load_state_dict(state)
        run_dir.truncate_metrics(trainer.epoch)
        logger.info(f"resuming after epoch {trainer.epoch}")
    started = time.perf_counter()

    def finish(status: str, **extra: Any) -> RunResult:
        # What pruning left is measured from the weights as they end (the best checkpoint's, once completed): a
        # polynomial schedule or a resumed pruned run starts denser than it ends, and config.json has the start.
        measured = count_parameters(trainer.model)
        ended = {**counts, "nonzero": measured["nonzero"], "sparsity": measured["sparsity"]}
        summary = _summary(run_dir, trainer, status, ended, time.perf_counter() - started, **extra)
        _draw_curves(run_dir)
        if board is not None:
            board.close()
        run_dir.write_summary(summary)
        return RunResult(run=run_dir, status=status, summary=summary.to_dict())

    resume_with = f"cnnbench train --resume {run_dir.path}"
    try:
        trainer.fit(progress=progress)
    except Terminated:
        return finish("interrupted", signal="SIGTERM", resume_with=resume_with)
    except KeyboardInterrupt:
        return finish("interrupted", resume_with=resume_with)
    except StopRun as stop:
        return finish(stop.status, reason=stop.reason)
    except Exception as error:
        finish("failed", error=f"{type(error).__name__}: {error}")
        raise
    if trainer.early.best_epoch and run_dir.checkpoint_path("best").is_file():
        trainer.model.load_state_dict(run_dir.load_checkpoint("best", map_location=trainer.device)["model"])
    return finish("completed")


def run_curves(run_dir: Path) -> Path | None:
    """Draw the run's train and validation loss and accuracy per epoch into RUN/curves.png; None (and nothing written)
    when metrics.csv has no complete row yet or cannot be read (a damaged file: no curve beats a wrong one)."""
    run = RunDir(Path(run_dir))
    try:
        rows = run.metrics()
    except DamagedRun:
        return None
    if not rows:
        return None
    return plots.curves(rows, run.name, run.path / plots.CURVES_FILE)


def _draw_curves(run_dir: RunDir) -> None:
    """RUN/curves.png, before summary.json (written last); a picture that cannot be written never fails the run."""
    try:
        run_curves(run_dir.path)
    except OSError as error:
        logger.warning(f"{run_dir.path / 'curves.png'} not drawn ({error.strerror or error})")


def _follow(trainer, state: dict[str, Any] | None) -> RunResult:
    """A rank other than 0: the same training steps on its shard, writing nothing."""
    if state is not None:
        trainer.load_state_dict(state)
    try:
        trainer.fit()
    except StopRun as stop:  # every rank sees the same reduced losses, so every rank stops at the same epoch
        return RunResult(run=None, status=stop.status, summary={})
    return RunResult(run=None, status="completed", summary={})


def _summary(run: RunDir, trainer, status: str, counts: dict[str, int], seconds: float, **extra: Any) -> RunSummary:
    rows = run.metrics()
    best_epoch = trainer.early.best_epoch
    best = next((r for r in rows if int(r["epoch"]) == best_epoch), rows[-1] if rows else {})
    per_epoch = [r["seconds"] for r in rows]
    throughput = [r["images_per_s"] for r in rows]
    return RunSummary(
        status=status,
        epochs_completed=trainer.epoch,
        epochs_planned=trainer.config.epochs,
        stopped_early=status == "completed" and trainer.epoch < trainer.config.epochs,
        best_epoch=best_epoch,
        monitor=trainer.config.monitor,
        best={k: best.get(k, math.nan) for k in ("train_loss", "train_acc", "val_loss", "val_acc")},
        params=counts,
        seconds_this_session=round(seconds, 3),
        seconds_per_epoch_median=statistics.median(per_epoch) if per_epoch else None,
        images_per_s_median=statistics.median(throughput) if throughput else None,
        device=trainer.device.type,
        precision=trainer.precision,
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,  # reason, error, signal, resume_with
    )
