"""The training and evaluation loops: one engine for CPU, CUDA and MPS.

The engine knows nothing of files, the CLI or Optuna. A `Trainer` runs the loop over parts (model, batches,
preprocessing, optimizer, schedule, early stopping) that `build_trainer` assembles from a model, a prepared dataset and
a TrainConfig, and calls its `Callback`s at the start, after every step and after every epoch: the run directory's
writer is one, a fine-tune's feature cache another, a search's trial pruner or a pruning schedule more. Any of them
may end the run with a named status (`StopRun`). Its whole state round-trips through `state_dict()`, so a resumed run
continues exactly.

The modules, from the bottom up (each imports only modules listed before it, or on its own line):
- device.py: the device, the precision and its autocast, CPU memory tuning and PyTorch's default thread count
- batches.py: in-memory and streamed batches of a split, and the on-device preprocessing and augmentation
- losses.py: what logits mean: the loss, the predicted class, the probabilities (one sigmoid logit or a softmax)
- optim.py: optimizers and their parameter groups, the learning-rate schedule, L1/L2 penalised weights, initialisation
- callbacks.py: EpochResult, the Callback hooks, the Progress display protocol, EarlyStopping and StopRun
- trainer.py: Trainer (the loop, evaluation, exact-resume state) and build_trainer (the standard parts, DDP, compile)
- prediction.py: predict, class probabilities for a whole split
- autotune.py: the CPU format probe (precision, memory format, threads), measured once per machine; its on-disk cache
  is autotune_cache.py, and PromiseWatch, which holds a run to the probe's figure, autotune_promise.py
- feature_cache.py: FeatureCache, a fine-tune's head trained on backbone features computed once
- sparsity.py: SparseFineTune, fine-tuning a pruned model with its zeros kept (and TF-MOT's polynomial schedule)

This face re-exports the names the rest of cnnbench (and its tests and benchmarks) use; the engine's own modules import
each other directly, never through here, since this file imports them. autotune, feature_cache and sparsity are not
imported here: import them as modules.
"""

from __future__ import annotations

from cnnbench.engine.batches import InMemoryBatches, Preprocess, make_batches, shuffled_batches
from cnnbench.engine.callbacks import Callback, EarlyStopping, EpochCallback, EpochResult, StopRun
from cnnbench.engine.device import (
    DEFAULT_THREADS,
    dense_layers_in_fp32,
    keep_freed_memory_for_reuse,
    resolve_precision,
    select_device,
)
from cnnbench.engine.losses import batch_loss, predicted, probabilities
from cnnbench.engine.optim import OPTIMIZERS, LRSchedule, initialise, penalized_weights
from cnnbench.engine.prediction import predict
from cnnbench.engine.trainer import Trainer, build_trainer

__all__ = [
    "DEFAULT_THREADS",
    "OPTIMIZERS",
    "Callback",
    "EarlyStopping",
    "EpochCallback",
    "EpochResult",
    "InMemoryBatches",
    "LRSchedule",
    "Preprocess",
    "StopRun",
    "Trainer",
    "batch_loss",
    "build_trainer",
    "dense_layers_in_fp32",
    "initialise",
    "keep_freed_memory_for_reuse",
    "make_batches",
    "penalized_weights",
    "predict",
    "predicted",
    "probabilities",
    "resolve_precision",
    "select_device",
    "shuffled_batches",
]
