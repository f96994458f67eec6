"""The `prune` run kind: a parent run's best weights, pruned (models/pruning.py), then fine-tuned on the one training
path, the masks kept in force while it trains (engine/sparsity.py).

`prepare_prune` checks a request against its parent before anything trains; `start` runs one child for one amount
(or MACs target) of it. `cnnbench prune` (prune/sweep.py) sweeps the amounts and measures the results.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from cnnbench.core.errors import UsageError
from cnnbench.engine import Callback
from cnnbench.engine.sparsity import POLYNOMIAL_POWER, PolynomialPlan, SparseFineTune
from cnnbench.models import build
from cnnbench.models.pruning import (
    classifier_output_layer,
    prunable_layers,
    prune_channels,
    select_layers,
    sparsify,
)
from cnnbench.models.transfer import parse_freeze
from cnnbench.runs.pipeline import ModelPlan, RunResult, train_with_plan
from cnnbench.runs.record import RunConfig
from cnnbench.runs.rundir import RunDir
from cnnbench.spec.run import RunSpec
from cnnbench.spec.train import TrainConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class PruneChild:
    """What one child run of a request prunes to: `amount` (a sparsity or channel ratio) or `target_macs`."""

    request: PruneRequest
    kind: str  # amount | target_macs
    target: float


def start(spec: RunSpec, child: PruneChild, *, out: Path, progress: Any, callbacks: tuple[Any, ...],
          extra: dict[str, Any]) -> RunResult:  # fmt: skip

    def planned(prepared) -> ModelPlan:
        return plan(prepared, request=child.request, kind=child.kind, target=child.target)

    return train_with_plan(spec, planned, out=out, progress=progress, callbacks=callbacks, extra=extra)


METHODS = ("magnitude", "global", "structured")


SCHEDULES = ("oneshot", "polynomial")


@dataclass(frozen=True, kw_only=True)
class PruneOptions:
    """What `cnnbench prune` asks for (the fine-tuning's training options are the child spec's `train` section)."""

    method: str = "magnitude"
    layers: str = "conv,linear"  # comma list of module-name globs and layer types (conv, linear)
    amounts: tuple[float, ...] = ()  # sparsity (unstructured) or channel ratio (structured), one run each
    target_macs: tuple[int, ...] = ()  # structured only: MACs per image, one run each
    schedule: str = "oneshot"
    frequency: int = 100  # polynomial: optimizer steps between mask updates (TF-MOT's default)
    schedule_epochs: int | None = None  # polynomial: epochs over which sparsity rises; None: every fine-tune epoch
    finetune_epochs: int = 2  # TF-MOT's pruning guide fine-tunes for 2 epochs
    freeze: str | None = None  # None: the parent's freezing policy
    repeats: int = 10  # latency: timed rounds, each timing every model once (after warm-up)
    report_dir: Path | None = None

    def to_record(self) -> dict[str, Any]:
        return {"method": self.method, "layers": self.layers, "schedule": self.schedule,
                **({"frequency": self.frequency, "power": POLYNOMIAL_POWER, "initial_sparsity": 0.0,
                    "schedule_epochs": self.schedule_epochs or self.finetune_epochs}
                   if self.schedule == "polynomial" else {})}  # fmt: skip


def check_options(options: PruneOptions) -> None:
    if options.method not in METHODS:
        raise UsageError(f"bad --method {options.method!r}: choose from {', '.join(METHODS)}")
    if options.schedule not in SCHEDULES:
        raise UsageError(f"bad --schedule {options.schedule!r}: choose from {', '.join(SCHEDULES)}")
    if options.method == "structured" and options.schedule != "oneshot":
        raise UsageError("--schedule polynomial is for unstructured pruning (--method magnitude or global); structured "
                         "pruning removes the channels once, before fine-tuning")  # fmt: skip
    if options.target_macs and options.method != "structured":
        raise UsageError("--target-macs is for --method structured (unstructured zeros do not remove MACs from a "
                         "dense execution); give --amount for magnitude or global pruning")  # fmt: skip
    if bool(options.amounts) == bool(options.target_macs):
        raise UsageError("give --amount (e.g. 0.5 or 0.5,0.7,0.9)" + (" or --target-macs" if options.method ==
                         "structured" else "") + (", not both" if options.amounts else ""))  # fmt: skip
    if options.finetune_epochs < 1:
        raise UsageError(f"bad --finetune-epochs {options.finetune_epochs}: expected 1 or more (pruned weights need "
                         f"fine-tuning to recover, and each epoch writes the checkpoint evaluation reads)")  # fmt: skip
    if options.frequency < 1:
        raise UsageError(f"bad --frequency {options.frequency}: expected 1 or more optimizer steps")
    window = options.schedule_epochs
    if window is not None and options.schedule != "polynomial":
        raise UsageError("--schedule-epochs sets the window of --schedule polynomial; a one-shot prune has none")
    if window is not None and not 1 <= window <= options.finetune_epochs:
        raise UsageError(f"bad --schedule-epochs {window}: expected 1 to --finetune-epochs ({options.finetune_epochs})")
    if options.repeats < 1:
        raise UsageError(f"bad --repeats {options.repeats}: expected 1 or more")


def restore(config: RunConfig, plan: ModelPlan, train: TrainConfig) -> None:
    """What a pruned run needs again when it resumes: unstructured runs their masks (and schedule); structured runs
    nothing (the narrowed widths are in the model spec)."""
    plan.callbacks.extend(resume_callbacks(config))


def resume_callbacks(config: RunConfig) -> list[Callback]:
    pruning = config.pruning or {}
    if config.kind != "prune" or pruning.get("method") not in ("magnitude", "global"):
        return []
    schedule = None
    if pruning.get("schedule") == "polynomial":
        schedule = PolynomialPlan(final=float(pruning["amount"]), frequency=int(pruning["frequency"]),
                                  epochs=int(pruning["schedule_epochs"]),
                                  initial=float(pruning.get("initial_sparsity", 0.0)))  # fmt: skip
    return [SparseFineTune(pruning["pruned_layers"], method=pruning["method"], schedule=schedule)]


@dataclass
class PruneRequest:
    """A checked request: the parent, the child runs' spec, the chosen layers. Everything that can be refused is
    refused while making it (`prepare_prune`), before any run starts."""

    parent: RunDir
    config: RunConfig  # the parent's config.json
    parent_model: Any  # its ModelSpec (with --freeze applied)
    best: dict[str, Any]  # its best checkpoint
    spec: Any  # the children's RunSpec: the parent's, with the fine-tuning's train options
    layers: list[str]
    options: PruneOptions
    root: Path | None


def prepare_prune(parent_path: Path, options: PruneOptions, *, train_values: dict[str, Any] | None = None,
                  root: Path | None = None) -> PruneRequest:  # fmt: skip
    """Check the options against the parent run; `train_values` are dotted train options (`{"train.lr": 1e-4}`)
    over the parent's own."""
    check_options(options)
    parent = RunDir.open(parent_path)
    config = parent.read_config()
    parent_model = config.model_spec()
    if options.freeze is not None:
        parse_freeze(options.freeze)
        parent_model = parent_model.with_options(freeze=options.freeze)
    spec = config.run_spec()
    if root is not None:
        spec = replace(spec, data=replace(spec.data, root=Path(root)))
    spec = spec.with_values({**(train_values or {}), "train.epochs": options.finetune_epochs, "train.head_epochs": 0,
                             "train.head_lr": None})  # fmt: skip
    best = parent.load_checkpoint("best")  # a parent without one fails now, not after a first child trained
    with torch.device("meta"):  # names and shapes only, to check --layers before anything trains
        skeleton = build(parent_model)
    layers = select_layers(skeleton, options.layers, model_name=parent_model.name)
    if options.method == "structured" and set(layers) <= {classifier_output_layer(skeleton)}:
        raise UsageError(f"--layers {options.layers!r} chooses only {layers[0]}, the classifier's output layer, which "
                         f"structured pruning leaves alone (removing its outputs would remove classes)")  # fmt: skip
    parent_macs = (config.params or {}).get("macs")
    above = [target for target in options.target_macs if parent_macs is not None and target >= parent_macs]
    if above:
        raise UsageError(f"--target-macs {above[0]:,}: {parent.name} ({parent_model.name}) already needs only "
                         f"{parent_macs:,} MACs per image, so there is nothing to remove; give a target below that")
    if options.method == "structured":  # a target that removes nothing is refused now, before the data is read
        targets = [("amount", a) for a in options.amounts] + [("target_macs", m) for m in options.target_macs]
        for kind, target in targets:  # on freshly initialised weights: which channels go varies, which layers not
            _prune_structured(build(parent_model), parent_model, layers, kind, target)
    if config.pruning:  # pruning a pruned run compounds: say what it starts from
        ended = parent.read_summary()  # measured as it ended (config.json has the start: dense, for a polynomial)
        already = (ended.params if ended else config.params or {}).get("sparsity")
        logger.warning(f"{parent.name} is itself a pruned run ({config.pruning.get('method')}, amount "
                       f"{config.pruning.get('amount')}" + (f", {already:.0%} of its weights zero" if already else "")
                       + f"); this prunes it further, from {config.parent}'s pruned weights")  # fmt: skip
    if parent.status() != "completed":
        logger.info(f"note: {parent.name} is {parent.status()}; pruning its best checkpoint so far")
    return PruneRequest(parent=parent, config=config, parent_model=parent_model, best=best, spec=spec, layers=layers,
                        options=options, root=root)  # fmt: skip


