"""Study recipes: the seed studies (S1-S5) as data, run as chains of cnnbench's own steps.

A recipe is one TOML file in cnnbench/studies/: the base run specification (dotted names), what each scale changes
(`smoke`: offline stand-in data, few epochs and trials; `full`: the real data, the seed's epochs, pretrained weights),
the runs (train or finetune; a sweep over dotted names; a search whose best configuration becomes the row; a pruning of
another step's run) and the tables they fill, with the figures the original report gave beside ours.

Running a recipe expands it into run specifications and runs only what is not done: each (step, sweep point, seed) has
its own folder under runs/, a completed run there with the same specification is kept, an interrupted one is resumed,
and a search continues its own journal. The report (report.md, report.csv, one plot per table) is written from the run
directories, so every number in it can be traced to a run folder.
"""

from __future__ import annotations

import itertools
import statistics
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnbench.core.errors import UsageError
from cnnbench.spec.run import RunSpec, base_for


RECIPES = Path(__file__).parent  # the recipe files sit beside this module
SCALES = ("smoke", "full")
RUN_REFERENCE = "run:@"  # "model.weights" = "run:@STEP": that step's run (same seed) is the parent of this one


@dataclass(frozen=True)
class Variant:
    """One row of a table: a step at one point of its sweep."""

    step: Step
    label: str
    values: dict[str, Any]  # every dotted value of the row's runs (the seed aside)
    point: dict[str, Any]  # the sweep's values alone: what the row is labelled by
    original: dict[str, Any]  # column -> the figure the original report gave (a number, or text such as "0.47-0.51")


@dataclass(frozen=True)
class Step:
    name: str
    tables: tuple[str, ...]  # the tables its rows appear in
    kind: str  # train | finetune (a pruning step makes kind-prune runs of its parent)
    values: dict[str, Any]
    sweep: dict[str, list[Any]]
    tune: dict[str, Any] | None
    prune: dict[str, Any] | None
    original: dict[str, Any]
    originals: list[dict[str, Any]]  # {"when": {dotted: value}, column: figure}: a figure for some sweep points only

    def variants(self) -> list[Variant]:
        names = list(self.sweep)
        rows = []
        for point in (dict(zip(names, combo)) for combo in itertools.product(*(self.sweep[n] for n in names))):
            label = self.name
            if point:
                label += " (" + ", ".join(f"{name.rsplit('.', 1)[-1]}={value}" for name, value in point.items()) + ")"
            original = dict(self.original)
            for entry in self.originals:
                if all(point.get(k, self.values.get(k)) == v for k, v in entry.get("when", {}).items()):
                    original.update({k: v for k, v in entry.items() if k != "when"})
            rows.append(Variant(self, label, {**self.values, **point}, point, original))
        return rows


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    source: str
    scale: str
    data_note: str  # what the data is at this scale (a stand-in says so)
    weights_note: str  # where pretrained weights come from at this scale
    seeds: int
    trials: int
    tables: list[dict[str, Any]]
    steps: list[Step]
    path: Path


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES.glob("*.toml"))


def load_recipe(name: str, scale: str) -> Recipe:
    """The recipe for this scale, checked: every dotted name is a run-spec field, every table and parent exists."""
    if scale not in SCALES:
        raise UsageError(f"bad --scale {scale!r}: choose from {', '.join(SCALES)}")
    path = RECIPES / f"{name}.toml"
    where = f"recipe {path}"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise UsageError(f"{where} cannot be read: {error}") from None
    scale_part = raw.get("scales", {}).get(scale, {})
    missing = [key for key in ("title", "source", "tables", "runs") if key not in raw]
    missing += [] if "data" in scale_part else [f"scales.{scale}.data"]
    if missing:
        raise UsageError(f"{where} lacks {', '.join(missing)}; compare it with the recipes that ship with cnnbench")
    base = {**raw.get("base", {}), **scale_part.get("set", {})}
    tables = raw["tables"]
    table_names = {t["name"] for t in tables}
    steps: list[Step] = []
    for entry in raw["runs"]:
        if scale not in entry.get("scales", SCALES):
            continue
        scaled = dict(entry.get(scale, {}))
        sweep = scaled.pop("sweep", entry.get("sweep", {}))
        in_tables = entry["table"] if isinstance(entry["table"], list) else [entry["table"]]
        step = Step(name=entry["name"], tables=tuple(in_tables), kind=entry.get("kind", "train"),
                    values={**base, **entry.get("set", {}), **scaled}, sweep=sweep, tune=entry.get("tune"),
                    prune=entry.get("prune"), original=entry.get("original", {}),
                    originals=entry.get("originals", []))  # fmt: skip
        for table in step.tables:
            if table not in table_names:
                raise UsageError(f"{where}: run {step.name!r} names table {table!r}; tables: {', '.join(table_names)}")
        known = {s.name for s in steps}
        parents = [step.prune["parent"]] if step.prune else []
        parents += [v[len(RUN_REFERENCE):] for v in step.values.values() if str(v).startswith(RUN_REFERENCE)]
        for parent in parents:
            if parent not in known:
                raise UsageError(f"{where}: run {step.name!r} starts from {parent!r}, which is not an earlier run")
        for variant in step.variants():
            _spec_of(variant, root=Path("data"))  # unknown names or bad values: refused before anything runs
        steps.append(step)
    return Recipe(name=name, title=raw["title"], source=raw["source"], scale=scale, data_note=scale_part["data"],
                  weights_note=scale_part.get("weights", ""), seeds=int(scale_part.get("seeds", 1)),
                  trials=int(scale_part.get("trials", 10)), tables=tables, steps=steps, path=path)  # fmt: skip


def _spec_of(variant: Variant, *, root: Path, refs: dict[str, Path] | None = None,
             overrides: dict[str, Any] | None = None) -> RunSpec:  # fmt: skip
    """The row's specification: the recipe's values, then the command line's (--set, --epochs), then the row's sweep
    point, so that a row is always trained at the values its label names."""
    values = {**variant.values, **(overrides or {}), **variant.point}
    for name, value in values.items():
        if isinstance(value, str) and value.startswith(RUN_REFERENCE):
            parent = (refs or {}).get(value[len(RUN_REFERENCE):])
            values[name] = f"run:{parent}" if parent else None
    spec = base_for(variant.step.kind).with_values({"data.root": root, **values})
    return spec


@dataclass
class Row:
    variant: Variant
    seed: int
    path: Path


@dataclass
class Tally:
    ran: int = 0
    resumed: int = 0
    kept: int = 0  # completed before, same specification: not run again
    notes: list[str] = field(default_factory=list)


def aggregate(values: list[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for one value) and n."""
    clean = [v for v in values if v is not None and v == v]
    if not clean:
        return float("nan"), float("nan"), 0
    return statistics.fmean(clean), statistics.stdev(clean) if len(clean) > 1 else 0.0, len(clean)
