"""The training and evaluation loops: one engine for CPU, CUDA and MPS.

The engine knows nothing of files, the CLI or Optuna. A `Trainer` runs the loop over parts (model, batches,
preprocessing, optimizer, schedule, early stopping) that `build_trainer` assembles from a model, a prepared dataset and
a TrainConfig, and calls its `Callback`s at the start, after every step and after every epoch: the run directory's
writer is one, a fine-tune's feature cache another, a search's trial pruner or a pruning schedule more. Any of them
may end the run with a named status (`StopRun`). Its whole state round-trips through `state_dict()`, so a resumed run
continues exactly.

Speed choices, and why:
- Data that fits in memory lives on the device as one uint8 tensor; a batch is an index slice, converted, normalised
  and augmented as a whole batch on the device (no per-sample Python or PIL work).
- No host synchronisation inside the step: loss and accuracy are summed on the device and read once per epoch (and
  when the progress display asks, a few times a second).
- On CUDA: bf16 autocast where supported (else fp16 with a gradient scaler), channels_last, optional torch.compile.
"""

from __future__ import annotations

import fnmatch
import functools
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from cnnbench.config import TrainConfig
from cnnbench.data.augment import AugmentSpec, parse_augment
from cnnbench.data.prepare import Prepared, SplitData
from cnnbench.errors import UsageError

# --- device and precision ---------------------------------------------------------------------------------------------


def select_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise UsageError(f"bad --device {requested!r}: choose auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {requested}: CUDA is not available on this machine; use --device cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {requested}: MPS is not available on this machine; use --device cpu or auto")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"bad --device {requested!r}: choose auto, cpu, cuda, cuda:N or mps")
    return device


def resolve_precision(requested: str, device: torch.device) -> str:
    if requested != "auto":
        if requested == "fp16" and device.type == "cpu":
            raise UsageError("--precision fp16 needs a GPU; on the CPU use bf16 or fp32")
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# PyTorch's default thread count in this process, read at import, before any run applies its own (--threads, autotune)
DEFAULT_THREADS = torch.get_num_threads()


@functools.cache  # once per process
def keep_freed_memory_for_reuse() -> bool:
    """Make glibc's malloc keep freed memory in the process instead of returning it to the system; once per process.

    PyTorch's CPU tensors come from malloc, and glibc serves each large one (>= 128 KiB, then up to 32 MiB as its
    threshold adapts) with a fresh mmap that it unmaps on free: every training step then pays the kernel to fault in
    and zero its activations again. For S4's 200x200 models that was most of the system time: catsdogs-base trained
    at 60 img/s with 5.2 s of system time per 8 steps, and at 100 img/s with 0.1 s after this call (2-core CPU,
    benchmarks/train_speed.py). The cost: memory freed during training is kept for reuse, not handed back.
    CNNBENCH_MALLOC=system leaves malloc as it is. Returns whether it applied (glibc only).
    """
    if os.environ.get("CNNBENCH_MALLOC", "").lower() == "system":
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows)
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


def dense_layers_in_fp32(model: nn.Module) -> nn.Module:
    """Run the model's nn.Linear layers in fp32 under CPU bf16 autocast; convolutions keep bf16.

    Autocast casts a Linear weight to bf16 on every forward pass and its bf16 gradient back to fp32 (from a transposed
    layout, which is slow on a CPU): for S4's 80,000x256 dense layer at batch 64 the copies cost more than the bf16
    matmul saves, and the catsdogs-base training step ran about 1.2x faster with it in fp32 (2-core CPU; no change
    measured for the small models). The layer's own forward is replaced on the instance: same module, same state dict.
    """
    for module in model.modules():
        if type(module) is nn.Linear:  # a subclass keeps its own forward
            module.forward = functools.partial(_linear_fp32, module)  # type: ignore[method-assign]
    return model


