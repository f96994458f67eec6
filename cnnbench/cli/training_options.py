"""The data and training options shared by `train` and `finetune`, declared once.

`_shared` below is a template: `@with_training_options` appends its parameters to a command's signature (Typer reads
`__signature__`), and the command reads them from `ctx.params`. Training parameters are named after their TrainConfig
field, so they are collected by name; each defaults to None ("not passed") so a --config file can fill it, and the help
shows the real default.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

import typer

from cnnbench.cli.common import (
    ClassesOption,
    DataSeedOption,
    DownloadFlag,
    GrayscaleFlag,
    RootOption,
    SizeOption,
    SourceOption,  # fmt: skip
    SplitOption,
    StorageOption,
    ValFractionOption,
)
from cnnbench.config import TrainConfig


def option(*names: str, help: str, panel: str = "Training"):  # noqa: A002 - mirrors typer.Option's keyword
    """An option whose help text states its default itself (the flags default to None: 'not passed')."""
    return typer.Option(*names, help=help, show_default=False, rich_help_panel=panel)



Epochs = Annotated[int | None, option("--epochs", help="Epochs to train (with --resume: the new total). [default: 20]")]
BatchSize = Annotated[int | None, option("--batch-size", "-b", help="[default: 128]")]
Lr = Annotated[float | None, option("--lr", help="Learning rate. [default: 1e-3]")]
Optimizer = Annotated[str | None, option("--optimizer", help="adam | adamw | sgd | rmsprop. [default: adam]")]
Momentum = Annotated[float | None, option("--momentum", help="sgd/rmsprop momentum. [default: 0.9]")]
Nesterov = Annotated[bool | None, option("--nesterov/--no-nesterov", help="Nesterov momentum for sgd.")]
Beta1 = Annotated[float | None, option("--beta1", help="Adam beta1. [default: 0.9]")]
Beta2 = Annotated[float | None, option("--beta2", help="Adam beta2. [default: 0.999]")]
WeightDecay = Annotated[float | None, option("--weight-decay", help="[default: 0]")]
L1 = Annotated[float | None, option("--l1", help="L1 penalty on the weights of --reg-layers. [default: 0]")]
L2 = Annotated[float | None, option("--l2", help="L2 penalty on the weights of --reg-layers. [default: 0]")]
RegLayers = Annotated[str | None, option("--reg-layers", help="Glob over layer names for --l1/--l2, e.g. 'head.*'. "
                                       "[default: * for train, head.* for finetune]")]
Schedule = Annotated[str | None, option("--schedule", help="constant | step | cosine | onecycle | plateau. "
                                      "[default: constant]")]
WarmupEpochs = Annotated[float | None, option("--warmup-epochs", help="Linear warmup. [default: 0]")]
StepSize = Annotated[int | None, option("--step-size", help="step: epochs between decays. [default: 30]")]
Gamma = Annotated[float | None, option("--gamma", help="step/plateau decay factor. [default: 0.1]")]
PlateauPatience = Annotated[int | None, option("--plateau-patience", help="[default: 5]")]
LabelSmoothing = Annotated[float | None, option("--label-smoothing", help="[default: 0]")]
ClipGrad = Annotated[float | None, option("--clip-grad", help="Max gradient norm. [default: off]")]
Patience = Annotated[int | None, option("--patience", help="Early stopping patience in epochs; restores the best "
                                      "weights. 0 = off. [default: 0]")]
Monitor = Annotated[str | None, option("--monitor", help="val_loss | val_acc. [default: val_loss]")]
MinDelta = Annotated[float | None, option("--min-delta", help="[default: 0]")]
Augment = Annotated[str | None, option("--augment", help="Preset (none, flip, light, s2, s4) or items, e.g. "
                                     "flip,translate=0.1,rotate=20,zoom=0.2,shear=0.2,brightness=0.8-1.2. "
                                     "[default: none]")]
Dropout = Annotated[float | None, option("--dropout", help="Dropout (train: overrides the model's; finetune: the "
                                       "head's). [default: the model's / 0]")]
Init = Annotated[str | None, option("--init", help="default | glorot (Keras) | he. [default: default]")]
Seed = Annotated[int | None, option("--seed", help="Seed for weights, shuffling, augmentation (and the split unless "
                                  "--data-seed). [default: 0]")]
Deterministic = Annotated[bool | None, option("--deterministic/--no-deterministic", help="Deterministic algorithms "
                                            "only (slower on GPU).")]
Device = Annotated[str | None, option("--device", help="auto | cpu | cuda | cuda:N | mps. [default: auto]")]
Precision = Annotated[str | None, option("--precision", help="auto | fp32 | bf16 | fp16. [default: auto: bf16 or "
                                       "fp16 on CUDA; on a CPU the faster of fp32 and bf16, measured once]")]
ChannelsLast = Annotated[bool | None, option("--channels-last/--no-channels-last", help="[default: on CUDA; on a CPU, "
                                           "measured once]")]
Threads = Annotated[int | None, option("--threads", help="CPU threads. [default: on a CPU, the fastest of all cores, "
                                     "half, a quarter ..., measured once]")]
Compile = Annotated[bool | None, option("--compile/--no-compile", help="torch.compile the model.")]
MaxParams = Annotated[int | None, option("--max-params", help="Refuse (exit 1) a model with more trainable "
                                       "parameters, before training.")]
Workers = Annotated[int | None, option("--workers", help="DataLoader workers for file-index datasets.")]
ConfigFile = Annotated[Path | None, option("--config", help="JSON or TOML file of training options (flags win).")]
Out = Annotated[Path, typer.Option("--out", help="Parent folder of the run directory.")]

TRAIN_FIELDS = frozenset(f.name for f in fields(TrainConfig))


def passed_training_options(params: dict[str, Any]) -> dict[str, Any]:
    """The TrainConfig fields among a command's parameters (None = not passed)."""
    return {name: value for name, value in params.items() if name in TRAIN_FIELDS}


