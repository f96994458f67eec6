"""`prune_run`: weight pruning of any finished run, each pruned model a new run fine-tuned on the one training path.

Two kinds of pruning, both starting from the parent run's best checkpoint:
- Unstructured (`magnitude`: per layer; `global`: one threshold over all chosen layers) zeroes the smallest weights
  of the chosen convolution and dense layers, never biases, to exactly round(n x amount) zeros (torch.nn.utils.prune's
  L1Unstructured computes the masks). `oneshot` prunes before fine-tuning; `polynomial` raises sparsity during it with
  TF-MOT's PolynomialDecay (what S3 used), updating the masks every `frequency` optimizer steps.
- Structured (`structured`) removes whole channels with Torch-Pruning (dependency graph + group L2 magnitude), to a
  channel ratio or a MACs target, leaving the classifier's output layer alone. The narrowed widths go into the child
  run's model spec (models/widths.py), so it is rebuilt from JSON and loads a plain state dict.

Why no reparametrisation (weight_orig x weight_mask) while fine-tuning: the run writer saves `model.state_dict()` every
epoch, and those checkpoints must load into the plain architecture (evaluate, finetune --weights run:, --resume).
Instead the weights stay plain tensors holding exact zeros, and `SparseFineTune` keeps them zero: it masks their
gradients (so clipping norms and optimizer moments match the reparametrised form) and re-applies the masks after every
optimizer step (momentum gathered before a polynomial update would otherwise move a newly pruned weight). The masks
are the zeros themselves, so a resumed run recovers them from its checkpoint. Masking every weight in place also keeps
the parameters' order, which the optimizer's saved state depends on (torch.nn.utils.prune.remove re-registers a pruned
weight after its bias, so a resumed run's optimizer state would land on the wrong tensors).

Measurements and the before/after report are in pruning_measure.py.
"""

from __future__ import annotations

import fnmatch
import functools
import math
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnbench.engine import Callback, EpochResult, Trainer
from cnnbench.errors import UsageError
from cnnbench.runs import RunDir
from cnnbench.training import Log, ModelPlan, RunResult, resume_run, saved_spec, train_with_plan

METHODS = ("magnitude", "global", "structured")
SCHEDULES = ("oneshot", "polynomial")
LAYER_TYPES: dict[str, tuple[type[nn.Module], ...]] = {"conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d),
                                                       "linear": (nn.Linear,)}
PRUNABLE = LAYER_TYPES["conv"] + LAYER_TYPES["linear"]
POLYNOMIAL_POWER = 3  # TF-MOT PolynomialDecay's default, what S3 used
# --target-macs: Torch-Pruning removes channels in steps of 1% of each layer's width until the model is under target
MAC_SEARCH_STEPS = 99


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


# --- parsing and checking what the user asked for ---------------------------------------------------------------------


def parse_amounts(text: str) -> tuple[float, ...]:
    """'0.5,0.7,0.9' -> (0.5, 0.7, 0.9); each strictly between 0 and 1."""
    values = []
    for item in (part.strip() for part in text.split(",")):
        try:
            value = float(item)
        except ValueError:
            value = math.nan
        if not 0.0 < value < 1.0:
            raise UsageError(f"bad --amount {item!r}: expected fractions strictly between 0 and 1, separated by commas "
                             f"(e.g. 0.5,0.7,0.9)")  # fmt: skip
        values.append(value)
    return tuple(values)


_MAC_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}


def parse_macs(text: str) -> tuple[int, ...]:
    """'2.5M,1e6' -> (2500000, 1000000): MACs per image, with an optional k/M/G suffix."""
    values = []
    for item in (part.strip() for part in text.split(",")):
        match = re.fullmatch(r"([0-9.eE+]+)\s*([kKmMgG]?)", item)
        try:
            value = float(match.group(1)) * _MAC_SUFFIXES[match.group(2).lower()] if match else math.nan
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value >= 1):
            raise UsageError(f"bad --target-macs {item!r}: expected MACs per image, e.g. 2.5M or 400k (comma-separated "
                             f"for several runs)")  # fmt: skip
        values.append(int(value))
    return tuple(values)


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


