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

OUT_DEFAULT = Path("results/runs")


def train(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Zoo model or fit:N (see `cnnbench models`). "
                                              "[default: mnist-7498]", show_default=False)] = None,
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
    out: T.Out = OUT_DEFAULT,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue an interrupted run directory exactly.",
                                                show_default=False)] = None,
    quiet: QuietFlag = False,
    json_output: JsonFlag = False,
) -> None:
    """Train a zoo model on a dataset into a run directory (config, per-epoch metrics, checkpoints, summary)."""
    from cnnbench.config import resolve_config
    from cnnbench.training import resume_run, train_run

    passed = T.passed_training_options(ctx.params)
    log = log_to_stderr(quiet)
    if resume is not None:
        given = sorted(f"--{name.replace('_', '-')}" for name in ctx.params
                       if name not in ("resume", "epochs", "device", "quiet", "json_output")
                       and ctx.get_parameter_source(name).name == "COMMANDLINE")  # fmt: skip
        if given:
            raise typer.BadParameter(f"--resume continues the run with its saved options; only --epochs and --device "
                                     f"may be given (got {', '.join(given)})", param_hint="--resume")  # fmt: skip
        with T.progress_display(quiet) as progress:
            result = resume_run(resume, epochs=epochs, device=device, progress=progress, log=log)
    else:
        train_config = resolve_config(passed, config)
        data = T.data_from_params(ctx.params, dataset=dataset or "digits", seed=train_config.seed)
        with T.progress_display(quiet) as progress:
            result = train_run(data, train_config, out=out, progress=progress, log=log)
    T.show_result(result, json_output=json_output)
