"""`cnnbench study sN --plan`: what a recipe would run at the chosen scale, and for how long on this machine, before
anything trains.

The plan walks the recipe as the runner does (the same rows, seeds, folders and specifications), asks the study
folder which runs are already done, checks every dataset and ImageNet weights file it needs without fetching them,
and estimates each run's time as epochs x training images / images per second. The speed is measured here: a few
fp32 training steps of each distinct model, input and batch on synthetic data (about half a second each). The
estimate is an upper bound: early stopping, frozen-backbone feature caches and evaluation are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnbench.core.errors import UsageError
from cnnbench.data.catalog import get_dataset
from cnnbench.search.space import with_space_base
from cnnbench.spec.run import RunSpec
from cnnbench.studies.context import StudyContext
from cnnbench.studies.recipes import Recipe, _spec_of
from cnnbench.studies.report import duration
from cnnbench.models.budget import dataset_input
from cnnbench.runs.finetune import backbone_spec, caches_features, with_defaults
from cnnbench.studies.runner import FINAL, _overrides, existing_runs, kept_prune, prune_asked, run_folder

# Timed batches: up to 32 images of side 64 or less, up to 8 larger ones (vgg16 at 224 takes seconds a step).
SMALL_SIDE, SMALL_BATCH, LARGE_BATCH = 64, 32, 8
TIMED_SECONDS = 0.5  # per distinct model, input and batch, after a warm-up step


@dataclass
class Plan:
    recipe: Recipe
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per run (row x seed), search and pruning
    data: list[dict[str, Any]] = field(default_factory=list)
    weights: list[dict[str, Any]] = field(default_factory=list)
    speeds: dict[tuple, float | None] = field(default_factory=dict)

    @property
    def seconds_left(self) -> float:
        return sum(r["seconds"] or 0.0 for r in self.rows if r["state"] != "done")

    def to_dict(self) -> dict[str, Any]:
        return {"study": self.recipe.name, "scale": self.recipe.scale, "rows": self.rows, "data": self.data,
                "weights": self.weights, "estimate_seconds": round(self.seconds_left, 1),
                "missing": [d["dataset"] for d in self.data if d["state"] == "missing"]
                + [w["file"] for w in self.weights if not w["present"]]}  # fmt: skip


def plan_recipe(recipe: Recipe, context: StudyContext, *, seeds: int | None = None,
                trials: int | None = None) -> Plan:  # fmt: skip
    seeds = seeds or recipe.seeds
    trials = trials or recipe.trials
    plan = Plan(recipe)
    overrides = _overrides(context)
    # (step, seed) -> the first row's run, as the runner's `made`: its completed run, else PENDING (a `run:@STEP`
    # child is the same run only with the same parent, and a parent still to run means a child still to run), and
    # beside it the specification a pruning of that step starts from.
    made: dict[tuple[str, int], Path] = {}
    specs: dict[str, RunSpec] = {}
    for step in recipe.steps:
        for index, variant in enumerate(step.variants()):
            for seed in range(seeds):
                refs = {name: path for (name, s), path in made.items() if s == seed}
                spec = _spec_of(variant, root=context.root, refs=refs, overrides=overrides)
                spec = spec.with_values({"train.seed": spec.train.seed + seed})
                folder = run_folder(context, step, variant, seed)
                if seed == 0:
                    _check_inputs(plan, spec)
                if step.tune and seed == 0:
                    searched = with_space_base(spec, step.tune["space"])
                    plan.rows.append(_row(plan, searched, what=f"{step.name}: the search", kind="tune", seed=None,
                                          epochs=spec.train.epochs * trials,
                                          note=f"{trials} trials x {spec.train.epochs} epochs, space "
                                               f"{step.tune['space']} (trials already in its journal are not run "
                                               f"again; timed with the base model)", state="to run"))  # fmt: skip
                if step.prune:
                    asked, epochs = prune_asked(step, context)
                    parent = made[(step.prune["parent"], seed)]
                    kept = kept_prune(folder, parent, asked, epochs) if parent != PENDING else None
                    plan.rows.append(_row(plan, specs[step.prune["parent"]], what=variant.label, kind="prune",
                                          seed=seed, epochs=epochs, state="done" if kept else "to run",
                                          note=f"prune {asked['amount']:g} of {step.prune['parent']}"))  # fmt: skip
                    continue
                if step.tune:  # the search's best is not known yet: timed as the space's base model
                    spec = with_space_base(spec, step.tune["space"])
                done = _any_done(folder) if step.tune else _done(spec, folder)
                if index == 0:
                    made[(step.name, seed)] = done or PENDING
                    specs.setdefault(step.name, spec)
                plan.rows.append(_row(plan, spec, what=variant.label, kind=spec.kind, seed=seed,
                                      epochs=spec.train.epochs, note="the search's best" if step.tune else "",
                                      state="done" if done else "to run" if done is None else "to resume"))
    return plan


def _any_done(folder: Path) -> Path | None:
    """A search row's run: its specification is the search's best, known once the search has run, so any completed
    run in the row's folder counts (a search given more trials may pick another best, and the study then runs it)."""
    from cnnbench.runs.rundir import RunDir

    for config in sorted(folder.glob("*/config.json"), reverse=True):
        if RunDir(config.parent).status() in FINAL:
            return config.parent.resolve()
    return None