def _linear_fp32(module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", enabled=False):
        return F.linear(x.to(module.weight.dtype), module.weight, module.bias)


# --- batches ----------------------------------------------------------------------------------------------------------


class InMemoryBatches:
    """A split held as one uint8 tensor on the device; batches are index slices."""

    def __init__(self, split: SplitData, batch_size: int, device: torch.device, shard: tuple[int, int] = (0, 1)) -> None:
        self.images = split.images.to(device)
        self.labels = split.labels.to(device)
        self.batch_size = batch_size
        self.device = device
        self.shard = shard  # (rank, world size): under DDP each rank takes its share of every global batch

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    @property
    def num_images(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iterate(None)

    def iterate(self, generator: torch.Generator | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        if generator is None:
            for start in range(0, n, self.batch_size):
                yield self.images[start : start + self.batch_size], self.labels[start : start + self.batch_size]
            return
        for idx in shuffled_batches(n, self.batch_size, generator, self.shard, device=self.device):
            # index_select, not images[idx]: about 15x faster for a batch of small images on a CPU
            yield self.images.index_select(0, idx), self.labels.index_select(0, idx)


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator, shard: tuple[int, int] = (0, 1),
                     device: torch.device | None = None) -> Iterator[torch.Tensor]:  # fmt: skip
    """Index batches of one shuffled epoch. Every rank draws the same permutation and keeps every world-th index of
    each global batch, so N processes see exactly the batches one process would, split N ways."""
    rank, world = shard
    order = torch.randperm(n, generator=generator).to(device or "cpu")  # one copy per epoch, not one per batch
    for start in range(0, n, batch_size):
        batch = order[start : start + batch_size]
        if len(batch) >= world:  # a last batch smaller than the number of processes would leave a rank empty
            yield batch[rank::world]


class StreamBatches:
    """A split kept on disk as a file index, decoded by DataLoader workers into uint8 batches."""

    def __init__(self, split: SplitData, batch_size: int, device: torch.device, *, size: int, channels: int,
                 workers: int | None, shard: tuple[int, int] = (0, 1)) -> None:  # fmt: skip
        from cnnbench.data.images import ImageFileDataset

        self.dataset = ImageFileDataset(split.paths, split.labels.tolist(), size, channels)
        self.batch_size = batch_size
        self.device = device
        self.workers = min(4, DEFAULT_THREADS) if workers is None else workers  # not the run's (maybe fewer) threads
        self.shard = shard

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    @property
    def num_images(self) -> int:
        return len(self.dataset)

    def iterate(self, generator: torch.Generator | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if generator is None:
            batches = [range(s, min(s + self.batch_size, len(self.dataset)))
                       for s in range(0, len(self.dataset), self.batch_size)]  # fmt: skip
        else:  # the same batches as the in-memory path (and sharded the same way under DDP)
            batches = [b.tolist() for b in shuffled_batches(len(self.dataset), self.batch_size, generator, self.shard)]
        loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=batches, num_workers=self.workers,
                                             pin_memory=self.device.type == "cuda")  # fmt: skip
        for images, labels in loader:
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)


def make_batches(prepared: Prepared, split: str, batch_size: int, device: torch.device, workers: int | None = None,
                 shard: tuple[int, int] = (0, 1)):  # fmt: skip
    data = prepared.splits[split]
    if prepared.in_memory:
        return InMemoryBatches(data, batch_size, device, shard)
    spec = prepared.input_spec
    return StreamBatches(data, batch_size, device, size=spec.height, channels=spec.channels, workers=workers,
                         shard=shard)  # fmt: skip


class Preprocess:
    """uint8 batch -> normalised float batch (augmented in training), in the model's memory format."""

    def __init__(self, mean: list[float], std: list[float], device: torch.device, *, augment: AugmentSpec,
                 channels_last: bool) -> None:  # fmt: skip
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.inv_std = 1.0 / torch.tensor(std, device=device).view(1, -1, 1, 1)
        # (x / 255 - mean) / std as one multiply and one add over the batch
        self.scale, self.shift = self.inv_std / 255.0, -self.mean * self.inv_std
        self.augment = augment
        self.channels_last = channels_last

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if generator is not None and self.augment.enabled:
            from cnnbench.data.augment import augment_batch

            x = augment_batch(images.float().div_(255.0), self.augment, generator)  # augmentation works in [0, 1]
            x = (x - self.mean).mul_(self.inv_std)
        else:
            x = (images * self.scale).add_(self.shift)  # uint8 * float32 -> float32; broadcasts gray to RGB
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


# --- losses -----------------------------------------------------------------------------------------------------------


def batch_loss(logits: torch.Tensor, labels: torch.Tensor, *, label_smoothing: float = 0.0,
               reduction: str = "mean") -> torch.Tensor:  # fmt: skip
    """Cross-entropy, or binary cross-entropy when the model has one sigmoid logit (two-class S4 models)."""
    logits = logits.float()
    if logits.shape[1] == 1:
        target = labels.float()
        if label_smoothing:
            target = target * (1.0 - label_smoothing) + 0.5 * label_smoothing
        return F.binary_cross_entropy_with_logits(logits[:, 0], target, reduction=reduction)
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing, reduction=reduction)


