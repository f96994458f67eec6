from __future__ import annotations

from typing import Any

import typer

from cnnbench.cli.common import JsonFlag, QuietFlag, configure_logging
from cnnbench.cli.options import passed_values, with_spec_options
from cnnbench.cli.progress import progress_display, show_result


@with_spec_options("finetune")
def finetune(
    ctx: typer.Context,
    quiet: QuietFlag = False,
    json_output: JsonFlag = False,
    **options: Any,  # the run specification's options (cnnbench/spec.py OPTIONS), read from ctx.params
) -> None:
    """Fine-tune a pretrained torchvision backbone (or any cnnbench run) with a new head and a freezing policy."""
    from cnnbench.spec.run import base_for, resolve
    from cnnbench.runs.kinds import run

    configure_logging(quiet)
    spec = resolve(passed_values(ctx, "finetune"), options["config"], base=base_for("finetune"))
    with progress_display(quiet) as progress:
        result = run(spec, out=options["out"], progress=progress)
    show_result(result, json_output=json_output)
