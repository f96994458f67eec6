"""Small helpers shared by the training tests."""

from __future__ import annotations

from pathlib import Path

from cnnbench.data.prepare import PrepareOptions

DIGITS28 = ["--dataset", "digits", "--size", "28"]


def digits(root: Path, **options) -> PrepareOptions:
    """The bundled digits at 28x28, the size the S1 models need."""
    return PrepareOptions(dataset="digits", root=root, size=28, **options)


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
