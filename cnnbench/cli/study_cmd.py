from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from cnnbench.cli.common import JsonFlag, QuietFlag, RootOption, emit_json, log_to_stderr, stderr, stdout


def study(
    name: Annotated[str | None, typer.Argument(help="Study to run; omit to list them.", show_default=False)] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Study folder.",
                                             show_default="results/studies/NAME")] = None,
    root: RootOption = Path("data"),
    epochs: Annotated[int | None, typer.Option("--epochs", help="Override every run's epochs (a quick look).",
                                               show_default="each run's own")] = None,
    quiet: QuietFlag = False,
    json_output: JsonFlag = False,
) -> None:
    """Run a named study end to end (train, evaluate, report) and print its table."""
    from cnnbench.study import STUDIES, StudyContext

    if name is None:
        rows = [{"name": n, "description": STUDIES.get(n).description} for n in STUDIES]
        if json_output:
            emit_json({"studies": rows})
        else:
            stdout().print("\n".join(f"{r['name']:<10} {r['description']}" for r in rows), markup=False)
        return
    entry = STUDIES.get(name)
    if epochs is not None and epochs <= 0:
        raise typer.BadParameter(f"{epochs}: expected a number of epochs greater than zero", param_hint="--epochs")

    def progress(label: str):
        if quiet:
            return contextlib.nullcontext()
        from cnnbench.cli.progress import RichProgress

        return RichProgress(stderr(), label=label)

    context = StudyContext(out=out or Path("results/studies") / name, root=root, epochs=epochs,
                           log=log_to_stderr(quiet), progress=progress)  # fmt: skip
    result = entry.run(context)
    if json_output:
        emit_json({"study": name, **{k: v for k, v in result.items() if k != "table"}})
        return
    console = stdout()
    console.print(result["table"], markup=False)
    console.print(f"\n{len(result['runs'])} runs in {context.out / 'runs'}; table: {result['files']['markdown']}",
                  markup=False)  # fmt: skip
