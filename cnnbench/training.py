"""`train_run`: prepare the data, build the model, check its budget, and train it into a run directory.

This is the one function behind `cnnbench train` (and later a tuning trial or a fine-tune): it owns the run
directory's life cycle (config first, a metrics row and checkpoint each epoch, summary last) and leaves the loops to
the engine.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from cnnbench import __version__
from cnnbench.config import TrainConfig
from cnnbench.data.prepare import Prepared, PrepareOptions, load_or_prepare
from cnnbench.environment import device_info, git_revision, package_versions
from cnnbench.errors import CheckFailed, UsageError
from cnnbench.runs import RunDir

Log = Callable[[str], None]


@dataclass
class RunResult:
    run: RunDir | None  # None on a torchrun rank other than 0, which writes nothing
    status: str
    summary: dict[str, Any]


def check_budget(counts: dict[str, int], max_params: int | None, *, model: str, count: str = "trainable") -> None:
    if max_params is not None and counts[count] > max_params:
        raise CheckFailed(f"{model} has {counts[count]:,} {count.replace('_', ' ')} parameters, over the budget of "
                          f"{max_params:,}")  # fmt: skip


def seed_everything(seed: int, deterministic: bool) -> None:
    import os
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def train_run(data: PrepareOptions, config: TrainConfig, *, out: Path = Path("results/runs"),
              progress: Any = None, log: Log | None = None,
              on_epoch_end: Callable[[Any], None] | None = None) -> RunResult:  # fmt: skip
    """Train `config.model` from scratch on `data` into a new run directory under `out`."""

    def scratch(prepared: Prepared) -> ModelPlan:
        from cnnbench.engine import initialise
        from cnnbench.models import build_model

        model, spec = build_model(config.model, prepared.input_spec, dropout=config.dropout)
        initialise(model, config.init)
        return ModelPlan(model=model, spec=spec, normalization=dataset_normalization(prepared))

    return train_with_plan(data, config, scratch, out=out, progress=progress, log=log, on_epoch_end=on_epoch_end)


@dataclass
class ModelPlan:
    """The model a run trains, how to rebuild it, the input normalisation it expects, and run-level facts
    (kind, parent run, weights source) that go into config.json."""

    model: Any
    spec: Any  # cnnbench.models.ModelSpec
    normalization: dict[str, Any]
    kind: str = "train"
    extra: dict[str, Any] = field(default_factory=dict)


def dataset_normalization(prepared: Prepared) -> dict[str, Any]:
    return {"mean": prepared.mean, "std": prepared.std, "source": "train split statistics"}


def resume_run(path: Path, *, epochs: int | None = None, device: str | None = None, progress: Any = None,
               log: Log | None = None, on_epoch_end: Callable[[Any], None] | None = None) -> RunResult:  # fmt: skip
    """Continue the run at `path` from its last checkpoint, exactly as if it had not stopped.

    Only the total number of epochs (to train a finished run further) and the device may change.
    """
    run = RunDir.open(path)
    saved = run.config()
    config = TrainConfig.from_dict(saved["train"])
    config = replace(config, epochs=epochs or config.epochs, device=device or config.device)
    if device is None:  # the same device trains on exactly as before: no new format probe
        config = replace(config, precision=saved["device"]["precision"], channels_last=saved["device"]["channels_last"],
                         threads=saved["device"].get("threads"))
    if not run.checkpoint_path("last").is_file():
        raise UsageError(f"{run.name} has no checkpoints/last.pt to resume from (it stopped before its first epoch)")
    state = run.load_checkpoint("last")
    finished = run.status() == "completed" and epochs is None  # e.g. stopped early: more needs an explicit --epochs
    if state["epoch"] >= config.epochs or finished:
        raise UsageError(f"{run.name} already completed {state['epoch']} epochs; pass --epochs N with N larger "
                         f"to train it further")  # fmt: skip
    def rebuild(prepared: Prepared) -> ModelPlan:
        from cnnbench.models import ModelSpec, build

        spec = ModelSpec.from_dict(saved["model"])
        return ModelPlan(model=build(spec), spec=spec, normalization=saved["normalization"], kind=saved["kind"])

    return train_with_plan(PrepareOptions.from_dict(saved["data"]), config, rebuild, run=run, state=state, progress=progress,
                  log=log, on_epoch_end=on_epoch_end)  # fmt: skip


def train_with_plan(data: PrepareOptions, config: TrainConfig, plan_model: Callable[[Prepared], ModelPlan], *,
           out: Path | None = None, run: RunDir | None = None, state: dict[str, Any] | None = None,
           progress: Any = None, log: Log | None = None,
           on_epoch_end: Callable[[Any], None] | None = None) -> RunResult:  # fmt: skip
    """The one training path behind train, finetune and resume: everything but how the model is made."""
    import torch

    from cnnbench.engine import Trainer, select_device
    from cnnbench.models.accounting import budget

    log = log or (lambda message: None)
    # Absolute paths, so `evaluate` and `--resume` find the data from any working directory.
    data = replace(data, root=Path(data.root).resolve(), source=Path(data.source).resolve() if data.source else None)
    device = select_device(config.device)
    device, rank = join_process_group(device)
    main = rank in (None, 0)  # under torchrun only rank 0 writes the run directory and talks to the user
    if not main:
        log, progress = (lambda message: None), None
    prepared = load_or_prepare(data, log=log)
    seed_everything(config.seed, config.deterministic)
    plan = plan_model(prepared)
    model, model_spec = plan.model, plan.spec
    counts = budget(model, prepared.input_spec)
    check_budget(counts, config.max_params, model=model_spec.name)  # before any training, and before any run folder
    fmt = choose_format(model, model_spec, prepared, config, device, log)
    if rank is not None:  # one format for all ranks: rank 0's measurement
        import torch.distributed as dist

        choice = [fmt]
        dist.broadcast_object_list(choice, src=0)
        fmt = choice[0]
    apply_threads(fmt)
    # The trainer before any run directory: its checks (penalised layers, a validation split for early stopping,
    # batch size per process) fail first.
    trainer = Trainer(model=model, prepared=prepared, config=config, device=device, precision=fmt.precision,
                      channels_last=fmt.channels_last,
                      normalization=(plan.normalization["mean"], plan.normalization["std"]))  # fmt: skip
    if not main:
        return _follow(trainer, state)
    if trainer.cached_features:
        log("backbone frozen and no augmentation: training the head on backbone features computed once")
    if run is None:
        run = RunDir.create(out, model=model_spec.name, dataset=data.dataset, seed=config.seed)
        run.write_config({
            "cnnbench_version": __version__,
            "kind": plan.kind,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "data": data.to_dict(),
            "prepared": {"directory": str(prepared.directory), "split_hashes": prepared.manifest["split_hashes"],
                         "counts": {k: v["total"] for k, v in prepared.manifest["counts"].items()},
                         "synthetic": prepared.manifest.get("synthetic", False)},
            "train": config.to_dict(),
            "model": model_spec.to_dict(),
            "normalization": plan.normalization,
            **plan.extra,
            "params": counts,
            "device": {**device_info(device), "precision": fmt.precision, "channels_last": fmt.channels_last,
                       "format_probe_images_per_s": fmt.probe},  # device_info's threads: the count applied
            "versions": package_versions(),
            "git": git_revision(),
        })  # fmt: skip
    else:
        saved = run.config()
        saved["train"].update(epochs=config.epochs, device=config.device)
        saved.setdefault("resumed", []).append(time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        run.write_config(saved)
        run.clear_summary()  # the run is live again; a stale "interrupted" must not show while it trains
    log(f"run directory: {run.path}")

    if state is not None:
        trainer.load_state_dict(state)
        run.truncate_metrics(trainer.epoch)
        log(f"resuming after epoch {trainer.epoch}")
    started = time.perf_counter()

    def save_epoch(result) -> None:
        run.append_metrics(result.row())  # the row first: a crash before the checkpoint only re-runs this epoch
        if result.improved:
            run.save_checkpoint("best", {"model": model.state_dict(), "epoch": result.epoch,
                                         "monitor": config.monitor})  # fmt: skip
        run.save_checkpoint("last", trainer.state_dict())
        if on_epoch_end is not None:
            on_epoch_end(result)

    def finish(status: str, **extra: Any) -> RunResult:
        summary = _summary(run, trainer, status, counts, time.perf_counter() - started, **extra)
        run.write_summary(summary)
        return RunResult(run=run, status=status, summary=summary)

    try:
        trainer.fit(on_epoch_end=save_epoch, progress=progress)
    except KeyboardInterrupt:
        return finish("interrupted", resume_with=f"cnnbench train --resume {run.path}")
    except Exception as error:
        finish("failed", error=f"{type(error).__name__}: {error}")
        raise
    finally:
        leave_process_group()
    if trainer.early.best_epoch and run.checkpoint_path("best").is_file():
        model.load_state_dict(torch.load(run.checkpoint_path("best"), weights_only=True)["model"])
    return finish("completed")


def join_process_group(device):
    """Under torchrun (WORLD_SIZE > 1): join the process group (gloo on CPU, nccl on CUDA) and take this rank's GPU.

    Returns (device, rank), rank None when running alone."""
    import os

    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device, None
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device, dist.get_rank()


def leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _follow(trainer, state: dict[str, Any] | None) -> RunResult:
    """A rank other than 0: the same training steps on its shard, writing nothing."""
    if state is not None:
        trainer.load_state_dict(state)
    try:
        trainer.fit()
    finally:
        leave_process_group()
    return RunResult(run=None, status="completed", summary={})


class Format(NamedTuple):
    """How the engine runs a model on a device: what choose_format picked and train_with_plan applies."""

    precision: str
    channels_last: bool
    threads: int | None  # CPU threads; None leaves PyTorch's default (GPUs)
    probe: dict  # the CPU probe's images/s per candidate, {} when nothing was measured


def choose_format(model, model_spec, prepared: Prepared, config: TrainConfig, device, log: Log) -> Format:
    """Precision, memory format and CPU threads: as given, else CUDA's best practice, else measured on this CPU."""
    from cnnbench.engine import resolve_precision
    from cnnbench.models.transfer import backbone_frozen

    precision = resolve_precision(config.precision, device)  # refuses what the device cannot do (fp16 on a CPU)
    unset = config.precision == "auto" or config.channels_last is None or config.threads is None
    if device.type == "cpu" and unset and not backbone_frozen(model):
        from cnnbench.autotune import choose_cpu_format

        spec = prepared.input_spec
        precision, channels_last, threads, probe = choose_cpu_format(
            model, (spec.channels, spec.height, spec.width), config.batch_size, key={"model": model_spec.to_dict()},
            precision=config.precision, channels_last=config.channels_last, threads=config.threads)  # fmt: skip
        if probe:
            log(f"fastest on this CPU: {precision}, {'channels_last' if channels_last else 'contiguous'}, {threads} "
                f"threads (probed {', '.join(f'{k} {v:,.0f} img/s' for k, v in probe.items())}; cached)")  # fmt: skip
        return Format(precision, channels_last, threads, probe)
    channels_last = config.channels_last if config.channels_last is not None else device.type == "cuda"
    return Format(precision, channels_last, config.threads if device.type == "cpu" else None, {})


