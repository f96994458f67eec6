from __future__ import annotations

from typing import Annotated, Any

import typer

from cnnbench.cli import training_options as T
from cnnbench.cli.common import JsonFlag, QuietFlag, log_to_stderr


def _opt(*names: str, help: str):  # noqa: A002 - mirrors typer.Option's keyword
    return T.option(*names, help=help, panel="Transfer")


@T.with_training_options
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
    quiet: QuietFlag = False,
    json_output: JsonFlag = False,
    **shared: Any,  # the shared data and training options (cli/training_options.py), read from ctx.params
) -> None:
    """Fine-tune a pretrained torchvision backbone (or any cnnbench run) with a new head and a freezing policy."""
    from cnnbench.config import resolve_config
    from cnnbench.finetune import FINETUNE_DEFAULTS, FinetuneOptions, finetune_run

    train_config = resolve_config({**T.passed_training_options(ctx.params), "model": None}, shared["config"],
                                  base=FINETUNE_DEFAULTS)  # fmt: skip
    options = FinetuneOptions(backbone=backbone, weights=weights, head=head, units=units, activation=activation,
                              pool=pool, freeze=freeze, freeze_bn=freeze_bn, head_epochs=head_epochs,
                              head_lr=head_lr)  # fmt: skip
    data = T.data_from_params(ctx.params, seed=train_config.seed)
    with T.progress_display(quiet) as progress:
        result = finetune_run(data, train_config, options, out=shared["out"], progress=progress,
                              log=log_to_stderr(quiet))  # fmt: skip
    T.show_result(result, json_output=json_output)
