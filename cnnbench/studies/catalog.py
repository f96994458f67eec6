"""The studies `cnnbench study NAME` runs: the demo, and every recipe (s1 ... s5) by its name.

A study is a plain function over the same core the commands use; it records nothing of its own beyond ordinary run
directories and a report, so every number it prints can be traced to a run folder.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cnnbench.spec.train import TrainConfig
from cnnbench.data.prepare import PrepareOptions
from cnnbench.core.registry import Registry
from cnnbench.evaluate.evaluation import evaluate_run
from cnnbench.report import build_table, collect, to_markdown, write_report
from cnnbench.runs import kinds
from cnnbench.studies.context import StudyContext, check_finished
from cnnbench.studies.recipes import RECIPES, load_recipe, recipe_names
from cnnbench.studies.runner import run_recipe
from cnnbench.spec.run import ModelChoice, RunSpec


@dataclass(frozen=True, kw_only=True)
class Study:
    name: str
    description: str
    run: Callable[[StudyContext], dict[str, Any]]


STUDIES: Registry[Study] = Registry("study")


def train_and_evaluate(context: StudyContext, specs: list[RunSpec], splits: tuple[str, ...] = ("test",)) -> list[Path]:
    """Run each spec into context.out/runs, evaluate it on `splits`, and return the run directories; a run that does
    not complete stops the study (check_finished)."""
    runs = []
    for spec in specs:
        if context.epochs is not None:
            spec = spec.with_values({"train.epochs": context.epochs})
        with context.progress(spec.model_name) as progress:
            result = kinds.run(spec, out=context.out / "runs", progress=progress)
        check_finished(result)
        for split in splits:
            evaluate_run(result.run.path, split=split)
        runs.append(result.run.path)
    return runs


def tabulate(context: StudyContext, runs: list[Path], columns: list[str]) -> dict[str, Any]:
    frame = collect(runs)
    order = {Path(r).resolve(): i for i, r in enumerate(runs)}  # the study's order, not the folders' name order
    frame = frame.sort_values("path", key=lambda paths: paths.map(lambda p: order.get(Path(p).resolve(), 0)))
    table = build_table(frame, columns=columns)
    files = write_report(table, context.out)
    return {"runs": [str(r) for r in runs], "table": to_markdown(table), "rows": table.to_dict(orient="records"),
            "files": {k: str(v) for k, v in files.items()}}  # fmt: skip


def demo(context: StudyContext) -> dict[str, Any]:
    """S1's recipe (Adam 1e-3, batch 256, 100 epochs, 7,500-parameter budget) on the bundled digits at 28x28."""
    base = RunSpec(data=PrepareOptions(dataset="digits", root=context.root, size=28, seed=0),
                   train=TrainConfig(epochs=100, batch_size=256, lr=1e-3, optimizer="adam", seed=0, max_params=7500))
    specs = [replace(base, model=ModelChoice(name=name)) for name in ("mnist-722", "mnist-7498", "fit:7500")]
    runs = train_and_evaluate(context, specs)
    columns = ["model", "params", "keras_params", "epochs", "best_epoch", "accuracy", "val_accuracy", "test_accuracy",
               "test_f1_weighted", "seconds_per_epoch", "images_per_s", "device"]  # fmt: skip
    return tabulate(context, runs, columns)


def _recipe_study(name: str) -> Study:

    title = tomllib.loads((RECIPES / f"{name}.toml").read_text(encoding="utf-8"))["title"]

    def run_study(context: StudyContext) -> dict[str, Any]:
        recipe = load_recipe(name, context.scale)
        return run_recipe(recipe, context, seeds=context.seeds, trials=context.trials)

    return Study(name=name, description=f"{title} (recipe cnnbench/studies/{name}.toml)", run=run_study)


STUDIES.register("demo", Study(
    name="demo",
    description="S1's two MNIST models and a fit:7500 model on the bundled digits (28x28), ~1 minute on 2 CPU cores",
    run=demo,
))  # fmt: skip


def _register_recipes() -> None:
    """Every recipe file in cnnbench/studies/ is a study of its name (s1 ... s5)."""
    for name in recipe_names():
        STUDIES.register(name, _recipe_study(name))


_register_recipes()
