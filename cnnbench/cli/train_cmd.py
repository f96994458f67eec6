from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cnnbench.cli.common import JsonFlag, QuietFlag, configure_logging
from cnnbench.cli.options import passed_values, typed_on_command_line, with_spec_options
from cnnbench.cli.progress import progress_display, show_result


@with_spec_options("train")
def train(
    ctx: typer.Context,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue an interrupted run directory exactly "
                                                "(only --epochs and --device may change).", show_default=False,
                                                rich_help_panel="Run")] = None,
    quiet: QuietFlag = False,
    json_output: JsonFlag = False,
    **options: Any,  # the run specification's options (cnnbench/spec.py OPTIONS), read from ctx.params
) -> None:
    """Train a zoo model on a dataset into a run directory (config, per-epoch metrics, checkpoints, summary)."""
    from cnnbench.spec.run import base_for, resolve
    from cnnbench.runs.kinds import resume_run, run

    configure_logging(quiet)
    if resume is not None:
        allowed = {"resume", "train__epochs", "train__device", "quiet", "json_output"}
        given = sorted(f"--{name.split('__')[-1].replace('_', '-')}" for name in typed_on_command_line(ctx)
                       if name not in allowed)  # fmt: skip
        if given:
            raise typer.BadParameter(f"--resume continues the run with its saved options; only --epochs and --device "
                                     f"may be given (got {', '.join(given)})", param_hint="--resume")  # fmt: skip
        typed = passed_values(ctx, "train")
        with progress_display(quiet) as progress:
            result = resume_run(resume, epochs=typed.get("train.epochs"), device=typed.get("train.device"),
                                progress=progress)  # fmt: skip
    else:
        spec = resolve(passed_values(ctx, "train"), options["config"], base=base_for("train"))
        with progress_display(quiet) as progress:
            result = run(spec, out=options["out"], progress=progress)
    show_result(result, json_output=json_output)