# --- choosing layers --------------------------------------------------------------------------------------------------


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Convolutions and dense layers by module name, in model order: the layers whose weights pruning touches."""
    return {name: module for name, module in model.named_modules() if isinstance(module, PRUNABLE)}


def select_layers(model: nn.Module, text: str, *, model_name: str) -> list[str]:
    """The layers `--layers` names: a comma list of types (conv, linear) and module-name globs ('head.*'); a glob also
    selects the layers inside a module it names ('head', 'backbone.layer4'). Every item must match a layer."""
    layers = prunable_layers(model)
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise UsageError("--layers is empty: give layer types (conv, linear) or module-name globs such as 'head.*'")
    chosen: set[str] = set()
    for item in items:
        if item in LAYER_TYPES:
            matched = {name for name, module in layers.items() if isinstance(module, LAYER_TYPES[item])}
        else:
            matched = {name for name in layers
                       if fnmatch.fnmatchcase(name, item) or fnmatch.fnmatchcase(name, item + ".*")}  # fmt: skip
        if not matched:
            names = list(layers)
            shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
            kind = f"no {item} layer" if item in LAYER_TYPES else "no convolution or dense layer"
            raise UsageError(f"--layers {item!r} matches {kind} of {model_name}; its layers are: {shown} (or give the "
                             f"types conv, linear)")  # fmt: skip
        chosen |= matched
    return [name for name in layers if name in chosen]


def classifier_output_layer(model: nn.Module) -> str:
    """The layer that produces the class scores: the last convolution or dense layer of the model's `head` (zoo and
    transfer models both have one), else of the whole model. Pruning its outputs would remove classes."""
    layers = prunable_layers(model)
    in_head = [name for name in layers if name == "head" or name.startswith("head.")]
    return (in_head or list(layers))[-1]


# --- unstructured pruning ---------------------------------------------------------------------------------------------


def magnitude_masks(weights: dict[str, torch.Tensor], sparsity: float, *, method: str) -> dict[str, torch.Tensor]:
    """Keep-masks (bool) that zero exactly round(n x sparsity) of the smallest |w|: per tensor (`magnitude`), or over
    all of them together (`global`, what torch.nn.utils.prune.global_unstructured does). Weights already zero are the
    smallest, so a mask at a higher sparsity contains the one at a lower sparsity."""
    from torch.nn.utils import prune

    def masks_for(flat: torch.Tensor) -> torch.Tensor:
        count = round(sparsity * flat.numel())  # as torch.nn.utils.prune rounds a fractional amount
        return prune.L1Unstructured(amount=count).compute_mask(flat, torch.ones_like(flat)).bool()

    # contiguous: compute_mask flattens with view(-1), which a channels_last kernel refuses
    flat = {name: weight.detach().contiguous().view(-1) for name, weight in weights.items()}
    if method == "global":
        keep = masks_for(torch.cat(list(flat.values())))
        pieces = keep.split([t.numel() for t in flat.values()])
        return {name: piece.view(weights[name].shape) for name, piece in zip(flat, pieces)}
    return {name: masks_for(t).view(weights[name].shape) for name, t in flat.items()}


@torch.no_grad()
def sparsify(model: nn.Module, layers: list[str], sparsity: float, *, method: str) -> dict[str, torch.Tensor]:
    """Zero the smallest weights of `layers` in place (see magnitude_masks); returns the keep-masks."""
    weights = {name: model.get_submodule(name).weight for name in layers}
    masks = magnitude_masks(weights, sparsity, method=method)
    for name, weight in weights.items():
        weight.mul_(masks[name])
    return masks


def polynomial_sparsity(step: int, *, begin: int, end: int, final: float, initial: float = 0.0,
                        power: int = POLYNOMIAL_POWER) -> float:  # fmt: skip
    """TF-MOT's PolynomialDecay: final + (initial - final) x (1 - p)^power, p the elapsed fraction of [begin, end]."""
    progress = min(1.0, max(0.0, (step - begin) / max(1, end - begin)))
    return final + (initial - final) * (1.0 - progress) ** power


def is_update_step(step: int, *, begin: int, end: int, frequency: int) -> bool:
    """TF-MOT updates the masks when (step - begin) % frequency == 0 inside [begin, end]. The window's last step is
    an update too: TF-MOT skips it when the window is not a multiple of the frequency, leaving the model short of its
    final sparsity."""
    return begin <= step <= end and ((step - begin) % frequency == 0 or step == end)


@dataclass(frozen=True, kw_only=True)
class PolynomialPlan:
    final: float
    frequency: int
    epochs: int  # the window: sparsity reaches `final` at the last step of this many epochs
    initial: float = 0.0

    def end_step(self, steps_per_epoch: int) -> int:
        return self.epochs * steps_per_epoch


