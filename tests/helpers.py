"""Small helpers shared by the training tests."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from cnnbench.data.prepare import PrepareOptions

DIGITS28 = ["--dataset", "digits", "--size", "28"]

# Settings of the shared trained runs (conftest's `trained_run`) that more than one module reads: equal settings are
# one run, trained once per session, so a module that needs "a trained X" asks for one of these.
MNIST722 = {"model": "mnist-722", "epochs": 3, "lr": 3e-3}  # error analysis; report's two seeds (0 and 1)
MNIST7498 = {"model": "mnist-7498", "epochs": 2, "lr": 3e-3, "seed": 1}  # finetune's and run_pipeline's parent; report
INTERRUPTED722 = {"model": "mnist-722", "epochs": 2, "stop_after": 1}  # damaged runs' template; report's interrupted


def digits(root: Path, **options) -> PrepareOptions:
    """The bundled digits at 28x28, the size the S1 models need."""
    return PrepareOptions(dataset="digits", root=root, size=28, **options)


def tree_digest(folder: Path) -> str:
    """One hash of every file's name and bytes under `folder`: equal digests, an untouched folder."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


def copy_run(run: Path, parent: Path, name: str | None = None) -> Path:
    """A copy of the run directory `run` at parent/name (name: the run's own), for a test that writes into a run (the
    runs of the `trained_run` fixture are shared and must stay untouched). File times are kept, as a moved run's are."""
    return Path(shutil.copytree(run, Path(parent) / (name or Path(run).name)))


class StopAfter:
    """An on_epoch_end callback that simulates Ctrl-C at the end of a given epoch."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, result) -> None:
        if result.epoch == self.epoch:
            raise KeyboardInterrupt


def spec(data: PrepareOptions, model: str | None = None, *, kind: str = "train", model_options: dict | None = None,
         **train):
    """A RunSpec from a data section, a model name and training options (what the CLI builds from flags)."""
    from dataclasses import replace

    from cnnbench.spec.run import ModelChoice, RunSpec, base_for, validate

    base = base_for(kind)
    return validate(RunSpec(kind=kind, data=data, model=ModelChoice(name=model, **(model_options or {})),
                            train=replace(base.train, **train) if train else base.train))


def finetune_spec(data: PrepareOptions, *, backbone: str | None = None, weights: str | None = None,
                  head: str | None = None, freeze: str | None = None, **options):
    """A finetune RunSpec: model options by their flag names (units, pool, activation, dropout, init, freeze_bn),
    the rest training options."""
    from cnnbench.spec.run import HeadChoice

    head_options = {k: options.pop(k) for k in ("units", "pool", "activation") if k in options}
    model_options = {k: options.pop(k) for k in ("dropout", "init", "freeze_bn") if k in options}
    return spec(data, backbone, kind="finetune", model_options={"weights": weights, "freeze": freeze,
                                                                  "head": HeadChoice(kind=head, **head_options),
                                                                  **model_options}, **options)
