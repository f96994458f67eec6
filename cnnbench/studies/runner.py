"""Running a recipe: expand it into run specifications and run only what is not done.

Each (step, sweep point, seed) has its own folder under runs/, a completed run there with the same specification is
kept, an interrupted one is resumed, and a search continues its own journal; the report is written last
(studies/report.py) from the run directories.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from cnnbench.core.errors import CheckFailed, UsageError
from cnnbench.evaluate.evaluation import evaluate_run
from cnnbench.models.transfer import imagenet_weights_file
from cnnbench.prune.sweep import PruneOptions, prune_run
from cnnbench.runs import kinds
from cnnbench.runs.resources import prepared
from cnnbench.runs.rundir import DamagedRun, RunDir, slug
from cnnbench.search import TuneOptions, load_space, tune
from cnnbench.spec.run import RunSpec
from cnnbench.studies.context import StudyContext, check_finished
from cnnbench.studies.recipes import Recipe, Row, Step, Tally, Variant, _spec_of
from cnnbench.studies.report import write_study_report

logger = logging.getLogger(__name__)


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
                folder = run_folder(context, step, variant, seed)
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
    return write_study_report(recipe, context, rows, seeds=seeds, trials=trials, tally=tally,
                              seconds=time.perf_counter() - started)  # fmt: skip


def run_folder(context: StudyContext, step: Step, variant: Variant, seed: int) -> Path:
    """Where a row's run for one seed lives: runs/STEP/POINT-sSEED/."""
    return context.out / "runs" / _folder_name(step.name) / f"{_slug(variant, step)}-s{seed}"


def _overrides(context: StudyContext) -> dict[str, Any]:
    """What the command line sets on every run: --set NAME=VALUE, and --epochs."""
    return {**context.overrides, **({"train.epochs": context.epochs} if context.epochs is not None else {})}


def _slug(variant: Variant, step: Step) -> str:
    point = variant.label[len(step.name):].strip(" ()")
    name = _folder_name(point) if point else "run"
    if len(name) >= 40:  # slug() cut it: two points could share the folder
        name = f"{name[:31]}-{hashlib.sha256(point.encode()).hexdigest()[:8]}"
    return name


def _folder_name(text: str) -> str:
    return slug(text.replace("<=", "le"))


def existing_runs(spec: RunSpec, folder: Path) -> list[tuple[RunDir, str]]:
    """The runs in `folder` of exactly this specification with their status, newest first (damaged ones passed over):
    what a study keeps (completed, diverged) or resumes (interrupted, incomplete)."""
    wanted, found = _identity(spec), []
    for path in sorted(folder.glob("*/config.json"), reverse=True):  # newest first
        run_dir = RunDir(path.parent)
        try:
            config = run_dir.read_config()
            same = config.records.get("recipe_identity", _identity(config.run_spec())) == wanted
        except DamagedRun:
            continue
        if same:
            found.append((run_dir, run_dir.status()))
    return found


def _ensure_run(spec: RunSpec, folder: Path, context: StudyContext, tally: Tally, *, label: str) -> Path:
    """The folder's completed run of exactly this specification, resuming an interrupted one, else a new run."""
    wanted = _identity(spec)
    for run_dir, status in existing_runs(spec, folder):
        if status in FINAL:
            tally.kept += 1
            return _completed_path(run_dir.path, status, tally)
        if status in ("interrupted", "incomplete"):
            logger.info(f"{label}: resuming {run_dir.path}")
            try:
                with context.progress(label) as progress:
                    result = kinds.resume_run(run_dir.path, progress=progress)
            except UsageError as error:  # no last.pt (stopped in its first epoch), a damaged one, nothing left to do
                logger.info(f"{label}: cannot resume {run_dir.path} ({error}); training it again beside it")
                break
            tally.resumed += 1
            return _completed(result, tally)
    with context.progress(label) as progress:
        result = kinds.run(spec, out=folder, progress=progress, extra={"recipe_identity": wanted})
    tally.ran += 1
    return _completed(result, tally)


FINAL = ("completed", "diverged")  # a diverged run is a result of its configuration (S2's lr "too large"), kept


def _identity(spec: RunSpec) -> str:
    """What makes two runs the same run, as the study asked for it (recorded in config.json, since a run normalises
    some values as it starts): the whole specification but where the data lives, whether it could be downloaded and
    whether TensorBoard watched it."""
    values = {k: v for k, v in spec.flat().items() if k not in ("data.root", "data.download", "train.tensorboard")}
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _completed(result, tally: Tally | None = None) -> Path:
    check_finished(result, accepted=FINAL)
    return _completed_path(result.run.path, result.status, tally)


def _completed_path(path: Path, status: str, tally: Tally | None) -> Path:
    if status == "diverged" and tally is not None:
        tally.notes.append(f"{path.name} diverged (its row shows no test figures); see {path / 'summary.json'}")
    return path