def predicted(logits: torch.Tensor) -> torch.Tensor:
    return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits)
        return torch.cat([1 - p, p], dim=1)
    return torch.softmax(logits, dim=1)


# --- optimizers and schedules -----------------------------------------------------------------------------------------

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": lambda groups, c, fused: torch.optim.Adam(groups, lr=c.lr, betas=(c.beta1, c.beta2),
                                                      weight_decay=c.weight_decay, fused=fused),
    "adamw": lambda groups, c, fused: torch.optim.AdamW(groups, lr=c.lr, betas=(c.beta1, c.beta2),
                                                        weight_decay=c.weight_decay, fused=fused),
    "sgd": lambda groups, c, fused: torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum,
                                                    nesterov=c.nesterov and c.momentum > 0,
                                                    weight_decay=c.weight_decay, fused=fused),
    "rmsprop": lambda groups, c, fused: torch.optim.RMSprop(groups, lr=c.lr, momentum=c.momentum,
                                                            weight_decay=c.weight_decay),  # torch has no fused RMSprop
}  # fmt: skip


class LRSchedule:
    """Learning-rate factor per optimizer step: warmup x (constant | step | cosine | onecycle), x a plateau factor.

    Written here rather than composed from torch.optim.lr_scheduler because warmup + ReduceLROnPlateau do not chain
    there, and because its whole state is three numbers that resume exactly. `onecycle` follows torch's OneCycleLR
    defaults (rise from lr/25 over 30% of the steps, cosine down to lr/1e4).
    """

    def __init__(self, config: TrainConfig, steps_per_epoch: int) -> None:
        self.config = config
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.plateau_factor = 1.0
        self.plateau_best = math.inf
        self.plateau_bad_epochs = 0

    def factor(self, step: int) -> float:
        c = self.config
        epoch = step / self.steps_per_epoch
        warmup_steps = c.warmup_epochs * self.steps_per_epoch
        warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
        if c.schedule == "step":
            shape = c.gamma ** int(epoch // c.step_size)
        elif c.schedule == "cosine":
            progress = min(1.0, max(0.0, (step - warmup_steps) / max(1.0, self.total_steps - warmup_steps)))
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        elif c.schedule == "onecycle":
            rise = 0.3 * self.total_steps
            if step < rise:
                shape = 1 / 25 + (1 - 1 / 25) * step / rise
            else:
                progress = min(1.0, (step - rise) / max(1.0, self.total_steps - rise))
                shape = 1e-4 + (1 - 1e-4) * 0.5 * (1.0 + math.cos(math.pi * progress))
            warm = 1.0
        else:
            shape = 1.0
        return warm * shape * self.plateau_factor

    def end_epoch(self, val_loss: float) -> None:
        if self.config.schedule != "plateau" or math.isnan(val_loss):
            return
        if val_loss < self.plateau_best - 1e-12:
            self.plateau_best, self.plateau_bad_epochs = val_loss, 0
        else:
            self.plateau_bad_epochs += 1
            if self.plateau_bad_epochs >= self.config.plateau_patience:
                self.plateau_factor *= self.config.gamma
                self.plateau_bad_epochs = 0

    def state_dict(self) -> dict[str, float]:
        return {"plateau_factor": self.plateau_factor, "plateau_best": self.plateau_best,
                "plateau_bad_epochs": self.plateau_bad_epochs}  # fmt: skip

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.plateau_factor = float(state["plateau_factor"])
        self.plateau_best = float(state["plateau_best"])
        self.plateau_bad_epochs = int(state["plateau_bad_epochs"])


def penalized_weights(model: nn.Module, pattern: str) -> list[torch.Tensor]:
    """Weights (not biases, not BatchNorm) of conv and linear layers whose module name matches `pattern`."""
    chosen = [
        module.weight
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear)) and fnmatch.fnmatch(name, pattern) and module.weight.requires_grad
    ]
    if not chosen:
        raise UsageError(f"--reg-layers {pattern!r} matches no conv or linear layer of this model")
    return chosen


