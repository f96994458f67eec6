"""Prediction: class probabilities for a whole split, timed, as evaluation and the speed benchmarks read them.

Apart from the trainer because evaluating a run needs a model, batches and preprocessing, not an optimizer or a loop;
it runs the model under the same precision and CPU memory setting as training did.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from cnnbench.engine.batches import Preprocess
from cnnbench.engine.device import AUTOCAST_DTYPES, keep_freed_memory_for_reuse
from cnnbench.engine.losses import probabilities


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