def _ensure_evaluated(path: Path, context: StudyContext) -> None:
    run_dir = RunDir(path)
    if run_dir.status() == "completed" and "test" not in run_dir.evaluations():
        evaluate_run(path, split="test", root=context.root)


def _search(recipe: Recipe, step: Step, variant: Variant, context: StudyContext, trials: int, tally: Tally,
            refs: dict[str, Path]) -> RunSpec:  # fmt: skip
    """Run (or continue) the step's search and return its best trial's specification. Trials start from the first
    seed's parent runs; the best configuration then runs once per seed like any other row."""
    options = step.tune or {}
    space_name, space = load_space(options["space"])
    base = _spec_of(variant, root=context.root, refs=refs, overrides=_overrides(context))
    # The search's folder is named by what it searches from: a changed recipe (or --set) starts a new search.
    what = json.dumps([_identity(base), options, trials], sort_keys=True, default=str)
    name = f"{_folder_name(step.name)}-{hashlib.sha256(what.encode()).hexdigest()[:8]}"
    tune_options = TuneOptions(study=f"{recipe.name}-{name}", folder=context.out / "tune" / name,
                               n_trials=trials, sampler=options.get("sampler", "random"),
                               pruner=options.get("pruner", "none"), repeats=int(options.get("repeats", 1)), seed=0,
                               max_params=options.get("max_params"),
                               max_macs=options.get("max_macs"))  # fmt: skip
    summary = tune(base, space_name, space, tune_options, progress=context.progress)
    best = summary.get("best")
    if not best:
        raise CheckFailed(f"study stopped: the search {step.name} completed no trial ({tune_options.folder})")
    tally.notes.append(f"{step.name}: best of {summary['trials']} trials (trial {best['trial']}, val_acc "
                       f"{best['value']:.4f}: {best['params']}); trials in {tune_options.folder}")  # fmt: skip
    return RunSpec.from_dict(best["spec"])


def prune_asked(step: Step, context: StudyContext) -> tuple[dict[str, Any], int]:
    """What a pruning step asks of its parent (method, layers, schedule, amount) and its fine-tuning epochs."""
    options = step.prune or {}
    epochs = context.epochs if context.epochs is not None else int(options.get("finetune_epochs", 2))
    asked = {"method": options.get("method", "magnitude"), "layers": options.get("layers", "conv,linear"),
             "schedule": options.get("schedule", "oneshot"), "amount": float(options["amount"])}  # fmt: skip
    return asked, epochs


def kept_prune(folder: Path, parent: Path, asked: dict[str, Any], epochs: int) -> Path | None:
    """The completed pruned run in `folder` of `parent`, as `asked`, fine-tuned for `epochs`; None when none is."""
    for path in sorted(folder.glob("*/config.json"), reverse=True):
        run_dir = RunDir(path.parent)
        try:
            config = run_dir.read_config()
        except DamagedRun:
            continue
        record = config.pruning or {}
        if (run_dir.status() == "completed" and config.parent == str(parent.resolve())
                and {k: record.get(k) for k in asked} == asked
                and (config.spec or {}).get("train", {}).get("epochs") == epochs):  # fmt: skip
            return run_dir.path
    return None


def _prune(step: Step, parent: Path, folder: Path, context: StudyContext, tally: Tally) -> Path:
    asked, epochs = prune_asked(step, context)
    kept = kept_prune(folder, parent, asked, epochs)
    if kept is not None:
        tally.kept += 1
        return kept
    amount = asked["amount"]
    prune_options = PruneOptions(method=asked["method"], layers=asked["layers"], amounts=(amount,),
                                 schedule=asked["schedule"],
                                 finetune_epochs=epochs, repeats=3, report_dir=folder / "report")  # fmt: skip
    with context.progress(f"{step.name} (prune {amount:g})") as progress:
        outcome = prune_run(parent, prune_options, out=folder, root=context.root, progress=progress)  # fmt: skip
    tally.ran += 1
    return _completed(outcome.runs[0], tally)


def preflight(recipe: Recipe, context: StudyContext) -> None:
    """At full scale, before anything trains: every dataset prepared (fetched where it can be) and every pretrained
    backbone's weights at hand; the first thing missing stops the study with what to put where."""
    seen_data, seen_weights = set(), set()
    for step in recipe.steps:
        for variant in step.variants():
            spec = _spec_of(variant, root=context.root, overrides=_overrides(context))
            key = repr(spec.data)
            if key not in seen_data:
                seen_data.add(key)
                logger.info(f"checking data: {spec.data.dataset} under {spec.data.root}")
                prepared(spec.data)  # held for the runs that follow (resources keeps it)
            if spec.kind == "finetune" and spec.model.weights in (None, "imagenet") and spec.model_name:
                if spec.model_name not in seen_weights:
                    seen_weights.add(spec.model_name)
                    imagenet_weights_file(spec.model_name)  # fetched if absent; read when a run loads it