def initialise(model: nn.Module, scheme: str) -> None:
    """`glorot`: Keras' default (Glorot-uniform kernels, zero biases); `he`: He-uniform (S4's ReLU layers)."""
    if scheme == "default":
        return
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            if scheme == "glorot":
                nn.init.xavier_uniform_(module.weight)
            else:
                nn.init.kaiming_uniform_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


# --- the trainer ------------------------------------------------------------------------------------------------------


@dataclass
class EpochResult:
    epoch: int  # 1-based
    lr: float
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    seconds: float
    images_per_s: float
    improved: bool  # best so far on the monitored metric
    stop: bool  # early stopping triggered

    def row(self) -> dict[str, float | int]:
        return {k: v for k, v in vars(self).items() if k not in ("improved", "stop")}


class Progress(Protocol):
    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None: ...
    def batch(self, done: int, stats: Callable[[], tuple[float, float, float]]) -> None: ...
    def end_epoch(self, result: EpochResult) -> None: ...


@dataclass
class EarlyStopping:
    monitor: str
    patience: int
    min_delta: float
    best: float = math.nan
    best_epoch: int = 0
    bad_epochs: int = 0

    def update(self, epoch: int, value: float) -> tuple[bool, bool]:
        """Returns (improved, stop)."""
        sign = -1.0 if self.monitor == "val_loss" else 1.0
        # With no validation split (NaN), the latest epoch is the best one: there is nothing to prefer an older by.
        improved = math.isnan(value) or math.isnan(self.best) or sign * (value - self.best) > self.min_delta
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return improved, self.patience > 0 and self.bad_epochs >= self.patience