def data_from_params(params: dict[str, Any], *, seed: int):
    """The data options of a training command (--data-seed defaults to the training seed)."""
    from cnnbench.cli.common import data_options

    data_seed = params["data_seed"]
    return data_options(dataset=params["dataset"] or "digits", root=params["root"], split=params["split"],
                        val_fraction=params["val_fraction"], seed=seed if data_seed is None else data_seed,
                        classes=params["classes"], grayscale=params["grayscale"], size=params["size"],
                        source=params["source"], download=params["download"], storage=params["storage"])  # fmt: skip


def progress_display(quiet: bool):
    """A context manager giving the engine's progress display on stderr (None when quiet)."""
    import contextlib

    from cnnbench.cli.common import stderr
    from cnnbench.cli.progress import RichProgress

    return contextlib.nullcontext() if quiet else RichProgress(stderr())


def show_result(result, *, json_output: bool) -> None:
    """Print a finished (or interrupted) run: the JSON summary, or two lines; exit 130 when interrupted."""
    from cnnbench.cli.common import emit_json, stderr, stdout

    if result.run is None:  # a torchrun rank other than 0: rank 0 reports
        return
    summary = result.summary
    if json_output:
        emit_json({"run_dir": str(result.run.path), **summary})
    else:
        best = summary["best"]
        stdout().print(
            f"{result.status}: {result.run.path}\n"
            f"best epoch {summary['best_epoch']}/{summary['epochs_completed']}: val_loss {best['val_loss']:.4f} "
            f"val_acc {best['val_acc']:.4f} (train acc {best['train_acc']:.4f}); "
            f"{summary['params']['trainable']:,} trainable parameters, {summary['params']['frozen']:,} frozen"
        )  # fmt: skip
    if result.status == "interrupted":
        stderr().print(f"interrupted after epoch {summary['epochs_completed']}; resume with: "
                       f"cnnbench train --resume {result.run.path}", markup=False)  # fmt: skip
        raise typer.Exit(130)


Dataset = Annotated[str | None, typer.Option("--dataset", "-d", help="A name from `cnnbench datasets`, or "
                                             "folder:PATH. [default: digits]", show_default=False)]


def _shared(
    dataset: Dataset = None,
    root: RootOption = Path("data"),
    split: SplitOption = None,
    val_fraction: ValFractionOption = 0.1,
    data_seed: DataSeedOption = None,
    classes: ClassesOption = None,
    grayscale: GrayscaleFlag = False,
    size: SizeOption = None,
    source: SourceOption = None,
    download: DownloadFlag = False,
    storage: StorageOption = "auto",
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: Lr = None,
    optimizer: Optimizer = None,
    momentum: Momentum = None,
    nesterov: Nesterov = None,
    beta1: Beta1 = None,
    beta2: Beta2 = None,
    weight_decay: WeightDecay = None,
    l1: L1 = None,
    l2: L2 = None,
    reg_layers: RegLayers = None,
    schedule: Schedule = None,
    warmup_epochs: WarmupEpochs = None,
    step_size: StepSize = None,
    gamma: Gamma = None,
    plateau_patience: PlateauPatience = None,
    label_smoothing: LabelSmoothing = None,
    clip_grad: ClipGrad = None,
    patience: Patience = None,
    monitor: Monitor = None,
    min_delta: MinDelta = None,
    augment: Augment = None,
    dropout: Dropout = None,
    init: Init = None,
    seed: Seed = None,
    deterministic: Deterministic = None,
    device: Device = None,
    precision: Precision = None,
    channels_last: ChannelsLast = None,
    threads: Threads = None,
    compile: Compile = None,  # noqa: A002 - named after the TrainConfig field
    max_params: MaxParams = None,
    workers: Workers = None,
    config: ConfigFile = None,
    out: Out = Path("results/runs"),
) -> None:
    """Template only: its parameters are the shared options."""


def with_training_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give `command` the shared options, placed before its trailing --quiet/--json; it takes them as **options."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.kind is not p.VAR_KEYWORD]
    shared = list(inspect.signature(_shared, eval_str=True).parameters.values())
    tail = [p for p in own if p.name in ("quiet", "json_output")]
    head = [p for p in own if p not in tail]
    command.__signature__ = inspect.Signature([*head, *shared, *tail])  # type: ignore[attr-defined]
    return command
