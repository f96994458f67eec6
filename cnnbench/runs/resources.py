"""What the runs in one process share: prepared datasets, CPU format choices and the process group.

A study or a search runs many runs in one process. Each run used to read the prepared cache from disk again, look its
format choice up again and join and leave the process group; here each is resolved once per process and handed to
every run that shares it. Everything a run changes globally (threads, deterministic algorithms, seeds) is set again
by the next run (training.seed_everything, apply_threads), so one run's stop or failure leaves the next one unaffected.
"""

from __future__ import annotations

import atexit
import json
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any, NamedTuple

from cnnbench.spec.train import TrainConfig
from cnnbench.data.prepare import Prepared, PrepareOptions, load_or_prepare, prepared_dir, read_manifest

logger = logging.getLogger(__name__)


# A few prepared datasets stay in memory: a search trains many runs on one, a study moves between a handful; more
# would hold every dataset of a long study in memory at once.
PREPARED_KEPT = 4
_prepared: OrderedDict[Path, Prepared] = OrderedDict()
_formats: dict[str, Format] = {}


def prepared(options: PrepareOptions) -> Prepared:
    """The prepared dataset for `options`, read (or prepared) once per process. A cache folder that was deleted or
    prepared again since it was read is read again."""
    directory = prepared_dir(options)
    held = _prepared.get(directory)
    if held is not None and _manifest_now(directory) == held.manifest:
        _prepared.move_to_end(directory)
        return held
    result = load_or_prepare(options)
    _prepared[directory] = result
    while len(_prepared) > PREPARED_KEPT:
        _prepared.popitem(last=False)
    return result


def _manifest_now(directory: Path) -> dict | None:
    """The cache's manifest as it is on disk now; None when it is gone or damaged (load_or_prepare then says why)."""
    from cnnbench.core.errors import UsageError

    try:
        return read_manifest(directory) if (directory / "manifest.json").is_file() else None
    except UsageError:
        return None


def forget() -> None:
    """Drop what this process holds (tests; a long-lived process that wants its memory back)."""
    _prepared.clear()
    _formats.clear()


class Format(NamedTuple):
    """How the engine runs a model on a device: what choose_format picked and train_with_plan applies."""

    precision: str
    channels_last: bool
    threads: int | None  # CPU threads; None leaves PyTorch's default
    probe: dict  # the CPU probe's images/s per candidate, {} when nothing was measured
    choice: dict | None = None  # autotune's FormatChoice.choice: its cache entry, what it promised, whether cached


def choose_format(model, model_spec, prepared: Prepared, config: TrainConfig, device) -> Format:
    """Precision, memory format and CPU threads: as given, else CUDA's best practice, else measured on this CPU
    (once per process for the same model, input, batch size and request; the probe's own cache spans processes)."""
    from cnnbench.engine import resolve_precision
    from cnnbench.models.transfer import backbone_frozen

    precision = resolve_precision(config.precision, device)  # refuses what the device cannot do (fp16 on a CPU)
    unset = config.precision == "auto" or config.channels_last is None or config.threads is None
    if device.type == "cpu" and unset and not backbone_frozen(model):
        spec = prepared.input_spec
        key = json.dumps([model_spec.to_dict(), vars(spec), config.batch_size, config.precision, config.channels_last,
                          config.threads], sort_keys=True, default=str)  # fmt: skip
        if key not in _formats:
            from cnnbench.engine.autotune import choose_cpu_format, describe_choice

            chosen, channels_last, threads, probe, choice = choose_cpu_format(
                model, (spec.channels, spec.height, spec.width), config.batch_size,
                key={"model": model_spec.to_dict()}, precision=config.precision, channels_last=config.channels_last,
                threads=config.threads)  # fmt: skip
            if choice is not None:  # None when every option was given: nothing measured, nothing promised
                logger.info(describe_choice(choice))
            _formats[key] = Format(chosen, channels_last, threads, probe, choice)
        return _formats[key]
    channels_last = config.channels_last if config.channels_last is not None else device.type == "cuda"
    return Format(precision, channels_last, config.threads, {})  # --threads holds on a GPU too (data work runs on the CPU)


def apply_threads(fmt: Format) -> None:
    """The run's CPU thread count, or PyTorch's default when it has none (so one run's choice does not carry over to
    the next run in the same process, as in a study)."""
    import torch

    from cnnbench.engine import DEFAULT_THREADS

    torch.set_num_threads(fmt.threads or DEFAULT_THREADS)


def join_process_group(device) -> tuple[Any, int | None]:
    """Under torchrun (WORLD_SIZE > 1): join the process group (gloo on CPU, nccl on CUDA) once per process and take
    this rank's GPU; the group is left when the process exits. Returns (device, rank), rank None when alone."""
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
        atexit.register(leave_process_group)
    return device, dist.get_rank()


def leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
