"""Every command's run, data and model options, made from the one table of them (cnnbench/spec/run.py OPTIONS).

An option is declared once there, with its dotted name, flags, help, panel and the commands that take it; its default
comes from the spec's dataclasses (for `kind`'s base: finetune's differ). `with_options(command)` appends one Typer
parameter per option of that command to its signature (Typer reads `__signature__`), before its own trailing
--quiet/--json; `train`, `finetune` and `tune` also get --config and --out (`with_spec_options`), and `prune` gets
train's training options under its own panel and defaults (the parent's). A command reads them back with
`passed_values` (only what the user typed, {dotted name: value}: a --config file fills the rest and a default never
overrides it) or `values` (typed or default).
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


def parameter(option: Option, kind: str, *, flags: tuple[str, ...] | None = None, panel: str | None = None,
              show_default: str | None = None) -> inspect.Parameter:
    """The Typer parameter of one table option, for a command starting from `kind`'s defaults. An option whose
    default needs words (or is None, or is parsed from text) defaults to None and shows the words in --help;
    `show_default` does the same with other words (prune: "the parent's"). `flags` and `panel` rename and regroup it
    for one command (prune's --lr-schedule, where --schedule is the pruning schedule)."""
    flags = flags or option.flags
    default = default_of(option.name, base_for(kind))
    words = show_default is not None or option.default is not None or default is None or option.parse is not None
    shown = show_default or (option.shown_default(kind) if words else True)
    flag = typer.Option(*flags, help=option.help, show_default=shown, rich_help_panel=panel or option.panel,
                        metavar="" if "/" in flags[0] else None)  # fmt: skip
    return inspect.Parameter(option.param, inspect.Parameter.KEYWORD_ONLY, default=None if words else default,
                             annotation=Annotated[_cli_type(option) | None, flag])  # fmt: skip


def splice(command: Callable[..., None], shared: list[inspect.Parameter]) -> Callable[..., None]:
    """Put `shared` into the command's signature after its own options and before its trailing --quiet/--json; the
    command takes them as **options."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.kind is not p.VAR_KEYWORD]
    tail = [p for p in own if p.name in ("quiet", "json_output")]
    head = [p for p in own if p not in tail]
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in [*head, *shared, *tail]]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return command


def with_options(command_name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command the table's options for `command_name` (prepare's data options, budget's shape options...)."""
    return lambda command: splice(command, [parameter(option, command_name) for option in options_for(command_name)])


def with_spec_options(kind: str, *, out: bool = True) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command the run specification's options for `kind`, plus --config and (unless `out` is False: tune
    writes into its study's --folder) --out."""
    run_file = [inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ConfigFile)]
    if out:
        run_file.append(inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, default=Path("results/runs"),
                                          annotation=Out))  # fmt: skip
    return lambda command: splice(command, [*(parameter(option, kind) for option in options_for(kind)), *run_file])


def passed_values(ctx: typer.Context, kind: str) -> dict[str, Any]:
    """{dotted name: value} of the table's options typed on the command line."""
    typed = set(typed_on_command_line(ctx))
    return {option.name: _value(option, ctx) for option in options_for(kind) if option.param in typed}


def values(ctx: typer.Context, command_name: str) -> dict[str, Any]:
    """{dotted name: value} of every table option of the command: what was typed, else the spec's default."""
    typed = passed_values(ctx, command_name)
    base = base_for(command_name)
    return {option.name: typed.get(option.name, default_of(option.name, base)) for option in options_for(command_name)}


def data_values(ctx: typer.Context, command_name: str) -> dict[str, Any]:
    """The command's data options as PrepareOptions' field names ({"size": 32, "root": ...}), typed or default."""
    return {name.removeprefix("data."): value for name, value in values(ctx, command_name).items()}


def _value(option: Option, ctx: typer.Context) -> Any:
    value = ctx.params[option.param]
    return option.parse(value) if option.parse is not None and value is not None else value


def typed_on_command_line(ctx: typer.Context) -> list[str]:
    return [name for name in ctx.params if ctx.get_parameter_source(name).name in ("COMMANDLINE", "ENVIRONMENT")]


