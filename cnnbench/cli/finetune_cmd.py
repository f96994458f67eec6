from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnnbench.cli import training_options as T
from cnnbench.cli.common import (
    ClassesOption,
    DataSeedOption,
    DownloadFlag,
    GrayscaleFlag,
    JsonFlag,
    QuietFlag,
    RootOption,
    SizeOption,
    SourceOption,
    SplitOption,
    StorageOption,
    ValFractionOption,
    log_to_stderr,  # fmt: skip
)


def _opt(*names: str, help: str):  # noqa: A002 - mirrors typer.Option's keyword
    return typer.Option(*names, help=help, show_default=False, rich_help_panel="Transfer")


def finetune(
    ctx: typer.Context,
    backbone: Annotated[str | None, _opt("--backbone", help="A torchvision backbone from `cnnbench models` "
                                         "(resnet50v2 and xception map to the closest one).")] = None,
    weights: Annotated[str, _opt("--weights", help="imagenet | none | PATH (a state dict) | run:RUN_DIR "
                                 "[default: imagenet]")] = "imagenet",
    head: Annotated[str | None, _opt("--head", help="linear | extended | mlp:W1,W2,... [default: linear, or the "
                                     "parent run's head]")] = None,
    units: Annotated[int, _opt("--units", help="Hidden units of the extended head. [default: 256]")] = 256,
    activation: Annotated[str, _opt("--activation", help="relu | elu | gelu | tanh | leaky_relu [default: relu]")] = "relu",
    pool: Annotated[str | None, _opt("--pool", help="avg | flatten | max2 [default: avg; max2 for extended]")] = None,
    freeze: Annotated[str | None, _opt("--freeze", help="all | none | fraction:X | last:N | from:MODULE "
                                       "[default: all; none with --weights none]")] = None,
    freeze_bn: Annotated[bool, _opt("--freeze-bn", help="Keep BatchNorm layers frozen (statistics and affine) "
                                    "even in unfrozen blocks.")] = False,
    head_epochs: Annotated[int, _opt("--head-epochs", help="First train the head alone for N epochs (a parent run), "
                                     "then fine-tune. [default: 0]")] = 0,
    head_lr: Annotated[float | None, _opt("--head-lr", help="Learning rate of the head-only phase. "
                                          "[default: --lr]")] = None,
    backbone_lr_mult: Annotated[float | None, _opt("--backbone-lr-mult", help="Backbone lr = lr x this. "
                                                   "[default: 1]")] = None,
    cache_features: Annotated[bool | None, _opt("--cache-features/--no-cache-features", help="With a frozen "
                                                "backbone and no augmentation, compute its features once. "
                                                "[default: on]")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="A name from `cnnbench datasets`, or "
                                                "folder:PATH. [default: digits]", show_default=False)] = None,
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
    epochs: T.Epochs = None,
    batch_size: T.BatchSize = None,
    lr: T.Lr = None,
    optimizer: T.Optimizer = None,
    momentum: T.Momentum = None,
    nesterov: T.Nesterov = None,
    beta1: T.Beta1 = None,
    beta2: T.Beta2 = None,
    weight_decay: T.WeightDecay = None,
    l1: T.L1 = None,
    l2: T.L2 = None,
    reg_layers: T.RegLayers = None,
    schedule: T.Schedule = None,
    warmup_epochs: T.WarmupEpochs = None,
    step_size: T.StepSize = None,
    gamma: T.Gamma = None,
    plateau_patience: T.PlateauPatience = None,
    label_smoothing: T.LabelSmoothing = None,
    clip_grad: T.ClipGrad = None,
    patience: T.Patience = None,
    monitor: T.Monitor = None,
    min_delta: T.MinDelta = None,
    augment: T.Augment = None,
    dropout: T.Dropout = None,
    init: T.Init = None,
    seed: T.Seed = None,
    deterministic: T.Deterministic = None,
    device: T.Device = None,
    precision: T.Precision = None,
    channels_last: T.ChannelsLast = None,
    compile: T.Compile = None,  # noqa: A002 - named after the TrainConfig field
    max_params: T.MaxParams = None,
    workers: T.Workers = None,
    config: T.ConfigFile = None,
    out: T.Out = Path("results/runs"),
    quiet: QuietFlag = False,
    json_output: JsonFlag = False,
) -> None:
    """Fine-tune a pretrained torchvision backbone (or any cnnbench run) with a new head and a freezing policy."""
    from cnnbench.config import resolve_config
    from cnnbench.finetune import FinetuneOptions, finetune_run

    train_config = resolve_config({**T.passed_training_options(ctx.params), "model": None}, config)
    options = FinetuneOptions(backbone=backbone, weights=weights, head=head, units=units, activation=activation,
                              pool=pool, freeze=freeze, freeze_bn=freeze_bn, head_epochs=head_epochs,
                              head_lr=head_lr)  # fmt: skip
    data = T.data_from_params(ctx.params, dataset=dataset or "digits", seed=train_config.seed)
    with T.progress_display(quiet) as progress:
        result = finetune_run(data, train_config, options, out=out, progress=progress, log=log_to_stderr(quiet))
    T.show_result(result, json_output=json_output)
