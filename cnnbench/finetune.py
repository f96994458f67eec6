"""`finetune_run`: transfer learning on the one training path (`training.train_with_plan`), differing only in the model.

Weights come from torchvision's ImageNet weights (`imagenet`), nowhere (`none`, the from-scratch baseline on the same
architecture, S3 Exp 4), a weights file (`PATH`), or any cnnbench run (`run:RUN_DIR`, so transfer between our own
datasets works offline). With `head_epochs`, a first run trains the head on the frozen backbone and a second run,
whose parent is the first, fine-tunes under the requested policy (S4's two-phase recipe). Each phase is an ordinary
run directory.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cnnbench.config import TrainConfig
from cnnbench.data.prepare import Prepared, PrepareOptions
from cnnbench.errors import UsageError
from cnnbench.runs import RunDir
from cnnbench.training import Log, ModelPlan, RunResult, dataset_normalization, train_with_plan


@dataclass(frozen=True, kw_only=True)
class FinetuneOptions:
    backbone: str | None = None  # a torchvision name (or a seed alias); None with weights run:... = the run's model
    weights: str = "imagenet"  # imagenet | none | PATH | run:RUN_DIR
    head: str | None = None  # linear | extended | mlp:W1,W2,...; None with weights run:... = the run's head
    units: int = 256
    activation: str = "relu"
    pool: str | None = None  # avg | flatten | max2; None = the head's default
    freeze: str | None = None  # None: "all" with pretrained weights, "none" from scratch (--weights none)
    freeze_bn: bool = False
    head_epochs: int = 0
    head_lr: float | None = None


# Training defaults where fine-tuning differs from `train`: S3 penalises (--l1/--l2) the new head, not the pretrained body.
FINETUNE_DEFAULTS = TrainConfig(reg_layers="head.*")


def finetune_run(data: PrepareOptions, config: TrainConfig, options: FinetuneOptions, *,
                 out: Path = Path("results/runs"), progress: Any = None, log: Log | None = None,
                 on_epoch_end=None) -> RunResult:  # fmt: skip
    log = log or (lambda message: None)
    if options.head_epochs < 0:
        raise UsageError(f"bad --head-epochs {options.head_epochs}: expected zero or more")
    if options.head_lr is not None and not options.head_lr > 0:
        raise UsageError(f"bad --head-lr {options.head_lr}: expected a learning rate greater than zero")
    if options.freeze is None:  # a random backbone is no feature extractor: the from-scratch baseline trains it all
        options = replace(options, freeze="none" if options.weights == "none" else "all")
    if options.head_epochs:
        head_config = replace(config, epochs=options.head_epochs, lr=options.head_lr or config.lr)
        log(f"phase 1: {options.head_epochs} epoch(s) training the head on the frozen backbone")
        first = finetune_run(data, head_config, replace(options, freeze="all", freeze_bn=False, head_epochs=0),
                             out=out, progress=progress, log=log)  # fmt: skip
        if first.status != "completed":
            return first
        log(f"phase 2: fine-tuning with --freeze {options.freeze} from {first.run.path}")
        options = replace(options, weights=f"run:{first.run.path}", head_epochs=0, backbone=None)
    return train_with_plan(data, config, lambda prepared: plan(prepared, config, options, log), out=out, progress=progress,
                  log=log, on_epoch_end=on_epoch_end)


def plan(prepared: Prepared, config: TrainConfig, options: FinetuneOptions, log: Log) -> ModelPlan:
    from cnnbench.models import ModelSpec, build
    from cnnbench.models.transfer import parse_freeze, parse_head, resolve_backbone

    parse_freeze(options.freeze)
    spec_in = prepared.input_spec
    head_options = dict(units=options.units, pool=options.pool, activation=options.activation,
                        dropout=config.dropout or 0.0)  # fmt: skip
    freezing = {"freeze": options.freeze, "freeze_bn": options.freeze_bn}
    if options.weights.startswith("run:"):
        return _from_run(prepared, options, head_options, freezing, log)
    if options.backbone is None:
        raise UsageError("--backbone is required (see `cnnbench models`), unless --weights run:RUN_DIR names a run")
    entry, alias_note = resolve_backbone(options.backbone)
    if alias_note:
        log(f"note: {alias_note}")
    head = parse_head(options.head or "linear", **head_options).to_dict()
    spec = ModelSpec(name=entry.name, input=spec_in, options={"head": head, **freezing})
    model = build(spec)
    weights: dict[str, Any] = {"source": options.weights}
    if options.weights == "none":
        from cnnbench.engine import initialise

        initialise(model, config.init)
        normalization = dataset_normalization(prepared)
        weights["init"] = config.init
    else:
        normalization = _imagenet_normalization(entry.name)
        if options.weights == "imagenet":
            from cnnbench.models.transfer import imagenet_state_dict, imagenet_weights_path

            state = imagenet_state_dict(entry.name)
            weights["file"] = str(imagenet_weights_path(entry.name))
        else:
            state = _weights_file(Path(options.weights))
            weights["file"] = str(Path(options.weights).resolve())
        _load_backbone(model, state)
        if spec_in.height < 64:
            log(f"note: {entry.name}'s weights were trained on 224x224 images; these are {spec_in.height}x"
                f"{spec_in.width} (S2 found upscaling with --size 224 helps)")  # fmt: skip
    if alias_note:
        weights["alias"] = alias_note
    return ModelPlan(model=model, spec=spec, normalization=normalization, kind="finetune",
                     extra={"finetune": {"backbone": entry.name, "weights": weights, **freezing,
                                         "head": head}})  # fmt: skip


def _from_run(prepared: Prepared, options: FinetuneOptions, head_options: dict[str, Any],
              freezing: dict[str, Any], log: Log) -> ModelPlan:  # fmt: skip
    """Start from a cnnbench run's best weights: its architecture rebuilt for this dataset's shape and classes."""
    from cnnbench.models import ModelSpec, build, train_always
    from cnnbench.models.transfer import load_matching, parse_head

    parent = RunDir.open(Path(options.weights[len("run:") :]))
    parent_config = parent.config()
    parent_spec = ModelSpec.from_dict(parent_config["model"])
    if options.backbone is not None and options.backbone != parent_spec.name:
        raise UsageError(f"--backbone {options.backbone} differs from the model of {parent.name} "
                         f"({parent_spec.name}); leave --backbone out when starting from a run")  # fmt: skip
    inherited = {k: v for k, v in parent_spec.options.items() if k not in ("freeze", "freeze_bn")}
    if options.head is not None:
        if "head" not in inherited:
            raise UsageError(f"--head applies to torchvision backbones; {parent.name} is a {parent_spec.name} run, "
                             f"whose own head is kept (leave --head out)")  # fmt: skip
        inherited["head"] = parse_head(options.head, **head_options).to_dict()
    spec = ModelSpec(name=parent_spec.name, input=prepared.input_spec, options={**inherited, **freezing})
    model = build(spec)
    loaded, reinitialised = load_matching(model, parent.load_checkpoint("best")["model"])
    if reinitialised:
        # A layer that starts from scratch must train, whatever the freezing policy; the spec records it so that a
        # resumed run rebuilds the same trainable set.
        unfreeze = [name for name, _ in model.named_parameters() if name in reinitialised]
        spec = ModelSpec(name=spec.name, input=spec.input, options={**spec.options, "unfreeze": unfreeze})
        train_always(model, unfreeze)  # what build(spec) would do, without building and loading twice
        log(f"from {parent.name}: {len(loaded)} tensors loaded; re-initialised and trained (shape changed): "
            f"{', '.join(reinitialised[:6])}{' ...' if len(reinitialised) > 6 else ''}")  # fmt: skip
    weights = {"source": f"run:{parent.path}", "loaded": len(loaded), "reinitialised": reinitialised}
    normalization = parent_config["normalization"]
    if len(normalization["mean"]) != prepared.input_spec.channels:  # other channels: the parent's stats do not apply
        normalization = dataset_normalization(prepared)
    return ModelPlan(model=model, spec=spec, normalization=normalization, kind="finetune",
                     extra={"parent": str(parent.path),
                            "finetune": {"backbone": parent_spec.name, "weights": weights, **freezing,
                                         "head": inherited.get("head")}})  # fmt: skip


def _imagenet_normalization(backbone: str) -> dict[str, Any]:
    from cnnbench.models.transfer import weights_enum

    transforms = weights_enum(backbone).transforms()
    return {"mean": list(transforms.mean), "std": list(transforms.std), "source": f"{weights_enum(backbone)} transforms"}


def _weights_file(path: Path) -> dict[str, Any]:
    import torch

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