class StopRun(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a callback (or by the engine when the loss diverges) to end a run with a named status, such as
    `diverged` or a search's `pruned`; the run directory records the status and the reason in summary.json."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class Callback:
    """Hooks into a run; override what you need. A hook may raise StopRun to end the run with its own status.

    on_fit_start: after a resumed state is loaded, before the first step (a fine-tune's feature cache starts here).
    on_step_end: after every optimizer step; only callbacks that override it are called from the step loop, and
        reading a device value here costs a host synchronisation per step.
    on_epoch_end: after every epoch's validation, in the order given (the run directory's writer comes first).
    """

    def on_fit_start(self, trainer: Trainer) -> None:
        pass

    def on_step_end(self, trainer: Trainer) -> None:
        pass

    def on_epoch_end(self, trainer: Trainer, result: EpochResult) -> None:
        pass


class EpochCallback(Callback):
    """A plain function as an on_epoch_end callback."""

    def __init__(self, function: Callable[[EpochResult], None]) -> None:
        self.function = function

    def on_epoch_end(self, trainer: Trainer, result: EpochResult) -> None:
        self.function(result)


@dataclass(eq=False)
class Trainer:
    """The training loop over parts assembled by `build_trainer` (or by hand): it knows nothing of how the model,
    batches or optimizer were made, so fine-tuning, pruning and search plug in as parts and callbacks."""

    model: nn.Module
    config: TrainConfig
    device: torch.device
    train_batches: Any  # InMemoryBatches | StreamBatches: .iterate(generator), .num_images, len()
    val_batches: Any
    preprocess: Callable[..., torch.Tensor]  # uint8 batch (, generator) -> model input
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    early: EarlyStopping
    forward: Callable[[torch.Tensor], torch.Tensor]  # what training calls: the model, maybe DDP- or compile-wrapped
    eval_forward: Callable[[torch.Tensor], torch.Tensor]  # what evaluation calls (no gradient synchronisation)
    precision: str = "fp32"
    channels_last: bool = False
    penalized: list[torch.Tensor] = field(default_factory=list)  # weights under the L1/L2 penalty
    callbacks: list[Callback] = field(default_factory=list)
    rank: int = 0
    world: int = 1
    epoch: int = 0  # epochs completed
    step: int = 0

    def __post_init__(self) -> None:
        c = self.config
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.shuffle_generator = torch.Generator().manual_seed(c.seed)
        self.augment_generator = torch.Generator(device=self.device).manual_seed(c.seed + 1 + self.rank)
        self.rank_rng: list[dict[str, Any]] = []  # under DDP: every rank's random state at the last epoch end
        self.has_validation = self.val_batches.num_images > 0

    @property
    def step_callbacks(self) -> list[Callback]:
        return [cb for cb in self.callbacks if type(cb).on_step_end is not Callback.on_step_end]

    def autocast(self):
        dtype = AUTOCAST_DTYPES.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def penalty(self) -> torch.Tensor | float:
        c = self.config
        total: torch.Tensor | float = 0.0
        for weight in self.penalized:
            if c.l1:
                total = total + c.l1 * weight.abs().sum()
            if c.l2:
                total = total + c.l2 * weight.pow(2).sum()
        return total

    def train_epoch(self, progress: Progress | None) -> tuple[float, float, float, float]:
        c = self.config
        self.model.train()
        step_callbacks = self.step_callbacks
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        seen = 0
        start = time.perf_counter()
        lr = c.lr
        for i, (images, labels) in enumerate(self.train_batches.iterate(self.shuffle_generator)):
            factor = self.schedule.factor(self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
            lr = self.optimizer.param_groups[0]["lr"]
            x = self.preprocess(images, self.augment_generator)
            with self.autocast():
                logits = self.forward(x)
            loss = batch_loss(logits, labels, label_smoothing=c.label_smoothing)
            objective = loss + self.penalty() if self.penalized else loss
            if self.world > 1:
                # DDP averages gradients over ranks; weight each rank's mean by its share of the global batch so an
                # uneven last batch still gives the global batch's mean gradient.
                global_n = min(c.batch_size, self.train_batches.num_images - i * c.batch_size)
                objective = objective * (labels.shape[0] * self.world / global_n)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(objective).backward()
            if c.clip_grad:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), c.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.step += 1
            for callback in step_callbacks:
                callback.on_step_end(self)
            n = labels.shape[0]
            seen += n
            loss_sum += loss.detach() * n
            correct += (predicted(logits.detach()) == labels).sum()
            if progress is not None:
                # the display calls this at once (or not at all), so the loop variables are current
                progress.batch(i + 1, lambda: _running(loss_sum, correct, seen, start))  # noqa: B023
        if self.world > 1:  # every rank saw its share: sum the shares
            totals = torch.stack([loss_sum, correct.to(loss_sum.dtype), torch.tensor(float(seen), device=self.device)])
            torch.distributed.all_reduce(totals)
            loss_sum, correct, seen = totals[0], totals[1], int(totals[2])
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        return float(loss_sum) / max(seen, 1), float(correct) / max(seen, 1), seconds, lr

    @torch.inference_mode()
    def evaluate(self, batches) -> tuple[float, float]:
        """Mean loss and accuracy over a split (no augmentation, inference mode)."""
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        seen = 0
        for images, labels in batches.iterate(None):
            with self.autocast():
                logits = self.eval_forward(self.preprocess(images))
            loss_sum += batch_loss(logits, labels, reduction="sum")
            correct += (predicted(logits) == labels).sum()
            seen += labels.shape[0]
        if seen == 0:
            return math.nan, math.nan
        return float(loss_sum) / seen, float(correct) / seen

    def fit(self, progress: Progress | None = None) -> None:
        """Train from `self.epoch` to config.epochs, until early stopping, or until a callback raises StopRun.

        A loss that stops being finite ends the run at once with status `diverged` (after the epoch's row is written
        by the callbacks): NaN is never a best epoch, and NaN epochs also run many times slower."""
        c = self.config
        for callback in self.callbacks:
            callback.on_fit_start(self)
        while self.epoch < c.epochs:
            if progress is not None:
                progress.start_epoch(self.epoch + 1, c.epochs, len(self.train_batches))  # same count once cached
            train_loss, train_acc, seconds, lr = self.train_epoch(progress)
            val_loss, val_acc = self.evaluate(self.val_batches)
            self.epoch += 1
            diverged = not math.isfinite(train_loss) or (self.has_validation and not math.isfinite(val_loss))
            if diverged:
                improved, stop = False, True
            else:
                self.schedule.end_epoch(val_loss)
                improved, stop = self.early.update(self.epoch, val_loss if c.monitor == "val_loss" else val_acc)
            result = EpochResult(epoch=self.epoch, lr=lr, train_loss=train_loss, train_acc=train_acc,
                                 val_loss=val_loss, val_acc=val_acc, seconds=seconds,
                                 images_per_s=self.train_batches.num_images / max(seconds, 1e-9),
                                 improved=improved, stop=stop)  # fmt: skip
            if progress is not None:
                progress.end_epoch(result)
            self.gather_rank_rng()  # before rank 0's on_epoch_end writes the checkpoint
            for callback in self.callbacks:
                callback.on_epoch_end(self, result)
            if diverged:
                loss = train_loss if not math.isfinite(train_loss) else val_loss
                which = "training" if not math.isfinite(train_loss) else "validation"
                raise StopRun("diverged", f"the {which} loss became {loss} in epoch {self.epoch} at lr {lr:.3g}; "
                                          f"try a lower --lr (or --clip-grad, or a warmup with --warmup-epochs)")
            if stop:
                break

    # --- state, for exact resume ---

    def rng_state(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state(), "shuffle": self.shuffle_generator.get_state(),
               "augment": self.augment_generator.get_state(), "augment_device": self.device.type}  # fmt: skip
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return rng

    def gather_rank_rng(self) -> None:
        """Under DDP, every rank's random state (dropout and augmentation draw per rank), collected on every rank at
        the end of each epoch so that rank 0's checkpoint can resume each rank on its own stream. A collective call:
        all ranks make it together (fit does)."""
        if self.world > 1:
            states: list[Any] = [None] * self.world
            torch.distributed.all_gather_object(states, self.rng_state())
            self.rank_rng = states

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "schedule": self.schedule.state_dict(),
            "early_stopping": {"best": self.early.best, "best_epoch": self.early.best_epoch,
                               "bad_epochs": self.early.bad_epochs},  # fmt: skip
            "epoch": self.epoch,
            "step": self.step,
            "rng": self.rng_state(),
            **({"rank_rng": self.rank_rng} if self.world > 1 and self.rank_rng else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.schedule.load_state_dict(state["schedule"])
        early = state["early_stopping"]
        self.early.best, self.early.best_epoch, self.early.bad_epochs = (
            float(early["best"]), int(early["best_epoch"]), int(early["bad_epochs"]))  # fmt: skip
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        rank_rng = state.get("rank_rng") or []
        rng = rank_rng[self.rank] if len(rank_rng) == self.world else state["rng"]  # this rank's own stream
        torch.set_rng_state(rng["torch"])
        self.shuffle_generator.set_state(rng["shuffle"])
        saved_on = rng.get("augment_device") or ("cpu" if rng["augment"].numel() > 16 else "cuda")  # older checkpoints
        if saved_on == self.device.type:
            self.augment_generator.set_state(rng["augment"])
        else:  # a CUDA generator's state (philox seed and offset) does not fit a CPU generator, nor the reverse: a run
            # resumed on another kind of device draws its augmentation from a seed of its own for the epochs still to run
            self.augment_generator.manual_seed(self.config.seed + 1 + self.rank + 1000 * self.epoch)
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)


def build_trainer(model: nn.Module, prepared: Prepared, config: TrainConfig, device: torch.device, *,
                  precision: str = "fp32", channels_last: bool = False,
                  normalization: tuple[list[float], list[float]] | None = None, trained_module: nn.Module | None = None,
                  callbacks: list[Callback] | tuple[Callback, ...] = ()) -> Trainer:  # fmt: skip
    """The standard parts for a model and a prepared dataset: device and memory format, batches, preprocessing,
    optimizer, schedule, penalties, early stopping, DDP and compile.

    `trained_module` is what the training step calls when it is not the whole model (a fine-tune's head trained on
    cached backbone features: see finetune.FeatureCache); `normalization` is (mean, std), default the train split's.
    Checks that can fail (penalised layers, early stopping without validation, batch size per process) fail here,
    before any run directory exists."""
    c = config
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cpu":
        keep_freed_memory_for_reuse()
        if precision == "bf16":
            dense_layers_in_fp32(model)
    mean, std = normalization or (prepared.mean, prepared.std)
    augment = parse_augment(c.augment)
    rank, world = distributed_rank_world()
    if c.batch_size % world:
        raise UsageError(f"--batch-size {c.batch_size} must divide among {world} processes")
    if prepared.splits["val"].labels.numel() == 0 and c.patience:
        raise UsageError("early stopping (--patience) needs a validation split, but this dataset's is empty")
    penalized = penalized_weights(model, c.reg_layers) if (c.l1 or c.l2) else []
    eval_forward = trained_module or model
    forward = eval_forward
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(forward, device_ids=[device.index] if device.type == "cuda" else None)
    if c.compile:
        forward = torch.compile(forward)
    # Fused optimizer kernels: one call per step instead of several per parameter (about 1.35x the whole step for
    # mnist-7498 on a 2-core CPU, where the per-parameter overhead is a large part of a small model's step).
    optimizer = OPTIMIZERS[c.optimizer](param_groups(model, c), c, device.type in ("cpu", "cuda") or None)
    for group in optimizer.param_groups:
        group.setdefault("base_lr", group["lr"])
    train_batches = make_batches(prepared, "train", c.batch_size, device, c.workers, shard=(rank, world))
    if world > 1:  # each rank its own dropout masks (the weights are rank 0's: DDP broadcasts them)
        torch.manual_seed(c.seed + 10_000 * (rank + 1))
    return Trainer(model=model, config=c, device=device, train_batches=train_batches,
                   val_batches=make_batches(prepared, "val", c.eval_batch_size, device, c.workers),
                   preprocess=Preprocess(mean, std, device, augment=augment, channels_last=channels_last),
                   optimizer=optimizer, schedule=LRSchedule(c, len(train_batches)),
                   early=EarlyStopping(c.monitor, c.patience, c.min_delta), forward=forward,
                   eval_forward=eval_forward, precision=precision, channels_last=channels_last, penalized=penalized,
                   callbacks=list(callbacks), rank=rank, world=world)  # fmt: skip


def param_groups(model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """Trainable parameters; with backbone_lr_mult != 1 the body (everything but `head.`, the name every cnnbench
    model gives its classifier) gets its own group at lr x mult."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if config.backbone_lr_mult == 1.0:
        return [{"params": [p for _, p in named]}]
    head = [p for n, p in named if n.startswith("head.")]
    body = [p for n, p in named if not n.startswith("head.")]
    return [g for g in ({"params": body, "lr": config.lr * config.backbone_lr_mult}, {"params": head, "lr": config.lr})
            if g["params"]]  # fmt: skip


def distributed_rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _running(loss_sum: torch.Tensor, correct: torch.Tensor, seen: int, start: float) -> tuple[float, float, float]:
    """Running loss, accuracy and images/s: a host sync, so called only when the progress display refreshes."""
    elapsed = max(time.perf_counter() - start, 1e-9)
    return float(loss_sum) / max(seen, 1), float(correct) / max(seen, 1), seen / elapsed


@torch.inference_mode()
def predict(model: nn.Module, batches, preprocess: Preprocess, precision: str = "fp32",
            device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:  # fmt: skip
    """Class probabilities and labels for a whole split, and the seconds the forward passes took."""
    model.eval()
    device = device or next(model.parameters()).device
    if device.type == "cpu":
        keep_freed_memory_for_reuse()
    dtype = AUTOCAST_DTYPES.get(precision)
    probs, labels, seconds = [], [], 0.0
    for images, y in batches.iterate(None):
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(preprocess(images))
        p = probabilities(logits)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds += time.perf_counter() - start
        probs.append(p.cpu())
        labels.append(y.cpu())
    if not probs:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.int64), 0.0
    return torch.cat(probs), torch.cat(labels), seconds