class SparseFineTune(Callback):
    """Keeps the pruned weights of `layers` at exactly zero while fine-tuning; with a `PolynomialPlan`, raises their
    sparsity along the schedule.

    The masks are read from the weights' zeros when the fit starts: after a one-shot prune, and in a resumed run whose
    checkpoint holds the zeros, they are the pruned weights. During a polynomial ramp, the best epoch must be one at
    the final sparsity (an earlier, denser epoch would often score better and become best.pt): early stopping is
    reset after every epoch that ends before the ramp does, so the first epoch at the final sparsity is the best so
    far, and patience counts from there.
    """

    def __init__(self, layers: list[str], *, method: str, schedule: PolynomialPlan | None = None) -> None:
        self.layers, self.method, self.schedule = list(layers), method, schedule
        self.masks: dict[str, torch.Tensor] = {}
        self.end_step = 0

    def weights(self, trainer: Trainer) -> dict[str, nn.Parameter]:
        return {name: trainer.model.get_submodule(name).weight for name in self.layers}

    def on_fit_start(self, trainer: Trainer) -> None:
        weights = self.weights(trainer)
        self.masks = {name: weight.detach() != 0 for name, weight in weights.items()}
        for name, weight in weights.items():
            if weight.requires_grad:  # a frozen layer gets no gradient to mask
                weight.register_hook(functools.partial(self._masked_gradient, name))
        if self.schedule is not None:
            self.end_step = self.schedule.end_step(len(trainer.train_batches))
            if trainer.step == 0:  # the schedule's first update, at its start: the initial sparsity
                self.update(trainer, polynomial_sparsity(0, begin=0, end=self.end_step, final=self.schedule.final,
                                                         initial=self.schedule.initial))  # fmt: skip
            elif trainer.epoch > 0 and trainer.step < self.end_step:
                self.forget_best(trainer)  # as after the epoch the checkpoint was saved in (its writer ran first)

    def _masked_gradient(self, name: str, gradient: torch.Tensor) -> torch.Tensor:
        return gradient * self.masks[name]

    @torch.no_grad()
    def on_step_end(self, trainer: Trainer) -> None:
        weights = self.weights(trainer)
        for name, weight in weights.items():
            weight.mul_(self.masks[name])
        schedule = self.schedule
        if schedule is not None and is_update_step(trainer.step, begin=0, end=self.end_step,
                                                   frequency=schedule.frequency):
            self.update(trainer, polynomial_sparsity(trainer.step, begin=0, end=self.end_step, final=schedule.final,
                                                     initial=schedule.initial))  # fmt: skip

    @torch.no_grad()
    def update(self, trainer: Trainer, sparsity: float) -> None:
        # Masks only grow: a pruned parent's own zeros stay zero while the ramp starts below their sparsity.
        masks = sparsify(trainer.model, self.layers, sparsity, method=self.method)
        self.masks = {name: mask & self.masks[name] for name, mask in masks.items()}

    def on_epoch_end(self, trainer: Trainer, result: EpochResult) -> None:
        if self.schedule is not None and trainer.step < self.end_step:
            self.forget_best(trainer)

    @staticmethod
    def forget_best(trainer: Trainer) -> None:
        trainer.early.best, trainer.early.bad_epochs = math.nan, 0  # NaN: the next epoch counts as an improvement


def resume_callbacks(config: dict[str, Any]) -> list[Callback]:
    """What a pruned run needs again when it resumes: unstructured runs their masks (and schedule); structured runs
    nothing (the narrowed widths are in the model spec). For `training.resume_run(..., callbacks=...)`."""
    pruning = config.get("pruning") or {}
    if config.get("kind") != "prune" or pruning.get("method") not in ("magnitude", "global"):
        return []
    schedule = None
    if pruning.get("schedule") == "polynomial":
        schedule = PolynomialPlan(final=float(pruning["amount"]), frequency=int(pruning["frequency"]),
                                  epochs=int(pruning["schedule_epochs"]),
                                  initial=float(pruning.get("initial_sparsity", 0.0)))  # fmt: skip
    return [SparseFineTune(pruning["pruned_layers"], method=pruning["method"], schedule=schedule)]


# --- structured pruning -----------------------------------------------------------------------------------------------