def _prune_structured(model, parent_model, layers: list[str], kind: str, target: float):
    """Remove channels of `model` (in place) for one amount or MACs target: (the pruned result, the layers left whole
    with why, the layers pruned). A request that would remove nothing is refused: it would be recorded as pruned."""
    pruned = prune_channels(model, parent_model, layers, **{"ratio" if kind == "amount" else kind: target})
    skipped = {pruned.output_layer: "the classifier's output layer (pruning it would remove classes)"}
    skipped |= {name: "Torch-Pruning left its channels whole (coupled to a layer it may not prune)"
                for name in pruned.unchanged}  # fmt: skip
    # their outputs stay; their inputs shrink with the chosen layers that feed them
    skipped |= {name: "not chosen by --layers" for name in prunable_layers(pruned.model) if name not in layers}
    pruned_layers = [n for n in layers if n not in skipped]
    if not pruned_layers:
        what = f"--amount {target:g}" if kind == "amount" else f"--target-macs {target:,}"
        whole = _some([f"{name} ({why})" for name, why in skipped.items() if name in layers])
        raise UsageError(f"structured {what} removes no channel of {parent_model.name}: Torch-Pruning left every "
                         f"chosen layer whole ({whole}); choose other --layers, or use --method magnitude")
    return pruned, skipped, pruned_layers