PENDING = Path("(a run still to be made)")  # a parent not run yet: its children cannot match an existing run


def _done(spec: RunSpec, folder: Path) -> Path | bool | None:
    """The completed run of this specification in `folder`; False when there is one to resume; None when none."""
    found = existing_runs(spec, folder)
    for run_dir, status in found:
        if status in FINAL:
            return run_dir.path.resolve()
    return False if any(status in ("interrupted", "incomplete") for _, status in found) else None


def _row(plan: Plan, spec: RunSpec, *, what: str, kind: str, seed: int | None, epochs: int, note: str,
         state: str) -> dict[str, Any]:  # fmt: skip
    if spec.kind == "finetune":  # timed and counted with the weights and freezing it will take
        spec = with_defaults(spec)
    images = train_images(spec)
    speed = _speed(plan, spec) if state != "done" else None  # nothing to time for a run already made
    # a frozen backbone without augmentation trains its head on features computed once: one pass, whatever the epochs
    passes = 1 if kind == "finetune" and caches_features(spec.train, spec.model.freeze == "all") else epochs
    seconds = passes * images / speed if speed else None
    return {"row": what, "seed": seed, "kind": kind, "model": spec.model.name or "(the parent's)",
            "data": f"{spec.data.dataset} {_input(spec).height}px", "epochs": epochs, "train_images": images,
            "images_per_s": round(speed, 1) if speed else None, "seconds": seconds, "state": state, "note": note}


def train_images(spec: RunSpec) -> int:
    """How many training images a run of `spec` sees per epoch, from the dataset's size, its classes and the split
    (the official test part, and the validation share taken from train)."""
    entry = get_dataset(spec.data.dataset)
    total = entry.images * (spec.data.classes or entry.num_classes) / max(entry.num_classes, 1)
    if spec.data.split:
        share = spec.data.split[0]
    elif entry.test_images and "test" in entry.official_parts:
        share = (1 - entry.test_images / entry.images) * (1 - spec.data.val_fraction)
    else:
        share = (entry.default_split or (1 - spec.data.val_fraction, 0, 0))[0]
    return int(round(total * share))


def _input(spec: RunSpec):
    return dataset_input(spec.data.dataset, size=spec.data.size, grayscale=spec.data.grayscale,
                         classes=spec.data.classes)  # fmt: skip


def _speed(plan: Plan, spec: RunSpec) -> float | None:
    """Training images per second for the run's model at its input and batch, measured once per distinct model spec
    and batch."""
    input_spec = _input(spec)
    batch = min(spec.train.batch_size, SMALL_BATCH if input_spec.height <= SMALL_SIDE else LARGE_BATCH)
    key = (spec.kind, spec.model.name, repr(spec.model.head), spec.model.freeze, spec.model.freeze_bn,
           repr(input_spec), batch)  # fmt: skip
    if key not in plan.speeds:
        plan.speeds[key] = _measure(spec, input_spec, batch)
    return plan.speeds[key]