@dataclass
class ChannelPruning:
    model: nn.Module  # rebuilt from `spec` with the pruned weights loaded: what the child run trains
    spec: Any  # ModelSpec with the narrowed widths
    channel_ratio: float
    output_layer: str  # the classifier's output layer, never pruned
    unchanged: list[str]  # chosen layers whose outputs Torch-Pruning left whole (coupled to a layer it may not prune)
    notes: list[str] = field(default_factory=list)


def prune_channels(model: nn.Module, model_spec: Any, layers: list[str], *, ratio: float | None = None,
                   target_macs: int | None = None) -> ChannelPruning:  # fmt: skip
    """Remove output channels of `layers` with Torch-Pruning (group L2 magnitude), to `ratio` of each layer's channels
    or until the model needs at most `target_macs` MACs per image, then rebuild the narrowed model from its spec."""
    import torch_pruning as tp

    from cnnbench.models import build, record_widths
    from cnnbench.models.accounting import count_macs

    spec_in = model_spec.input
    model.eval()  # a BatchNorm over a 1x1 map refuses a batch of one in training mode
    for parameter in model.parameters():
        parameter.requires_grad_(True)  # the dependency graph is traced through autograd: frozen layers must take part
    output_layer = classifier_output_layer(model)
    layers_before = {name: _outputs(module) for name, module in prunable_layers(model).items()}
    ignored = [module for name, module in prunable_layers(model).items() if name not in layers or name == output_layer]
    example = torch.zeros(1, spec_in.channels, spec_in.height, spec_in.width)
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if ratio is not None:
                pruner = tp.pruner.BasePruner(model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                              pruning_ratio=ratio, ignored_layers=ignored)  # fmt: skip
                pruner.step()
            else:
                assert target_macs is not None
                pruner = tp.pruner.BasePruner(model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                              pruning_ratio=MAC_SEARCH_STEPS / 100, iterative_steps=MAC_SEARCH_STEPS,
                                              ignored_layers=ignored)  # fmt: skip
                steps = 0
                while count_macs(model, spec_in) > target_macs and steps < MAC_SEARCH_STEPS:
                    pruner.step()
                    steps += 1
                macs = count_macs(model, spec_in)
                if macs > target_macs:
                    raise UsageError(f"--target-macs {target_macs:,} is below what removing {MAC_SEARCH_STEPS}% of "
                                     f"the chosen layers' channels reaches ({macs:,} MACs per image); give a larger "
                                     f"target")  # fmt: skip
                ratio = steps / 100
        except UsageError:
            raise
        except Exception as error:  # Torch-Pruning's tracing fails in many ways on models it does not support
            raise UsageError(f"Torch-Pruning cannot prune {model_spec.name} ({type(error).__name__}: "
                             f"{str(error).splitlines()[0][:160] if str(error) else ''}); use --method magnitude or "
                             f"global") from None  # fmt: skip
    notes += [f"Torch-Pruning: {str(w.message).strip().splitlines()[0][:200]}" for w in caught
              if not issubclass(w.category, DeprecationWarning)]  # fmt: skip
    try:
        widths = record_widths(model, model_spec)
    except ValueError as error:  # a layer kind whose size a spec cannot record (LayerNorm, layer scale)
        raise UsageError(f"structured pruning of {model_spec.name} changes more than convolution, dense and BatchNorm "
                         f"widths ({error}); the run could not be rebuilt from its spec, so use --method magnitude or "
                         f"global") from None  # fmt: skip
    child_spec = model_spec.with_options(widths=widths)
    child = build(child_spec)
    child.load_state_dict(model.state_dict())  # strict: proves the run directory's spec rebuilds exactly this model
    after = {name: _outputs(module) for name, module in prunable_layers(child).items()}
    unchanged = [name for name in layers if name != output_layer and after.get(name) == layers_before[name]]
    return ChannelPruning(model=child, spec=child_spec, channel_ratio=float(ratio), output_layer=output_layer,
                          unchanged=unchanged, notes=notes)  # fmt: skip


def _outputs(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


# --- runs -------------------------------------------------------------------------------------------------------------


@dataclass
class PruneOutcome:
    parent: RunDir
    runs: list[RunResult]  # one per amount or MACs target, in order; the last may have stopped (interrupted, ...)
    rows: list[dict[str, Any]] = field(default_factory=list)  # the measured report, parent first
    layer_rows: list[dict[str, Any]] = field(default_factory=list)
    report_dir: Path | None = None

    @property
    def stopped(self) -> RunResult | None:
        return next((result for result in self.runs if result.status != "completed"), None)


@dataclass
class PruneRequest:
    """A checked request: the parent, the child runs' spec, the chosen layers. Everything that can be refused is
    refused while making it (`prepare_prune`), before any run starts."""

    parent: RunDir
    config: dict[str, Any]  # the parent's config.json
    parent_model: Any  # its ModelSpec (with --freeze applied)
    best: dict[str, Any]  # its best checkpoint
    spec: Any  # the children's RunSpec: the parent's, with the fine-tuning's train options
    layers: list[str]
    options: PruneOptions
    root: Path | None


def prepare_prune(parent_path: Path, options: PruneOptions, *, train_values: dict[str, Any] | None = None,
                  root: Path | None = None, log: Log | None = None) -> PruneRequest:  # fmt: skip
    """Check the options against the parent run; `train_values` are dotted train options (`{"train.lr": 1e-4}`)
    over the parent's own."""
    from cnnbench.models import ModelSpec, build
    from cnnbench.models.transfer import parse_freeze

    log = log or (lambda message: None)
    check_options(options)
    parent = RunDir.open(parent_path)
    config = parent.config()
    parent_model = ModelSpec.from_dict(config["model"])
    if options.freeze is not None:
        parse_freeze(options.freeze)
        parent_model = parent_model.with_options(freeze=options.freeze)
    spec = saved_spec(config)
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
    if parent.status() != "completed":
        log(f"note: {parent.name} is {parent.status()}; pruning its best checkpoint so far")
    return PruneRequest(parent=parent, config=config, parent_model=parent_model, best=best, spec=spec, layers=layers,
                        options=options, root=root)  # fmt: skip


def prune_run(parent_path: Path, options: PruneOptions, *, train_values: dict[str, Any] | None = None,
              out: Path = Path("results/runs"), root: Path | None = None, progress: Any = None,
              log: Log | None = None, callbacks: list[Any] | tuple[Any, ...] = (),
              measure: bool = True) -> PruneOutcome:  # fmt: skip
    """Prune the best checkpoint of the run at `parent_path` once per amount (or MACs target), fine-tune each pruned
    model as a new run under `out`, then evaluate and measure parent and children and write the report."""
    request = prepare_prune(parent_path, options, train_values=train_values, root=root, log=log)
    return run_prune(request, out=out, progress=progress, log=log, callbacks=callbacks, measure=measure)


def run_prune(request: PruneRequest, *, out: Path = Path("results/runs"), progress: Any = None, log: Log | None = None,
              callbacks: list[Any] | tuple[Any, ...] = (), measure: bool = True) -> PruneOutcome:  # fmt: skip
    """The child runs of a checked request, then (with `measure`) evaluation, measurement and the report.

    `callbacks` join every child run's trainer (as in `training.run`). A sweep stops at the first run that does not
    complete (interrupted, diverged), and its outcome says which."""
    log = log or (lambda message: None)
    parent, options = request.parent, request.options
    targets: list[tuple[str, float]] = [("amount", a) for a in options.amounts]
    targets += [("target_macs", m) for m in options.target_macs]
    results: list[RunResult] = []
    for kind, target in targets:
        what = f"{target:,} MACs" if kind == "target_macs" else f"{target:g}"
        log(f"pruning {parent.name} ({options.method}, {options.schedule}) to {what}")
        plan = functools.partial(_plan, request=request, kind=kind, target=target, log=log)
        result = train_with_plan(request.spec, plan, out=out, progress=progress, log=log, callbacks=callbacks)
        results.append(result)
        if result.status != "completed":
            log(f"stopping the sweep: {result.run.path if result.run else 'the run'} ended {result.status}")
            break
    outcome = PruneOutcome(parent=parent, runs=results)
    if measure and outcome.stopped is None and results and results[0].run is not None:
        from cnnbench.pruning_measure import measure_and_report

        folder = options.report_dir or Path(out) / report_folder_name(parent.name, options)
        measure_and_report(outcome, options, device=request.spec.train.device, root=request.root, folder=folder,
                           log=log)  # fmt: skip
    return outcome


def report_folder_name(parent_name: str, options: PruneOptions) -> str:
    suffix = "-polynomial" if options.schedule == "polynomial" else ""
    return f"prune-{parent_name}-{options.method}{suffix}"


def _plan(prepared, *, request: PruneRequest, kind: str, target: float, log: Log) -> ModelPlan:
    """The pruned model a child run fine-tunes: the parent's best weights, pruned."""
    from cnnbench.models import build

    parent, config, parent_model, best = request.parent, request.config, request.parent_model, request.best
    layers, options = request.layers, request.options
    if prepared.manifest["split_hashes"] != config["prepared"]["split_hashes"]:
        raise UsageError(f"the data prepared under {prepared.directory} differs from the data {parent.name} was "
                         f"trained on (split hash mismatch); the dataset files changed, so before and after could not "
                         f"be compared")  # fmt: skip
    model = build(parent_model)
    model.load_state_dict(best["model"])
    record: dict[str, Any] = {**options.to_record(), "parent_checkpoint": "best", "parent_epoch": best.get("epoch")}
    output_layer = classifier_output_layer(model)
    callbacks: list[Callback] = []
    if options.method == "structured":
        pruned = prune_channels(model, parent_model, layers, **{"ratio" if kind == "amount" else kind: target})
        model, model_spec = pruned.model, pruned.spec
        skipped = {pruned.output_layer: "the classifier's output layer (pruning it would remove classes)"}
        skipped |= {name: "Torch-Pruning left its channels whole (coupled to a layer it may not prune)"
                    for name in pruned.unchanged}  # fmt: skip
        # their outputs stay; their inputs shrink with the chosen layers that feed them
        skipped |= {name: "not chosen by --layers" for name in prunable_layers(model) if name not in layers}
        record.update(amount=pruned.channel_ratio, channel_ratio=pruned.channel_ratio,
                      target_macs=target if kind == "target_macs" else None, library=_library_version(),
                      pruned_layers=[n for n in layers if n not in skipped], skipped=skipped)  # fmt: skip
        for note in pruned.notes:
            log(note)
        log(f"removed {pruned.channel_ratio:.0%} of the channels of {len(record['pruned_layers'])} layer(s); left "
            f"alone: {_some([f'{name} ({why})' for name, why in skipped.items()])}")  # fmt: skip
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
        log(f"zeroing {float(target):.0%} of the weights {how} of {len(layers)} layer(s) {when}; left dense: "
            f"{_some(dense)}")  # fmt: skip
        if output_layer in layers:
            log(f"note: {output_layer} (the classifier's output layer) is among the pruned layers")
    frozen = [name for name in layers if not model.get_submodule(name).weight.requires_grad]
    if frozen:
        log(f"note: {len(frozen)} pruned layer(s) are frozen by the parent's freezing policy and stay frozen while "
            f"fine-tuning (e.g. {frozen[0]}); --freeze none trains them")  # fmt: skip
    return ModelPlan(model=model, spec=model_spec, normalization=config["normalization"], kind="prune",
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


def open_pruned(path: Path) -> tuple[RunDir, dict[str, Any]]:
    """A pruned run directory and its config.json, or a UsageError saying what the folder is instead."""
    run = RunDir.open(path)
    config = run.config()
    if config.get("kind") != "prune":
        raise UsageError(f"{run.name} is a {config.get('kind')} run, not a pruned one; resume it with "
                         f"`cnnbench train --resume {run.path}`")  # fmt: skip
    return run, config


def resume_pruned(path: Path, *, epochs: int | None = None, device: str | None = None, repeats: int = 10,
                  progress: Any = None, log: Log | None = None, measure: bool = True) -> PruneOutcome:  # fmt: skip
    """Continue an interrupted pruned run with its masks (and polynomial schedule) in force; once it completes,
    evaluate and measure it against its parent and write its prune.json (no sweep report: the sweep's other runs
    are not part of this call)."""
    log = log or (lambda message: None)
    run, config = open_pruned(path)
    result = resume_run(run.path, epochs=epochs, device=device, progress=progress, log=log,
                        callbacks=resume_callbacks(config))  # fmt: skip
    parent_path = Path(config["parent"])
    if not (parent_path / "config.json").is_file():
        log(f"note: the parent run {parent_path} is gone; nothing to measure against")
        return PruneOutcome(parent=RunDir(parent_path), runs=[result])
    outcome = PruneOutcome(parent=RunDir.open(parent_path), runs=[result])
    if measure and result.status == "completed" and result.run is not None:
        from cnnbench.pruning_measure import measure_and_report

        record = config["pruning"]
        options = PruneOptions(method=record["method"], layers=record["layers"], schedule=record["schedule"],
                               finetune_epochs=result.summary["epochs_planned"], repeats=repeats)  # fmt: skip
        measure_and_report(outcome, options, device=device or saved_spec(config).train.device, root=None, folder=None,
                           log=log)  # fmt: skip
    return outcome
