"""Training a pruned model: `SparseFineTune` keeps pruned weights at exactly zero and can raise their sparsity
along TF-MOT's polynomial schedule (what S3 used).

Why no reparametrisation (weight_orig x weight_mask) while fine-tuning: the run writer saves `model.state_dict()` every
epoch, and those checkpoints must load into the plain architecture (evaluate, finetune --weights run:, --resume).
Instead the weights stay plain tensors holding exact zeros, and `SparseFineTune` keeps them zero: it masks their
gradients (so clipping norms and optimizer moments match the reparametrised form) and re-applies the masks after every
optimizer step (momentum gathered before a polynomial update would otherwise move a newly pruned weight). The masks
are the zeros themselves, so a resumed run recovers them from its checkpoint. Masking every weight in place also keeps
the parameters' order, which the optimizer's saved state depends on (torch.nn.utils.prune.remove re-registers a pruned
weight after its bias, so a resumed run's optimizer state would land on the wrong tensors).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import nn

from cnnbench.engine.callbacks import Callback, EpochResult
from cnnbench.engine.trainer import Trainer
from cnnbench.models.pruning import sparsify

POLYNOMIAL_POWER = 3  # TF-MOT PolynomialDecay's default, what S3 used


def polynomial_sparsity(step: int, *, begin: int, end: int, final: float, initial: float = 0.0,
                        power: int = POLYNOMIAL_POWER) -> float:  # fmt: skip
    """TF-MOT's PolynomialDecay: final + (initial - final) x (1 - p)^power, p the elapsed fraction of [begin, end]."""
    progress = min(1.0, max(0.0, (step - begin) / max(1, end - begin)))
    return final + (initial - final) * (1.0 - progress) ** power


def is_update_step(step: int, *, begin: int, end: int, frequency: int) -> bool:
    """TF-MOT updates the masks when (step - begin) % frequency == 0 inside [begin, end]. The window's last step is
    an update too: TF-MOT skips it when the window is not a multiple of the frequency, leaving the model short of its
    final sparsity."""
    return begin <= step <= end and ((step - begin) % frequency == 0 or step == end)


@dataclass(frozen=True, kw_only=True)
class PolynomialPlan:
    final: float
    frequency: int
    epochs: int  # the window: sparsity reaches `final` at the last step of this many epochs
    initial: float = 0.0

    def end_step(self, steps_per_epoch: int) -> int:
        return self.epochs * steps_per_epoch


class SparseFineTune(Callback):
    """Keeps the pruned weights of `layers` at exactly zero while fine-tuning; with a `PolynomialPlan`, raises their
    sparsity along the schedule.

    The masks are read from the weights' zeros when the fit starts: after a one-shot prune, and in a resumed run whose
    checkpoint holds the zeros, they are the pruned weights. During a polynomial ramp, the best epoch must be one at
    the final sparsity (an earlier, denser epoch would often score better and become best.pt): early stopping is
    reset after every epoch that ends before the ramp does, so the first epoch at the final sparsity is the best so
    far, and patience counts from there.
    """

    def __init__(self, layers: list[str], *, method: str, schedule: PolynomialPlan | None = None) -> None:
        self.layers, self.method, self.schedule = list(layers), method, schedule
        self.masks: dict[str, torch.Tensor] = {}
        self.end_step = 0

    def weights(self, trainer: Trainer) -> dict[str, nn.Parameter]:
        return {name: trainer.model.get_submodule(name).weight for name in self.layers}

    def on_fit_start(self, trainer: Trainer) -> None:
        weights = self.weights(trainer)
        self.masks = {name: weight.detach() != 0 for name, weight in weights.items()}
        for name, weight in weights.items():
            if weight.requires_grad:  # a frozen layer gets no gradient to mask
                weight.register_hook(functools.partial(self._masked_gradient, name))
        if self.schedule is not None:
            self.end_step = self.schedule.end_step(len(trainer.train_batches))
            if trainer.step == 0:  # the schedule's first update, at its start: the initial sparsity
                self.update(trainer, polynomial_sparsity(0, begin=0, end=self.end_step, final=self.schedule.final,
                                                         initial=self.schedule.initial))  # fmt: skip
            elif trainer.epoch > 0 and trainer.step < self.end_step:
                self.forget_best(trainer)  # as after the epoch the checkpoint was saved in (its writer ran first)

    def _masked_gradient(self, name: str, gradient: torch.Tensor) -> torch.Tensor:
        return gradient * self.masks[name]

    @torch.no_grad()
    def on_step_end(self, trainer: Trainer) -> None:
        weights = self.weights(trainer)
        for name, weight in weights.items():
            weight.mul_(self.masks[name])
        schedule = self.schedule
        if schedule is not None and is_update_step(trainer.step, begin=0, end=self.end_step,
                                                   frequency=schedule.frequency):
            self.update(trainer, polynomial_sparsity(trainer.step, begin=0, end=self.end_step, final=schedule.final,
                                                     initial=schedule.initial))  # fmt: skip

    @torch.no_grad()
    def update(self, trainer: Trainer, sparsity: float) -> None:
        # Masks only grow: a pruned parent's own zeros stay zero while the ramp starts below their sparsity.
        masks = sparsify(trainer.model, self.layers, sparsity, method=self.method)
        self.masks = {name: mask & self.masks[name] for name, mask in masks.items()}

    def on_epoch_end(self, trainer: Trainer, result: EpochResult) -> None:
        if self.schedule is not None and trainer.step < self.end_step:
            self.forget_best(trainer)

    @staticmethod
    def forget_best(trainer: Trainer) -> None:
        trainer.early.best, trainer.early.bad_epochs = math.nan, 0  # NaN: the next epoch counts as an improvement

