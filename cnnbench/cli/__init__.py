"""The `cnnbench` command line: one module per command, each a thin layer over one core function.

`main()` runs the Typer app in non-standalone mode so that every error ends the same way: one line on stderr naming
the bad value and what is accepted, and exit code 2 for usage errors (1 for a failed check, 130 for Ctrl-C), never a
traceback.
"""

from __future__ import annotations

import sys

import typer

from cnnbench.cli import (
    budget_cmd,
    datasets_cmd,
    evaluate_cmd,
    finetune_cmd,
    models_cmd,
    prepare_cmd,
    report_cmd,
    study_cmd,
    train_cmd,
)
from cnnbench.errors import CnnbenchError

app = typer.Typer(
    name="cnnbench",
    help="Run, compare and reproduce convolutional-network studies.",
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from cnnbench import __version__

        typer.echo(f"cnnbench {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print cnnbench's version and exit.", is_eager=True,
                                 callback=_print_version),
) -> None:
    """Run, compare and reproduce convolutional-network studies."""


app.command("datasets")(datasets_cmd.datasets)
app.command("models")(models_cmd.models)
app.command("prepare")(prepare_cmd.prepare)
app.command("budget")(budget_cmd.budget)
app.command("train")(train_cmd.train)
app.command("finetune")(finetune_cmd.finetune)
app.command("evaluate")(evaluate_cmd.evaluate)
app.command("report")(report_cmd.report)
app.command("study")(study_cmd.study)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args or ["--help"], prog_name="cnnbench", standalone_mode=False)
    except CnnbenchError as error:
        return _fail(str(error), error.exit_code)
    except typer.TyperException as error:  # typer's vendored click usage errors: bad flag, bad value, missing argument
        context = getattr(error, "ctx", None)
        where = f" (see '{context.command_path} --help')" if context is not None else ""
        return _fail(f"{error.format_message()}{where}", error.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        return _fail("interrupted", 130)
    return code if isinstance(code, int) else 0


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"cnnbench: error: {message}\n" if code != 130 else f"cnnbench: {message}\n")
    sys.stderr.flush()
    return code


def run() -> None:
    """Console entry point."""
    sys.exit(main())