def plan(prepared, *, request: PruneRequest, kind: str, target: float) -> ModelPlan:
    """The pruned model a child run fine-tunes: the parent's best weights, pruned."""
    parent, config, parent_model, best = request.parent, request.config, request.parent_model, request.best
    layers, options = request.layers, request.options
    if prepared.manifest["split_hashes"] != config.prepared["split_hashes"]:
        raise UsageError(f"the data prepared under {prepared.directory} differs from the data {parent.name} was "
                         f"trained on (split hash mismatch); the dataset files changed, so before and after could not "
                         f"be compared")  # fmt: skip
    model = build(parent_model)
    model.load_state_dict(best["model"])
    record: dict[str, Any] = {**options.to_record(), "parent_checkpoint": "best", "parent_epoch": best.get("epoch")}
    output_layer = classifier_output_layer(model)
    callbacks: list[Callback] = []
    if options.method == "structured":
        pruned, skipped, pruned_layers = _prune_structured(model, parent_model, layers, kind, target)
        model, model_spec = pruned.model, pruned.spec
        # amount: what was asked (a --target-macs run: the share it took); channel_ratio: what was removed
        record.update(amount=float(target) if kind == "amount" else pruned.channel_ratio,
                      channel_ratio=pruned.channel_ratio,
                      target_macs=target if kind == "target_macs" else None, library=_library_version(),
                      pruned_layers=pruned_layers, skipped=skipped)  # fmt: skip
        for note in pruned.notes:
            logger.info(note)
        logger.info(f"removed {pruned.channel_ratio:.0%} of the channels of {len(record['pruned_layers'])} layer(s); "
                    f"left alone: {_some([f'{name} ({why})' for name, why in skipped.items()])}")  # fmt: skip
    else:
        model_spec = parent_model
        schedule = None
        if options.schedule == "polynomial":
            schedule = PolynomialPlan(final=float(target), frequency=options.frequency,
                                      epochs=options.schedule_epochs or options.finetune_epochs)  # fmt: skip
        else:
            sparsify(model, layers, float(target), method=options.method)
        callbacks.append(SparseFineTune(layers, method=options.method, schedule=schedule))
        dense = [name for name in prunable_layers(model) if name not in layers]
        record.update(amount=float(target), library=f"torch.nn.utils.prune (torch {torch.__version__})",
                      pruned_layers=layers, skipped={name: "not chosen by --layers" for name in dense})  # fmt: skip
        how = "over all of them together" if options.method == "global" else "in each"
        when = (f"rising along the polynomial schedule over {schedule.epochs} epoch(s), masks updated every "
                f"{schedule.frequency} steps" if schedule else "before fine-tuning")  # fmt: skip
        logger.info(f"zeroing {float(target):.0%} of the weights {how} of {len(layers)} layer(s) {when}; left dense: "
                    f"{_some(dense)}")  # fmt: skip
        if output_layer in layers:
            logger.info(f"note: {output_layer} (the classifier's output layer) is among the pruned layers")
    frozen = [name for name in layers if not model.get_submodule(name).weight.requires_grad]
    if frozen:
        logger.info(f"note: {len(frozen)} pruned layer(s) are frozen by the parent's freezing policy and stay frozen "
                    f"while fine-tuning (e.g. {frozen[0]}); --freeze none trains them")  # fmt: skip
    return ModelPlan(model=model, spec=model_spec, normalization=config.normalization, kind="prune",
                     extra={"parent": str(parent.path.resolve()), "pruning": record},
                     callbacks=callbacks)  # fmt: skip


def _some(names: list[str], shown: int = 8) -> str:
    """A log line's list: a backbone has dozens of layers (config.json keeps them all)."""
    if not names:
        return "none"
    more = f" and {len(names) - shown} more (see config.json)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _library_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"torch-pruning {version('torch-pruning')}"
    except PackageNotFoundError:
        return "torch-pruning"


