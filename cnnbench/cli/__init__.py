"""The `cnnbench` command line: one module per command, each a thin layer over one core function.

`main()` runs the Typer app in non-standalone mode so that every error ends the same way: one line on stderr naming
the bad value and what is accepted, and exit code 2 for usage errors and bad input (an unwritable or full destination
included), 1 for a failed check, 130 for Ctrl-C and 143 for SIGTERM, never a traceback. With `--json` a failure also
prints one JSON object on stdout ({"error": ..., "exit_code": ...}), so a script always gets exactly one. `--debug`
(anywhere on the line) or CNNBENCH_DEBUG=1 lets unexpected errors through with their traceback, for bug reports.
"""

from __future__ import annotations

import os
import signal
import sys

import typer

from cnnbench.cli import (
    budget_cmd,
    datasets_cmd,
    evaluate_cmd,
    export_cmd,
    finetune_cmd,
    models_cmd,
    predict_cmd,
    prepare_cmd,
    prune_cmd,
    report_cmd,
    study_cmd,
    train_cmd,
    tune_cmd,
)
from cnnbench.cli.common import release_logging
from cnnbench.core.errors import CnnbenchError, Terminated

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
    debug: bool = typer.Option(False, "--debug", help="Show the traceback of an unexpected error (for a bug report; "
                               "also CNNBENCH_DEBUG=1). Accepted anywhere on the command line."),
) -> None:
    """Run, compare and reproduce convolutional-network studies."""


app.command("datasets")(datasets_cmd.datasets)
app.command("models")(models_cmd.models)
app.command("prepare")(prepare_cmd.prepare)
app.command("budget")(budget_cmd.budget)
app.command("train")(train_cmd.train)
app.command("finetune")(finetune_cmd.finetune)
app.command("prune")(prune_cmd.prune)
app.command("evaluate")(evaluate_cmd.evaluate)
app.command("export")(export_cmd.export)
app.command("predict")(predict_cmd.predict)
app.command("report")(report_cmd.report)
app.command("study")(study_cmd.study)
app.command("tune")(tune_cmd.tune)


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args or os.environ.get("CNNBENCH_DEBUG", "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    json_output = "--json" in args
    command = typer.main.get_command(app)
    _no_metavar_on_flags(command)
    previous = signal.signal(signal.SIGTERM, _terminate) if _main_thread() else None
    try:
        code = command.main(args=args or ["--help"], prog_name="cnnbench", standalone_mode=False)
    except CnnbenchError as error:
        return _fail(str(error), error.exit_code, json_output)
    except typer.TyperException as error:  # typer's vendored click usage errors: bad flag, bad value, missing argument
        context = getattr(error, "ctx", None)
        where = f" (see '{context.command_path} --help')" if context is not None else ""
        return _fail(f"{error.format_message()}{where}", error.exit_code, json_output)
    except Terminated:
        return _fail("terminated (SIGTERM)", 143, json_output)
    except (KeyboardInterrupt, typer.Abort):
        return _fail("interrupted", 130, json_output)
    except OSError as error:
        if debug:
            raise
        named = next((a for a in args if a in getattr(command, "commands", {})), None)  # the command that ran
        return _fail(describe_os_error(error, named), 2, json_output)
    except Exception as error:  # a bug: say so in one line unless asked for the traceback
        if debug:
            raise
        return _fail(f"internal error: {type(error).__name__}: {error} (run again with --debug for the traceback, and "
                     f"please report it)", 1, json_output)  # fmt: skip
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        release_logging()
    return code if isinstance(code, int) else 0


# The option that chooses where each command writes, for "choose another place (...)".
_WHERE = {"tune": "--folder", "prepare": "--root", "study": "--out or --root", "evaluate": "copy the run elsewhere",
          "report": "--out"}  # fmt: skip


def describe_os_error(error: OSError, command: str | None = None) -> str:
    """One line for a place that cannot be read or written: which path, why, and what to do."""
    from cnnbench.core.storage import UNWRITABLE_ERRNOS, unwritable

    where = _WHERE.get(command or "", "--out or --root")
    advice = where if where.startswith("copy") else f"choose another place ({where})"
    if error.errno in UNWRITABLE_ERRNOS and error.filename:
        return unwritable(error.filename, error, elsewhere=advice)
    if error.filename:  # e.g. a folder that cannot be made there (/proc/x): the place, and what to do
        return f"{error.filename}: {error.strerror or error}; check the path, or {advice}"
    return f"{error.strerror or error}; {advice}"


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _no_metavar_on_flags(command) -> None:
    """Flags take no value, so --help shows none (typer would print <bool> beside --json, --quiet, --help ...)."""
    for param in getattr(command, "params", []):
        if getattr(param, "is_flag", False):
            param.metavar = ""
    make_help_option = command.get_help_option  # --help is made on demand, per context

    def help_option(ctx):
        option = make_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        _no_metavar_on_flags(sub)


def _fail(message: str, code: int, json_output: bool = False) -> int:
    if json_output:
        from cnnbench.cli.common import emit_json

        emit_json({"error": message, "exit_code": code})
    sys.stderr.write(f"cnnbench: error: {message}\n" if code not in (130, 143) else f"cnnbench: {message}\n")
    sys.stderr.flush()
    return code


def run() -> None:
    """Console entry point."""
    sys.exit(main())
