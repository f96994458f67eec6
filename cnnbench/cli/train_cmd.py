from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

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
    data_options,  # fmt: skip
    emit_json,
    log_to_stderr,
    stderr,
    stdout,
)

OUT_DEFAULT = Path("results/runs")


def _opt(*names: str, help: str):  # noqa: A002 - mirrors typer.Option's keyword
    return typer.Option(*names, help=help, show_default=False)


def train(
    model: Annotated[str | None, _opt("--model", "-m", help="Zoo model or fit:N (see `cnnbench models`). "
                                      "[default: mnist-7498]")] = None,
    dataset: Annotated[str | None, _opt("--dataset", "-d", help="A name from `cnnbench datasets`, or folder:PATH. "
                                        "[default: digits]")] = None,
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
    epochs: Annotated[int | None, _opt("--epochs", help="Epochs to train (with --resume: the new total). [default: 20]")] = None,
    batch_size: Annotated[int | None, _opt("--batch-size", "-b", help="[default: 128]")] = None,
    lr: Annotated[float | None, _opt("--lr", help="Learning rate. [default: 1e-3]")] = None,
    optimizer: Annotated[str | None, _opt("--optimizer", help="adam | adamw | sgd | rmsprop. [default: adam]")] = None,
    momentum: Annotated[float | None, _opt("--momentum", help="sgd/rmsprop momentum. [default: 0.9]")] = None,
    nesterov: Annotated[bool | None, _opt("--nesterov/--no-nesterov", help="Nesterov momentum for sgd.")] = None,
    beta1: Annotated[float | None, _opt("--beta1", help="Adam beta1. [default: 0.9]")] = None,
    beta2: Annotated[float | None, _opt("--beta2", help="Adam beta2. [default: 0.999]")] = None,
    weight_decay: Annotated[float | None, _opt("--weight-decay", help="[default: 0]")] = None,
    l1: Annotated[float | None, _opt("--l1", help="L1 penalty on the weights of --reg-layers. [default: 0]")] = None,
    l2: Annotated[float | None, _opt("--l2", help="L2 penalty on the weights of --reg-layers. [default: 0]")] = None,
    reg_layers: Annotated[str | None, _opt("--reg-layers", help="Glob over layer names for --l1/--l2, e.g. "
                                           "'head.*'. [default: *]")] = None,
    schedule: Annotated[str | None, _opt("--schedule", help="constant | step | cosine | onecycle | plateau. "
                                         "[default: constant]")] = None,
    warmup_epochs: Annotated[float | None, _opt("--warmup-epochs", help="Linear warmup. [default: 0]")] = None,
    step_size: Annotated[int | None, _opt("--step-size", help="step: epochs between decays. [default: 30]")] = None,
    gamma: Annotated[float | None, _opt("--gamma", help="step/plateau decay factor. [default: 0.1]")] = None,
    plateau_patience: Annotated[int | None, _opt("--plateau-patience", help="[default: 5]")] = None,
    label_smoothing: Annotated[float | None, _opt("--label-smoothing", help="[default: 0]")] = None,
    clip_grad: Annotated[float | None, _opt("--clip-grad", help="Max gradient norm. [default: off]")] = None,
    patience: Annotated[int | None, _opt("--patience", help="Early stopping patience in epochs; restores the best "
                                         "weights. 0 = off. [default: 0]")] = None,
    monitor: Annotated[str | None, _opt("--monitor", help="val_loss | val_acc. [default: val_loss]")] = None,
    min_delta: Annotated[float | None, _opt("--min-delta", help="[default: 0]")] = None,
    augment: Annotated[str | None, _opt("--augment", help="Preset (none, flip, light, s2, s4) or items, e.g. "
                                        "flip,translate=0.1,rotate=20,zoom=0.2,shear=0.2,brightness=0.8-1.2. "
                                        "[default: none]")] = None,
    dropout: Annotated[float | None, _opt("--dropout", help="Override the model's dropout.")] = None,
    init: Annotated[str | None, _opt("--init", help="default | glorot (Keras) | he. [default: default]")] = None,
    seed: Annotated[int | None, _opt("--seed", help="Seed for weights, shuffling, augmentation (and the split "
                                     "unless --data-seed). [default: 0]")] = None,
    deterministic: Annotated[bool | None, _opt("--deterministic/--no-deterministic", help="Deterministic "
                                               "algorithms only (slower on GPU).")] = None,
    device: Annotated[str | None, _opt("--device", help="auto | cpu | cuda | cuda:N | mps. [default: auto]")] = None,
    precision: Annotated[str | None, _opt("--precision", help="auto | fp32 | bf16 | fp16. [default: auto: bf16 "
                                          "or fp16 on CUDA, fp32 on CPU]")] = None,
    channels_last: Annotated[bool | None, _opt("--channels-last/--no-channels-last", help="[default: on CUDA]")] = None,
    compile_model: Annotated[bool | None, _opt("--compile/--no-compile", help="torch.compile the model.")] = None,
    max_params: Annotated[int | None, _opt("--max-params", help="Refuse (exit 1) a model with more trainable "
                                           "parameters, before training.")] = None,
    workers: Annotated[int | None, _opt("--workers", help="DataLoader workers for file-index datasets.")] = None,
    config: Annotated[Path | None, _opt("--config", help="JSON or TOML file of training options (flags win).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Parent folder of the run directory.")] = OUT_DEFAULT,
    resume: Annotated[Path | None, _opt("--resume", help="Continue an interrupted run directory exactly.")] = None,
    quiet: QuietFlag = False,
    json_output: JsonFlag = False,
) -> None:
    """Train a zoo model on a dataset into a run directory (config, per-epoch metrics, checkpoints, summary)."""
    from cnnbench.config import resolve_config
    from cnnbench.training import resume_run, train_run

    passed = {
        "model": model, "epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": optimizer,
        "momentum": momentum, "nesterov": nesterov, "beta1": beta1, "beta2": beta2, "weight_decay": weight_decay,
        "l1": l1, "l2": l2, "reg_layers": reg_layers, "schedule": schedule, "warmup_epochs": warmup_epochs,
        "step_size": step_size, "gamma": gamma, "plateau_patience": plateau_patience,
        "label_smoothing": label_smoothing, "clip_grad": clip_grad, "patience": patience, "monitor": monitor,
        "min_delta": min_delta, "augment": augment, "dropout": dropout, "init": init, "seed": seed,
        "deterministic": deterministic, "device": device, "precision": precision, "channels_last": channels_last,
        "compile": compile_model, "max_params": max_params, "workers": workers,
    }  # fmt: skip
    from cnnbench.cli.progress import RichProgress

    log = log_to_stderr(quiet)
    display = RichProgress(stderr()) if not quiet else contextlib.nullcontext()
    if resume is not None:
        given = sorted(k for k, v in passed.items() if v is not None and k not in ("epochs", "device"))
        if given or dataset or config:
            given += ["dataset"] * bool(dataset) + ["config"] * bool(config)
            raise typer.BadParameter(f"--resume continues the run with its saved options; only --epochs and --device "
                                     f"may be given (got {', '.join(given)})", param_hint="--resume")  # fmt: skip
        with display as progress:
            result = resume_run(resume, epochs=epochs, device=device, progress=progress, log=log)
    else:
        train_config = resolve_config(passed, config)
        data = data_options(dataset=dataset or "digits", root=root, split=split, val_fraction=val_fraction,
                            seed=train_config.seed if data_seed is None else data_seed, classes=classes,
                            grayscale=grayscale, size=size, source=source, download=download,
                            storage=storage)  # fmt: skip
        with display as progress:
            result = train_run(data, train_config, out=out, progress=progress, log=log)
    summary = result.summary
    if json_output:
        emit_json({"run_dir": str(result.run.path), **summary})
    else:
        best = summary["best"]
        stdout().print(
            f"{result.status}: {result.run.path}\n"
            f"best epoch {summary['best_epoch']}/{summary['epochs_completed']}: val_loss {best['val_loss']:.4f} "
            f"val_acc {best['val_acc']:.4f} (train acc {best['train_acc']:.4f}); "
            f"{summary['params']['trainable']:,} trainable parameters",
            markup=False,
        )  # fmt: skip
    if result.status == "interrupted":
        stderr().print(f"interrupted after epoch {summary['epochs_completed']}; resume with: "
                      f"cnnbench train --resume {result.run.path}", markup=False)  # fmt: skip
        raise typer.Exit(130)
