from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cnnbench.cli import training_options as T
from cnnbench.cli.common import JsonFlag, QuietFlag, log_to_stderr


@T.with_training_options
def train(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Zoo model or fit:N (see `cnnbench models`). "
                                              "[default: mnist-7498]", show_default=False)] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue an interrupted run directory exactly.",
                                                show_default=False)] = None,
    quiet: QuietFlag = False,
    json_output: JsonFlag = False,
    **options: Any,  # the shared data and training options (cli/training_options.py), read from ctx.params
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
            result = resume_run(resume, epochs=options["epochs"], device=options["device"], progress=progress, log=log)
    else:
        train_config = resolve_config(passed, options["config"])
        data = T.data_from_params(ctx.params, seed=train_config.seed)
        with T.progress_display(quiet) as progress:
            result = train_run(data, train_config, out=options["out"], progress=progress, log=log)
    T.show_result(result, json_output=json_output)
