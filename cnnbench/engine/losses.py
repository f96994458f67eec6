"""What a model's logits mean: its loss, its predicted class and its class probabilities.

One module for all three because they share one convention that must not drift apart: a model with a single logit
(S4's two-class models) is a sigmoid binary classifier, any other a softmax over its logits. Training, evaluation and
prediction all read logits through these functions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
