"""The options of `train` and `finetune`, made from the run specification's table (cnnbench/spec.py OPTIONS).

An option is declared once, in spec.py, with its dotted name, flags, help and panel; its default comes from the spec's
dataclasses (for `kind`'s base: finetune's differ). `with_spec_options(kind)` appends one Typer parameter per option
to a command's signature (Typer reads `__signature__`). `passed_values` returns only what the user typed on the command
line ({dotted name: value}), so a --config file fills the rest and a default never overrides it.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from cnnbench.spec.run import Option, base_for, default_of, field_type, options_for

ConfigFile = Annotated[Path | None, typer.Option("--config", help="TOML or JSON run specification: data, model "
                                                 "and train sections of the options below, by their field names "
                                                 "(examples/*.toml); flags given here win.", show_default=False,
                                                 rich_help_panel="Run")]  # fmt: skip
Out = Annotated[Path, typer.Option("--out", help="Parent folder of the run directory.", rich_help_panel="Run")]


def _cli_type(option: Option) -> type:
    """What the shell gives for an option: its field's type without None (text for values that need parsing)."""
    if option.parse is not None:
        return str
    arms = [arm for arm in typing.get_args(field_type(option.name)) or (field_type(option.name),) if arm is not type(None)]
    return arms[0]


def _parameter(option: Option, kind: str) -> inspect.Parameter:
    default = default_of(option.name, base_for(kind))
    words = option.default is not None or default is None or option.parse is not None
    is_flag = "/" in option.flags[0]
    flag = typer.Option(*option.flags, help=option.help, show_default=option.shown_default(kind) if words else True,
                        rich_help_panel=option.panel, metavar="" if is_flag else None)  # fmt: skip
    return inspect.Parameter(option.param, inspect.Parameter.KEYWORD_ONLY, default=None if words else default,
                             annotation=Annotated[_cli_type(option) | None, flag])  # fmt: skip


def with_spec_options(kind: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command the run specification's options for `kind`, plus --config and --out, before its own trailing
    --quiet/--json; the command takes them as **options and reads them with `passed_values`."""

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.kind is not p.VAR_KEYWORD]
        tail = [p for p in own if p.name in ("quiet", "json_output")]
        head = [p for p in own if p not in tail]
        shared = [_parameter(option, kind) for option in options_for(kind)]
        shared += [inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ConfigFile),
                   inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, default=Path("results/runs"),
                                     annotation=Out)]  # fmt: skip
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in [*head, *shared, *tail]]
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        return command

    return decorate


def passed_values(ctx: typer.Context, kind: str) -> dict[str, Any]:
    """{dotted name: value} of the run-specification options typed on the command line."""
    typed = set(typed_on_command_line(ctx))
    values = {}
    for option in options_for(kind):
        if option.param in typed:
            value = ctx.params[option.param]
            values[option.name] = option.parse(value) if option.parse is not None and value is not None else value
    return values


def typed_on_command_line(ctx: typer.Context) -> list[str]:
    return [name for name in ctx.params if ctx.get_parameter_source(name).name in ("COMMANDLINE", "ENVIRONMENT")]


def progress_display(quiet: bool):
    """A context manager giving the engine's progress display on stderr (None when quiet)."""
    import contextlib

    from cnnbench.cli.common import stderr
    from cnnbench.cli.progress import RichProgress

    return contextlib.nullcontext() if quiet else RichProgress(stderr())


def show_result(result, *, json_output: bool) -> None:
    """Print a finished (or stopped) run: the JSON summary, or two lines. Exit 130 when interrupted, 1 when the run
    ended without completing (diverged, or a callback's own status)."""
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
        how = "terminated (SIGTERM)" if summary.get("signal") == "SIGTERM" else "interrupted"
        stderr().print(f"{how} after epoch {summary['epochs_completed']}; resume with: "
                       f"cnnbench train --resume {result.run.path}", markup=False)  # fmt: skip
        raise typer.Exit(143 if summary.get("signal") == "SIGTERM" else 130)
    if result.status != "completed":
        stderr().print(f"cnnbench: error: run {result.status}: {summary.get('reason', '')}", markup=False)
        raise typer.Exit(1)
