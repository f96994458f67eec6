"""Batches of a prepared split, and the preprocessing that turns a uint8 batch into a model's input.

Data that fits in memory lives on the device as one uint8 tensor and a batch is an index slice, converted, normalised
and augmented as a whole batch on the device: no per-sample Python or PIL work, which would cost more than a small
model's step. Larger sets stream from their image files through DataLoader workers, drawn in the same order, so the two
paths train on the same batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from cnnbench.data.augment import AugmentSpec, augment_batch
from cnnbench.data.prepare import Prepared, SplitData
from cnnbench.engine.device import DEFAULT_THREADS


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
        # Here, not at the top: it imports Pillow, which a run on in-memory data (the usual case) never needs.
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
            x = augment_batch(images.float().div_(255.0), self.augment, generator)  # augmentation works in [0, 1]
            x = (x - self.mean).mul_(self.inv_std)
        else:
            x = (images * self.scale).add_(self.shift)  # uint8 * float32 -> float32; broadcasts gray to RGB
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