def _measure(spec: RunSpec, input_spec, batch: int) -> float | None:
    from cnnbench.engine.autotune import training_speed
    from cnnbench.models import build, build_model

    if spec.model.name is None:
        return None
    try:
        if spec.kind == "finetune":  # with its freezing policy: a frozen layer costs its forward pass only
            model = build(backbone_spec(spec.model, input_spec)[0])
        else:
            model, _ = build_model(spec.model.name, input_spec)
    except UsageError:
        return None  # a model this input cannot take: the run itself will say so
    shape = (input_spec.channels, input_spec.height, input_spec.width)
    return training_speed(model, shape, batch, seconds=TIMED_SECONDS)


def _check_inputs(plan: Plan, spec: RunSpec) -> None:
    """Each dataset (present, bundled, to be downloaded, missing) and each ImageNet weights file, once, without
    fetching anything."""
    from cnnbench.models.transfer import imagenet_weights_path, resolve_backbone

    entry = get_dataset(spec.data.dataset)
    if not any(d["dataset"] == entry.name and d["root"] == str(spec.data.root) for d in plan.data):
        if entry.bundled:
            state = "bundled"
        elif entry.present(Path(spec.data.root)) or (spec.data.source and Path(spec.data.source).exists()):
            state = "present"
        else:
            state = "downloaded at the start" if spec.data.download and entry.download else "missing"
        plan.data.append({"dataset": entry.name, "root": str(spec.data.root), "files": entry.files, "state": state})
    if spec.kind == "finetune" and with_defaults(spec).model.weights == "imagenet" and spec.model.name:
        backbone = resolve_backbone(spec.model.name)[0].name
        if not any(w["backbone"] == backbone for w in plan.weights):
            path = imagenet_weights_path(backbone)
            plan.weights.append({"backbone": backbone, "file": str(path), "present": path.is_file()})


def format_plan(plan: Plan) -> str:
    """The plan as a terminal reads it: the runs, then what is needed, then the estimate."""
    from cnnbench.core.tables import markdown_table

    recipe = plan.recipe
    def time_of(row: dict[str, Any]) -> str:
        if row["seconds"] is not None:
            return duration(row["seconds"])
        return "" if row["state"] == "done" else "?"  # done: nothing timed; "?": a model the plan could not build

    cells = [[r["row"], "" if r["seed"] is None else r["seed"], r["kind"], r["model"], r["data"], r["epochs"],
              f"{r['train_images']:,}", f"{r['images_per_s']:,.0f}" if r["images_per_s"] else "", time_of(r),
              r["state"]] for r in plan.rows]  # fmt: skip
    lines = [f"{recipe.title}: plan at scale {recipe.scale} (nothing trained)", "",
             *markdown_table(["row", "seed", "kind", "model", "data", "epochs", "train images", "img/s", "time",
                              "state"], cells, left=("row", "kind", "model", "data", "state")), ""]  # fmt: skip
    lines += ["Data:"] + [f"  {d['dataset']} under {d['root']}: {d['state']}"
                          + (f" (its files go in {Path(d['root']) / d['files']})" if d["state"] == "missing" else "")
                          for d in plan.data]  # fmt: skip
    if plan.weights:
        lines += ["ImageNet weights:"] + [f"  {w['backbone']}: {w['file']} " + ("present" if w["present"] else
                                          "absent: fetched before the first run (needs a network)")
                                          for w in plan.weights]  # fmt: skip
    left = [r for r in plan.rows if r["state"] != "done"]
    unknown = sum(r["seconds"] is None for r in left)
    lines += ["", f"{len(left)} of {len(plan.rows)} runs and searches left; estimated {duration(plan.seconds_left)} on "
                  f"this machine{f' (and {unknown} not timed)' if unknown else ''}: an upper bound (epochs x training "
                  f"images / img/s of fp32 steps timed here; early stopping, feature caches and evaluation left out)"]
    return "\n".join(lines)

