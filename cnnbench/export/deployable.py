"""A run's model as something to deploy: the network behind the preprocessing it was trained with, and a description
of its input and output that another program can follow without cnnbench.

The preprocessing inside the model is the part that cannot be guessed from outside (the normalisation's mean and std,
and for a single-logit model how its output becomes two classes' probabilities); what must happen before it (decode,
convert to 8-bit L or RGB, resize) is the prepare step's, written down in `metadata` as prepare does it
(data/images.py), and done by `predict` with prepare's own code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnbench import __version__
from cnnbench.core.errors import UsageError
from cnnbench.data.catalog import InputSpec
from cnnbench.data.prepare import Prepared, read_manifest
from cnnbench.engine.losses import probabilities
from cnnbench.evaluate.evaluation import CHECKPOINTS, checked_split, run_normalization
from cnnbench.runs.rundir import RunDir

METADATA_VERSION = 1
INPUT_NAME = "pixels"
OUTPUT_NAMES = ("logits", "probabilities")
RESIZE = ("decoded, converted to 8-bit {color} (alpha composited over black, 16-bit scaled), then resized straight "
          "to {height}x{width} with bilinear filtering: no crop, aspect ratio not kept")  # data/images.py


class Deployable(nn.Module):
    """pixels: float32 (N, C, H, W), 0-255, as decoded and resized -> (logits, probabilities)."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.model = model
        inv_std = 1.0 / torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        # (pixels / 255 - mean) / std as one multiply and one add, as the trainer does (engine/batches.py); a grey
        # image broadcasts to a model that takes three channels, as in training
        self.register_buffer("scale", inv_std / 255.0)
        self.register_buffer("shift", -torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * inv_std)
        self.eval()  # for inference only: BatchNorm's running statistics, no dropout

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(pixels * self.scale + self.shift)
        return logits, probabilities(logits)


@dataclass
class RunModel:
    """A run opened for export or prediction: the deployable model, its metadata and (when asked for) the run's
    prepared data, its test split checked."""

    run: RunDir
    model: Deployable
    metadata: dict[str, Any]
    prepared: Prepared | None


def open_run_model(path: Path, *, checkpoint: str = "best", root: Path | None = None,
                   with_data: bool = True) -> RunModel:  # fmt: skip
    """The run at `path` with the weights of `checkpoint`, behind its preprocessing. `with_data`: its prepared data
    too, the test split checked against the hash recorded at training (the parity check reads it); without, only the
    prepared cache's manifest is read for the classes and the input (`predict`), unless the run predates recorded
    normalisation or the cache is gone, when the data is read (and prepared again) after all."""
    if checkpoint not in CHECKPOINTS:
        raise UsageError(f"bad --checkpoint {checkpoint!r}: choose from {', '.join(CHECKPOINTS)}")
    run = RunDir.open(path)
    config = run.read_config(require=("data", "prepared", "model"))
    prepared, manifest, normalization = None, None, config.normalization
    if not with_data and root is None and normalization is not None:
        try:
            manifest = read_manifest(Path(config.prepared["directory"]))
        except (UsageError, KeyError, TypeError):  # gone, damaged, or not recorded: read the data as export does
            manifest = None
    if manifest is None:
        _, prepared = checked_split(run, config, "test", root=root)
        manifest, normalization = prepared.manifest, run_normalization(config, prepared)
    model = Deployable(run.load_model(checkpoint), normalization["mean"], normalization["std"])
    spec = InputSpec(**manifest["input"])
    color = "RGB" if spec.channels == 3 else "L (grey)"
    metadata = {
        "cnnbench_export": METADATA_VERSION,
        "run": run.name,
        "checkpoint": checkpoint,
        "kind": config.kind,
        "model": config.model.get("name"),
        "dataset": config.data.get("dataset"),
        "classes": list(manifest["classes"]),
        "input": {"name": INPUT_NAME, "dtype": "float32", "layout": "NCHW", "batch": "any",
                  "channels": spec.channels, "height": spec.height, "width": spec.width, "pixel_range": [0, 255],
                  "before": RESIZE.format(color=color, height=spec.height, width=spec.width)},  # fmt: skip
        "normalization": {"mean": list(normalization["mean"]), "std": list(normalization["std"]),
                          "applied": "inside the model: (pixels / 255 - mean) / std"},  # fmt: skip
        "outputs": {"logits": "float32 (N, K): the network's output (K = 1: one sigmoid logit for two classes)",
                    "probabilities": "float32 (N, classes): softmax of the logits (for one logit: 1 - p, p with "
                                     "p = sigmoid)"},  # fmt: skip
        "temperature": fitted_temperature(run, checkpoint),
        "versions": {"cnnbench": __version__, "torch": torch.__version__},
    }
    return RunModel(run=run, model=model, metadata=metadata, prepared=prepared)


def fitted_temperature(run: RunDir, checkpoint: str) -> float | None:
    """The temperature `evaluate` fitted on the validation split for this checkpoint (logits / T give calibrated
    probabilities), or None when no evaluation of it fitted one."""
    for evaluation in run.evaluations().values():
        scaling = evaluation.get("calibration", {}).get("temperature_scaling", {})
        if evaluation.get("checkpoint") == checkpoint and isinstance(scaling.get("temperature"), (int, float)):
            return float(scaling["temperature"])
    return None
