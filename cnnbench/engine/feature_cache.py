"""`FeatureCache`: with a frozen backbone and no augmentation, only the head trains, on features the backbone
computes once per split (runs/finetune.py adds it to a fine-tune's plan)."""

from __future__ import annotations

import torch

from cnnbench.data.prepare import SplitData
from cnnbench.engine.batches import InMemoryBatches
from cnnbench.engine.callbacks import Callback
from cnnbench.engine.trainer import Trainer
from cnnbench.models.transfer import parts


class FeatureCache(Callback):
    """Only the head trains: the frozen backbone runs once per split and the head trains on its outputs.

    The features are made when the fit starts, so that a resumed run's loaded weights are the ones that make them.
    The trainer's step calls the head (`trained_module`), so the batches become feature batches and preprocessing
    the identity."""

    def on_fit_start(self, trainer: Trainer) -> None:
        # every rank holds all features (its share of each global batch changes every epoch) and trains on its share
        trainer.train_batches = self.feature_batches(trainer, trainer.train_batches, trainer.config.batch_size,
                                                     shard=(trainer.rank, trainer.world))  # fmt: skip
        trainer.val_batches = self.feature_batches(trainer, trainer.val_batches, trainer.config.eval_batch_size)
        trainer.preprocess = lambda features, generator=None: features

    @staticmethod
    @torch.inference_mode()
    def feature_batches(trainer: Trainer, batches, batch_size: int, shard: tuple[int, int] = (0, 1)) -> InMemoryBatches:
        """The frozen backbone's outputs for a whole split, held on the device as one tensor."""
        body, _ = parts(trainer.model)
        transfer = body is getattr(trainer.model, "backbone", None)  # a fine-tune head flattens; a zoo model's forward does
        body.eval()
        features, labels = [], []
        for images, y in batches.iterate(None):
            with trainer.autocast():
                out = body(trainer.preprocess(images)).float()
            features.append(out if transfer else torch.flatten(out, 1))
            labels.append(y)
        if not features:
            empty = torch.zeros(0, device=trainer.device)
            return InMemoryBatches(SplitData(labels=empty.long(), images=empty), batch_size, trainer.device, shard)
        split = SplitData(labels=torch.cat(labels), images=torch.cat(features))
        return InMemoryBatches(split, batch_size, trainer.device, shard)

