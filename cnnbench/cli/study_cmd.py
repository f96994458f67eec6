from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cnnbench.cli.common import JsonFlag, QuietFlag, configure_logging, emit_json, stdout
from cnnbench.cli.options import data_values, with_options
from cnnbench.cli.progress import progress_display


@with_options("study")
def study(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Study to run; omit to list them.", show_default=False)] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Study folder.",
                                             show_default="results/studies/NAME")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Override every run's epochs (a quick look).",
                                               show_default="each run's own")] = None,
    scale: Annotated[str, typer.Option("--scale", help="Recipe studies (s1-s5): smoke (offline stand-in data, few "
                                       "epochs) or full (the real data, the seed's epochs, pretrained weights).")] = "smoke",
    seeds: Annotated[int | None, typer.Option("--seeds", help="Recipe studies: repeat every run over seeds 0..N-1; "
                                              "tables show mean ± std and n.", show_default="the recipe's")] = None,
    trials: Annotated[int | None, typer.Option("--trials", help="Recipe studies: trials per search.",
                                               show_default="the recipe's")] = None,
    set_values: Annotated[list[str] | None, typer.Option("--set", metavar="NAME=VALUE", help="Recipe studies: a dotted run-spec "
                                                         "name set on every run (repeatable), e.g. train.device=cuda.",
                                                         show_default=False)] = None,
    plan: Annotated[bool, typer.Option("--plan", help="Recipe studies: print the runs, searches and prunings it "
                                       "would do, the data and weights files it needs (and which are missing) and an "
                                       "estimate of the time on this machine; nothing is trained.")] = False,
    quiet: QuietFlag = False,
    json_output: JsonFlag = False,
    **options: Any,  # --root (cnnbench/spec/run.py OPTIONS)
) -> None:
    """Run a named study end to end (train, evaluate, report) and print its table; --plan says what it would run and
    for how long first."""
    from cnnbench.studies.catalog import STUDIES
    from cnnbench.studies.context import StudyContext

    if name is None and plan:
        raise typer.BadParameter("name the study to plan, e.g. `cnnbench study s3 --plan`", param_hint="--plan")
    if name is None:
        rows = [{"name": n, "description": STUDIES.get(n).description} for n in STUDIES]
        if json_output:
            emit_json({"studies": rows})
        else:
            stdout().print("\n".join(f"{r['name']:<10} {r['description']}" for r in rows), markup=False)
        return
    entry = STUDIES.get(name)
    for flag, value in (("--epochs", epochs), ("--seeds", seeds), ("--trials", trials)):
        if value is not None and value <= 0:
            raise typer.BadParameter(f"{value}: expected a number greater than zero", param_hint=flag)
    from cnnbench.studies.recipes import SCALES

    if scale not in SCALES:
        raise typer.BadParameter(f"{scale!r}: choose from {', '.join(SCALES)}", param_hint="--scale")

    configure_logging(quiet)
    root = data_values(ctx, "study")["root"]
    context = StudyContext(out=out or Path("results/studies") / name, root=root, epochs=epochs,
                           progress=lambda label: progress_display(quiet, label=label), scale=scale, seeds=seeds,
                           trials=trials, overrides=_assignments(set_values or []))  # fmt: skip
    if plan:
        _print_plan(name, context, json_output)
        return
    result = entry.run(context)
    if json_output:
        emit_json({"study": name, **{k: v for k, v in result.items() if k != "table"}})
        return
    console = stdout()
    console.print(result["table"], markup=False)
    console.print(f"\n{len(result['runs'])} runs in {context.out / 'runs'}; report: {result['files']['markdown']}",
                  markup=False)  # fmt: skip


def _print_plan(name: str, context: Any, json_output: bool) -> None:
    from cnnbench.studies.plan import format_plan, plan_recipe
    from cnnbench.studies.recipes import load_recipe, recipe_names

    if name not in recipe_names():
        raise typer.BadParameter(f"{name!r} is not a recipe study; --plan applies to {', '.join(recipe_names())}",
                                 param_hint="--plan")  # fmt: skip
    result = plan_recipe(load_recipe(name, context.scale), context, seeds=context.seeds, trials=context.trials)
    if json_output:
        emit_json(result.to_dict())
    else:
        stdout().print(format_plan(result), markup=False, soft_wrap=True)


def _assignments(items: list[str]) -> dict:
    """--set NAME=VALUE pairs; VALUE read as a TOML value (1e-3, true, [0.8, 0.1, 0.1], "text") or else as text."""
    import tomllib

    from cnnbench.core.errors import UsageError
    from cnnbench.spec.run import RunSpec

    values = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise typer.BadParameter(f"{item!r}: expected NAME=VALUE, e.g. train.device=cuda", param_hint="--set")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        values[name.strip()] = value
    try:
        RunSpec().with_values(values)  # an unknown name or a bad value: refused before anything runs
    except UsageError as error:
        raise typer.BadParameter(str(error), param_hint="--set") from None
    return values
