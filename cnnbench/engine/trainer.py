"""The training loop: `Trainer` runs an epoch, validation and the callbacks over parts it is given, and
`build_trainer` assembles the standard parts for a model, a prepared dataset and a TrainConfig.

The loop knows nothing of how its parts were made, so fine-tuning, pruning and search plug in as parts and callbacks.
No host synchronisation inside the step: loss and accuracy are summed on the device and read once per epoch (and when
the progress display asks, a few times a second). The whole state round-trips through `state_dict()`, random streams
included, so a resumed run continues exactly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cnnbench.core.errors import UsageError
from cnnbench.core.signals import signals_held
from cnnbench.data.augment import parse_augment
from cnnbench.data.prepare import Prepared
from cnnbench.engine.batches import Preprocess, make_batches
from cnnbench.engine.callbacks import Callback, EarlyStopping, EpochResult, Progress, StopRun
from cnnbench.engine.device import AUTOCAST_DTYPES, dense_layers_in_fp32, keep_freed_memory_for_reuse
from cnnbench.engine.losses import batch_loss, predicted
from cnnbench.engine.optim import OPTIMIZERS, LRSchedule, param_groups, penalized_weights
from cnnbench.spec.train import TrainConfig


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
            dist.all_reduce(totals)
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
            with signals_held():  # the epoch counted and its records written as one unit: Ctrl-C waits for both
                result, diverged = self._end_epoch(train_loss, train_acc, val_loss, val_acc, seconds, lr, progress)
            if diverged:
                loss = train_loss if not math.isfinite(train_loss) else val_loss
                which = "training" if not math.isfinite(train_loss) else "validation"
                raise StopRun("diverged", f"the {which} loss became {loss} in epoch {self.epoch} at lr {lr:.3g}; "
                                          f"try a lower --lr (or --clip-grad, or a warmup with --warmup-epochs)")
            if result.stop:
                break

    def _end_epoch(self, train_loss: float, train_acc: float, val_loss: float, val_acc: float, seconds: float,
                   lr: float, progress: Progress | None) -> tuple[EpochResult, bool]:
        """Count the epoch, step the schedule and early stopping, and hand the result to the callbacks (the run
        directory's writer first); whether a loss stopped being finite."""
        c = self.config
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
        return result, diverged

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
            dist.all_gather_object(states, self.rng_state())
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
    cached backbone features: see engine/feature_cache.py); `normalization` is (mean, std), default the train split's.
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


def distributed_rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _running(loss_sum: torch.Tensor, correct: torch.Tensor, seen: int, start: float) -> tuple[float, float, float]:
    """Running loss, accuracy and images/s: a host sync, so called only when the progress display refreshes."""
    elapsed = max(time.perf_counter() - start, 1e-9)
    return float(loss_sum) / max(seen, 1), float(correct) / max(seen, 1), seen / elapsed
