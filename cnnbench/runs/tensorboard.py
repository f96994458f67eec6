"""`--tensorboard`: a run's curves live in TensorBoard, from event files in RUN/tb (`tensorboard --logdir results`).

Per epoch, the metrics row the run directory records (losses, accuracies, learning rate, images/s) as scalars under
`loss/`, `accuracy/` and `train/`; once, the run's settings as text and the model's graph; at the end, the
hyper-parameters beside the best validation figures (TensorBoard's HParams tab compares runs, such as a search's
trials, each a run of its own under the study's folder). A resumed run drops the events past the epoch it resumes
from (`purge_step`), so a curve never shows an epoch twice.

torch.utils.tensorboard writes through the `tensorboard` package, an optional extra (`cnnbench[tensorboard]`),
checked before any work; event files are appended, so a killed run leaves the epochs it finished readable.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from cnnbench.core.errors import UsageError
from cnnbench.engine import Callback

logger = logging.getLogger(__name__)

FOLDER = "tb"
_TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "train_acc": "accuracy/train", "val_acc": "accuracy/val",
         "lr": "train/lr", "images_per_s": "train/images_per_s", "seconds": "train/epoch_seconds"}


def check_available() -> None:
    """A one-line error naming the extra, before the run prepares data or trains."""
    if importlib.util.find_spec("tensorboard") is None:
        raise UsageError("--tensorboard needs the tensorboard package: pip install 'cnnbench[tensorboard]'")


class TensorBoardWriter(Callback):
    """Writes RUN/tb while the run trains; `close` at the end (with the hyper-parameters and best figures)."""

    def __init__(self, run_path: Path, settings: dict[str, Any], model_input) -> None:
        self.folder, self.settings = Path(run_path) / FOLDER, settings
        self.input_shape = (model_input.channels, model_input.height, model_input.width)  # an InputSpec
        self.writer = None
        self.best: dict[str, float] = {}

    def on_fit_start(self, trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        resumed = trainer.epoch > 0
        self.writer = SummaryWriter(str(self.folder), purge_step=trainer.epoch + 1 if resumed else None)
        if not resumed:
            self.writer.add_text("run/settings", f"```\n{json.dumps(self.settings, indent=1, default=str)}\n```")
            self._graph(trainer)

    def _graph(self, trainer) -> None:
        """The model's graph, traced once on a zero batch in eval mode (no BatchNorm statistics move) and without
        gradients; a model the tracer cannot follow is noted and skipped, never a reason to stop the run."""
        model = trainer.model
        was_training = model.training
        model.eval()
        try:
            example = torch.zeros((1, *self.input_shape), device=next(model.parameters()).device)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.writer.add_graph(model, example)
        except Exception as error:  # the tracer fails in many ways on models it cannot follow
            logger.info(f"note: no model graph in {self.folder} ({type(error).__name__})")
        finally:
            model.train(was_training)

    def on_epoch_end(self, trainer, result) -> None:
        for key, value in result.row().items():
            if key in _TAGS:
                self.writer.add_scalar(_TAGS[key], value, result.epoch)
        if result.improved or not self.best:
            self.best = {"best/val_acc": result.val_acc, "best/val_loss": result.val_loss, "best/epoch": result.epoch}
        self.writer.flush()  # each epoch readable at once, and kept if the process is killed

    def close(self) -> None:
        if self.writer is None:
            return
        hparams = {k: v for k, v in self.settings.items() if isinstance(v, (int, float, str, bool))}
        if self.best:
            self.writer.add_hparams(hparams, self.best, run_name=".")  # in RUN/tb itself, beside its scalars
        self.writer.close()
        self.writer = None
