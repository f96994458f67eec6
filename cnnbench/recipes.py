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
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnbench.errors import CheckFailed, UsageError
from cnnbench.spec import RunSpec, base_for

if TYPE_CHECKING:
    from cnnbench.study import StudyContext

RECIPES = Path(__file__).parent / "studies"
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


# --- running --------------------------------------------------------------------------------------------------------


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


def run_recipe(recipe: Recipe, context: StudyContext, *, seeds: int | None = None,
               trials: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Run every step not yet done, evaluate on the test split, and write the report. Returns its summary."""
    started = time.perf_counter()
    seeds = seeds or recipe.seeds
    trials = trials or recipe.trials
    if recipe.scale == "full":
        preflight(recipe, context)
    tally = Tally()
    rows: list[Row] = []
    made: dict[tuple[str, int], Path] = {}  # (step, seed) -> its first sweep point's run: parents of later steps
    for step in recipe.steps:
        for index, variant in enumerate(step.variants()):
            first_refs = {name: path for (name, s), path in made.items() if s == 0}
            best_of_search = _search(recipe, step, variant, context, trials, tally, first_refs) if step.tune else None
            for seed in range(seeds):
                folder = context.out / "runs" / _folder_name(step.name) / f"{_slug(variant, step)}-s{seed}"
                if step.prune:
                    path = _prune(step, made[(step.prune["parent"], seed)], folder, context, tally)
                else:
                    refs = {name: path for (name, s), path in made.items() if s == seed}
                    spec = best_of_search or _spec_of(variant, root=context.root, refs=refs,
                                                      overrides=_overrides(context))  # fmt: skip
                    spec = spec.with_values({"train.seed": spec.train.seed + seed})  # seed 42 in a recipe: 42, 43, ...
                    path = _ensure_run(spec, folder, context, tally, label=variant.label)
                _ensure_evaluated(path, context)
                if index == 0:
                    made[(step.name, seed)] = path.resolve()
                rows.append(Row(variant, seed, path))
    from cnnbench.study_report import write_study_report

    return write_study_report(recipe, context, rows, seeds=seeds, trials=trials, tally=tally,
                              seconds=time.perf_counter() - started)  # fmt: skip


def _overrides(context: StudyContext) -> dict[str, Any]:
    """What the command line sets on every run: --set NAME=VALUE, and --epochs."""
    return {**context.overrides, **({"train.epochs": context.epochs} if context.epochs is not None else {})}


def _slug(variant: Variant, step: Step) -> str:
    point = variant.label[len(step.name):].strip(" ()")
    name = _folder_name(point) if point else "run"
    if len(name) >= 40:  # slug() cut it: two points could share the folder
        import hashlib

        name = f"{name[:31]}-{hashlib.sha256(point.encode()).hexdigest()[:8]}"
    return name


def _folder_name(text: str) -> str:
    from cnnbench.runs import slug

    return slug(text.replace("<=", "le"))


def _ensure_run(spec: RunSpec, folder: Path, context: StudyContext, tally: Tally, *, label: str) -> Path:
    """The folder's completed run of exactly this specification, resuming an interrupted one, else a new run."""
    from cnnbench.runs import DamagedRun, RunDir
    from cnnbench.training import resume_run, run, saved_spec

    wanted = _identity(spec)
    for path in sorted(folder.glob("*/config.json"), reverse=True):  # newest first
        run_dir = RunDir(path.parent)
        try:
            config = run_dir.config()
            same = config.get("recipe_identity", _identity(saved_spec(config))) == wanted
        except DamagedRun:
            continue
        if not same:
            continue
        status = run_dir.status()
        if status in FINAL:
            tally.kept += 1
            return _completed_path(run_dir.path, status, tally)
        if status in ("interrupted", "incomplete"):
            context.log(f"{label}: resuming {run_dir.path}")
            try:
                with context.progress(label) as progress:
                    result = resume_run(run_dir.path, progress=progress, log=context.log)
            except UsageError as error:  # no last.pt (stopped in its first epoch), a damaged one, nothing left to do
                context.log(f"{label}: cannot resume {run_dir.path} ({error}); training it again beside it")
                break
            tally.resumed += 1
            return _completed(result, tally)
    with context.progress(label) as progress:
        result = run(spec, out=folder, progress=progress, log=context.log, extra={"recipe_identity": wanted})
    tally.ran += 1
    return _completed(result, tally)


FINAL = ("completed", "diverged")  # a diverged run is a result of its configuration (S2's lr "too large"), kept


def _identity(spec: RunSpec) -> str:
    """What makes two runs the same run, as the study asked for it (recorded in config.json, since a run normalises
    some values as it starts): the whole specification but where the data lives and whether it could be downloaded."""
    import hashlib
    import json

    values = {k: v for k, v in spec.flat().items() if k not in ("data.root", "data.download")}
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _completed(result, tally: Tally | None = None) -> Path:
    from cnnbench.study import check_finished

    check_finished(result, accepted=FINAL)
    return _completed_path(result.run.path, result.status, tally)


def _completed_path(path: Path, status: str, tally: Tally | None) -> Path:
    if status == "diverged" and tally is not None:
        tally.notes.append(f"{path.name} diverged (its row shows no test figures); see {path / 'summary.json'}")
    return path


def _ensure_evaluated(path: Path, context: StudyContext) -> None:
    from cnnbench.evaluation import evaluate_run
    from cnnbench.runs import RunDir

    run_dir = RunDir(path)
    if run_dir.status() == "completed" and "test" not in run_dir.evaluations():
        evaluate_run(path, split="test", root=context.root)


def _search(recipe: Recipe, step: Step, variant: Variant, context: StudyContext, trials: int, tally: Tally,
            refs: dict[str, Path]) -> RunSpec:  # fmt: skip
    """Run (or continue) the step's search and return its best trial's specification. Trials start from the first
    seed's parent runs; the best configuration then runs once per seed like any other row."""
    from cnnbench.tuning import TuneOptions, load_space, tune

    options = step.tune or {}
    space_name, space = load_space(options["space"])
    base = _spec_of(variant, root=context.root, refs=refs, overrides=_overrides(context))
    # The search's folder is named by what it searches from: a changed recipe (or --set) starts a new search.
    import hashlib
    import json

    what = json.dumps([_identity(base), options, trials], sort_keys=True, default=str)
    name = f"{_folder_name(step.name)}-{hashlib.sha256(what.encode()).hexdigest()[:8]}"
    tune_options = TuneOptions(study=f"{recipe.name}-{name}", folder=context.out / "tune" / name,
                               n_trials=trials, sampler=options.get("sampler", "random"),
                               pruner=options.get("pruner", "none"), repeats=int(options.get("repeats", 1)), seed=0,
                               max_params=options.get("max_params"),
                               max_macs=options.get("max_macs"))  # fmt: skip
    summary = tune(base, space_name, space, tune_options, log=context.log, progress=context.progress)
    best = summary.get("best")
    if not best:
        raise CheckFailed(f"study stopped: the search {step.name} completed no trial ({tune_options.folder})")
    tally.notes.append(f"{step.name}: best of {summary['trials']} trials (trial {best['trial']}, val_acc "
                       f"{best['value']:.4f}: {best['params']}); trials in {tune_options.folder}")  # fmt: skip
    return RunSpec.from_dict(best["spec"])


def _prune(step: Step, parent: Path, folder: Path, context: StudyContext, tally: Tally) -> Path:
    from cnnbench.pruning import PruneOptions, prune_run
    from cnnbench.runs import DamagedRun, RunDir

    options = step.prune or {}
    amount = float(options["amount"])
    epochs = context.epochs if context.epochs is not None else int(options.get("finetune_epochs", 2))
    asked = {"method": options.get("method", "magnitude"), "layers": options.get("layers", "conv,linear"),
             "schedule": options.get("schedule", "oneshot"), "amount": amount}  # fmt: skip
    for path in sorted(folder.glob("*/config.json"), reverse=True):
        run_dir = RunDir(path.parent)
        try:
            config = run_dir.config()
        except DamagedRun:
            continue
        record = config.get("pruning") or {}
        if (run_dir.status() == "completed" and config.get("parent") == str(parent.resolve())
                and {k: record.get(k) for k in asked} == asked
                and (config.get("spec") or {}).get("train", {}).get("epochs") == epochs):  # fmt: skip
            tally.kept += 1
            return run_dir.path
    prune_options = PruneOptions(method=asked["method"], layers=asked["layers"], amounts=(amount,),
                                 schedule=asked["schedule"],
                                 finetune_epochs=epochs, repeats=3, report_dir=folder / "report")  # fmt: skip
    with context.progress(f"{step.name} (prune {amount:g})") as progress:
        outcome = prune_run(parent, prune_options, out=folder, root=context.root, progress=progress,
                            log=context.log)  # fmt: skip
    tally.ran += 1
    return _completed(outcome.runs[0], tally)


def preflight(recipe: Recipe, context: StudyContext) -> None:
    """At full scale, before anything trains: every dataset prepared (fetched where it can be) and every pretrained
    backbone's weights at hand; the first thing missing stops the study with what to put where."""
    from cnnbench.models.transfer import imagenet_weights_file
    from cnnbench.resources import prepared

    seen_data, seen_weights = set(), set()
    for step in recipe.steps:
        for variant in step.variants():
            spec = _spec_of(variant, root=context.root, overrides=_overrides(context))
            key = repr(spec.data)
            if key not in seen_data:
                seen_data.add(key)
                context.log(f"checking data: {spec.data.dataset} under {spec.data.root}")
                prepared(spec.data, log=context.log)  # held for the runs that follow (resources keeps it)
            if spec.kind == "finetune" and spec.model.weights in (None, "imagenet") and spec.model_name:
                if spec.model_name not in seen_weights:
                    seen_weights.add(spec.model_name)
                    imagenet_weights_file(spec.model_name)  # fetched if absent; read when a run loads it


def aggregate(values: list[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for one value) and n."""
    clean = [v for v in values if v is not None and v == v]
    if not clean:
        return float("nan"), float("nan"), 0
    return statistics.fmean(clean), statistics.stdev(clean) if len(clean) > 1 else 0.0, len(clean)