def apply_threads(fmt: Format) -> None:
    """The run's CPU thread count, or PyTorch's default when it has none (so one run's choice does not carry over to
    the next run in the same process, as in a study)."""
    import torch

    from cnnbench.engine import DEFAULT_THREADS

    torch.set_num_threads(fmt.threads or DEFAULT_THREADS)


def _summary(run: RunDir, trainer, status: str, counts: dict[str, int], seconds: float, **extra: Any):
    rows = run.metrics()
    best_epoch = trainer.early.best_epoch
    best = next((r for r in rows if int(r["epoch"]) == best_epoch), rows[-1] if rows else {})
    per_epoch = [r["seconds"] for r in rows]
    throughput = [r["images_per_s"] for r in rows]
    return {
        "status": status,
        "epochs_completed": trainer.epoch,
        "epochs_planned": trainer.config.epochs,
        "stopped_early": status == "completed" and trainer.epoch < trainer.config.epochs,
        "best_epoch": best_epoch,
        "monitor": trainer.config.monitor,
        "best": {k: best.get(k, math.nan) for k in ("train_loss", "train_acc", "val_loss", "val_acc")},
        "params": counts,
        "seconds_this_session": round(seconds, 3),
        "seconds_per_epoch_median": statistics.median(per_epoch) if per_epoch else None,
        "images_per_s_median": statistics.median(throughput) if throughput else None,
        "device": trainer.device.type,
        "precision": trainer.precision,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }
