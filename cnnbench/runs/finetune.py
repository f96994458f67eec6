"""The `finetune` run kind: transfer learning on the one training path (`pipeline.train_with_plan`), differing only
in the model.

Weights come from torchvision's ImageNet weights (`imagenet`), nowhere (`none`, the from-scratch baseline on the same
architecture, S3 Exp 4), a weights file (`PATH`), or any cnnbench run (`run:RUN_DIR`, so transfer between our own
datasets works offline). With `head_epochs`, a first run trains the head on the frozen backbone and a second run,
whose parent is the first, fine-tunes under the requested policy (S4's two-phase recipe). Each phase is an ordinary
run directory.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from cnnbench.spec.train import TrainConfig
from cnnbench.data.prepare import Prepared
from cnnbench.engine.feature_cache import FeatureCache
from cnnbench.core.errors import UsageError
from cnnbench.runs.record import RunConfig
from cnnbench.runs.rundir import RunDir
from cnnbench.spec.run import RunSpec
from cnnbench.runs.pipeline import ModelPlan, RunResult, dataset_normalization, train_with_plan

logger = logging.getLogger(__name__)


def start(spec: RunSpec, request: Any, *, out: Path, progress: Any, callbacks: tuple[Any, ...],
          extra: dict[str, Any]) -> RunResult:  # fmt: skip
    """A fine-tune run; with `head_epochs`, two: the head on the frozen backbone, then the requested policy from it.
    Both phases get the caller's callbacks and records (a search's trial pruner sees the head phase too)."""
    spec, config = with_defaults(spec), spec.train
    if config.head_epochs:
        head_spec = replace(spec, model=replace(spec.model, freeze="all", freeze_bn=False),
                            train=replace(config, epochs=config.head_epochs, lr=config.head_lr or config.lr,
                                          head_epochs=0, head_lr=None))  # fmt: skip
        logger.info(f"phase 1: {config.head_epochs} epoch(s) training the head on the frozen backbone")
        first = start(head_spec, request, out=out, progress=progress, callbacks=callbacks, extra=extra)
        if first.status != "completed":
            return first
        logger.info(f"phase 2: fine-tuning with --freeze {spec.model.freeze} from {first.run.path}")
        spec = replace(spec, model=replace(spec.model, weights=f"run:{first.run.path}", name=None),
                       train=replace(config, head_epochs=0, head_lr=None))  # fmt: skip

    return train_with_plan(spec, lambda prepared: plan(prepared, spec), out=out, progress=progress,
                           callbacks=callbacks, extra=extra)


def with_defaults(spec: RunSpec) -> RunSpec:
    """The weights and freezing policy a fine-tune takes when its specification leaves them out: ImageNet weights, and
    the backbone frozen, unless it starts from random weights (no feature extractor: the from-scratch baseline trains
    it all)."""
    model = spec.model
    if model.weights is None:
        model = replace(model, weights="imagenet")
    if model.freeze is None:
        model = replace(model, freeze="none" if model.weights == "none" else "all")
    return replace(spec, model=model)


def backbone_spec(choice: Any, input_spec: Any) -> tuple[Any, str | None]:
    """The ModelSpec of a torchvision backbone with the chosen head and freezing policy at `input_spec`, and the note
    when the name was an alias (resnet50v2 -> resnet50)."""
    from cnnbench.models import ModelSpec
    from cnnbench.models.transfer import parse_freeze, parse_head, resolve_backbone

    parse_freeze(choice.freeze)
    entry, alias_note = resolve_backbone(choice.name)
    head = parse_head(choice.head.kind or "linear", units=choice.head.units, pool=choice.head.pool,
                      activation=choice.head.activation, dropout=choice.dropout or 0.0).to_dict()  # fmt: skip
    options = {"head": head, "freeze": choice.freeze, "freeze_bn": choice.freeze_bn}
    return ModelSpec(name=entry.name, input=input_spec, options=options), alias_note


def caches_features(config: TrainConfig, backbone_frozen: bool) -> bool:
    """Whether the head trains on backbone features computed once: a frozen backbone and no augmentation."""
    from cnnbench.data.augment import parse_augment

    return config.cache_features and backbone_frozen and not parse_augment(config.augment).enabled


def restore(saved: RunConfig, plan: ModelPlan, config: TrainConfig) -> None:
    """A resumed fine-tune trains its head on cached features again when its backbone is frozen."""
    add_feature_cache(plan, config)


def plan(prepared: Prepared, spec: RunSpec) -> ModelPlan:
    from cnnbench.models import build
    from cnnbench.models.transfer import parse_freeze

    choice, config = spec.model, spec.train
    parse_freeze(choice.freeze)
    spec_in = prepared.input_spec
    head_options = dict(units=choice.head.units, pool=choice.head.pool, activation=choice.head.activation,
                        dropout=choice.dropout or 0.0)  # fmt: skip
    freezing = {"freeze": choice.freeze, "freeze_bn": choice.freeze_bn}
    if choice.weights.startswith("run:"):
        return add_feature_cache(_from_run(prepared, spec, head_options, freezing), config)
    if choice.name is None:
        raise UsageError("--backbone is required (see `cnnbench models`), unless --weights run:RUN_DIR names a run")
    model_spec, alias_note = backbone_spec(choice, spec_in)
    if alias_note:
        logger.info(f"note: {alias_note}")
    backbone, head = model_spec.name, model_spec.options["head"]
    model = build(model_spec)
    weights: dict[str, Any] = {"source": choice.weights}
    if choice.weights == "none":
        from cnnbench.engine import initialise

        initialise(model, choice.init)
        normalization = dataset_normalization(prepared)
        weights["init"] = choice.init
    else:
        normalization = _imagenet_normalization(backbone)
        if choice.weights == "imagenet":
            from cnnbench.models.transfer import imagenet_state_dict, imagenet_weights_path

            state = imagenet_state_dict(backbone)
            weights["file"] = str(imagenet_weights_path(backbone))
        else:
            state = _weights_file(Path(choice.weights))
            weights["file"] = str(Path(choice.weights).resolve())
        _load_backbone(model, state)
        if spec_in.height < 64:
            logger.info(f"note: {backbone}'s weights were trained on 224x224 images; these are {spec_in.height}x"
                        f"{spec_in.width} (S2 found upscaling with --size 224 helps)")  # fmt: skip
    if alias_note:
        weights["alias"] = alias_note
    return add_feature_cache(ModelPlan(model=model, spec=model_spec, normalization=normalization, kind="finetune",
                                       extra={"finetune": {"backbone": backbone, "weights": weights, **freezing,
                                                           "head": head}}), config)  # fmt: skip


def add_feature_cache(plan: ModelPlan, config: TrainConfig) -> ModelPlan:
    """With a frozen backbone and no augmentation, train the head on features the backbone computes once."""
    from cnnbench.models.transfer import backbone_frozen

    if caches_features(config, backbone_frozen(plan.model)):
        plan.callbacks.append(FeatureCache())
        plan.trained_module = plan.model.head
        logger.info("backbone frozen and no augmentation: training the head on backbone features computed once")
    return plan


def _from_run(prepared: Prepared, spec: RunSpec, head_options: dict[str, Any],
              freezing: dict[str, Any]) -> ModelPlan:  # fmt: skip
    """Start from a cnnbench run's best weights: its architecture rebuilt for this dataset's shape and classes."""
    from cnnbench.models import ModelSpec, build, train_always
    from cnnbench.models.transfer import load_matching, parse_head

    choice = spec.model
    parent = RunDir.open(Path(choice.weights[len("run:") :]))
    parent_config = parent.read_config()
    parent_spec = parent_config.model_spec()
    if choice.name is not None and choice.name != parent_spec.name:
        raise UsageError(f"--backbone {choice.name} differs from the model of {parent.name} "
                         f"({parent_spec.name}); leave --backbone out when starting from a run")  # fmt: skip
    inherited = {k: v for k, v in parent_spec.options.items() if k not in ("freeze", "freeze_bn")}
    if choice.head.kind is not None:
        if "head" not in inherited:
            raise UsageError(f"--head applies to torchvision backbones; {parent.name} is a {parent_spec.name} run, "
                             f"whose own head is kept (leave --head out)")  # fmt: skip
        inherited["head"] = parse_head(choice.head.kind, **head_options).to_dict()
    model_spec = ModelSpec(name=parent_spec.name, input=prepared.input_spec, options={**inherited, **freezing})
    model = build(model_spec)
    loaded, reinitialised = load_matching(model, parent.load_checkpoint("best")["model"])
    if reinitialised:
        # A layer that starts from scratch must train, whatever the freezing policy; the spec records it so that a
        # resumed run rebuilds the same trainable set.
        unfreeze = [name for name, _ in model.named_parameters() if name in reinitialised]
        model_spec = ModelSpec(name=model_spec.name, input=model_spec.input,
                               options={**model_spec.options, "unfreeze": unfreeze})
        train_always(model, unfreeze)  # what build(spec) would do, without building and loading twice
        logger.info(f"from {parent.name}: {len(loaded)} tensors loaded; re-initialised and trained (shape changed): "
                    f"{', '.join(reinitialised[:6])}{' ...' if len(reinitialised) > 6 else ''}")  # fmt: skip
    weights = {"source": f"run:{parent.path}", "loaded": len(loaded), "reinitialised": reinitialised}
    normalization = parent_config.normalization
    if len(normalization["mean"]) != prepared.input_spec.channels:  # other channels: the parent's stats do not apply
        normalization = dataset_normalization(prepared)
    return ModelPlan(model=model, spec=model_spec, normalization=normalization, kind="finetune",
                     extra={"parent": str(parent.path),
                            "finetune": {"backbone": parent_spec.name, "weights": weights, **freezing,
                                         "head": inherited.get("head")}})  # fmt: skip


def _imagenet_normalization(backbone: str) -> dict[str, Any]:
    from cnnbench.models.transfer import weights_enum

    transforms = weights_enum(backbone).transforms()
    return {"mean": list(transforms.mean), "std": list(transforms.std), "source": f"{weights_enum(backbone)} transforms"}


def _weights_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UsageError(f"--weights {str(path)!r}: no such file; choose imagenet, none, a weights file or run:RUN_DIR")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UsageError(f"--weights {str(path)!r} is not a readable state dict ({type(error).__name__})") from None
    if not isinstance(state, dict):
        raise UsageError(f"--weights {str(path)!r} does not hold a state dict")
    state = state.get("model", state)  # a cnnbench checkpoint wraps the state dict
    if any(key.startswith("backbone.") for key in state):  # a cnnbench fine-tune: keep its backbone, torchvision keys
        state = {key[len("backbone.") :]: value for key, value in state.items() if key.startswith("backbone.")}
    return state


def _load_backbone(model, state: dict[str, Any]) -> None:
    from cnnbench.models.transfer import load_backbone_weights

    missing = load_backbone_weights(model, state)
    if missing:
        raise UsageError(f"the weights file lacks {len(missing)} of the backbone's tensors (e.g. {missing[0]}); "
                         f"is it for another architecture?")  # fmt: skip
