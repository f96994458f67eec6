"""Model zoo: `build_model(name, spec)` for every registered scratch model and the `fit:N` family."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from cnnbench.models.fit import FIT_DROPOUT, count_fit_params, fit_net, fit_width, parse_fit
from cnnbench.models.zoo import MODELS, InputSpec


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """Everything needed to rebuild a model from a run directory: saved as JSON next to its weights."""

    name: str
    input: InputSpec
    options: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "input": vars(self.input), "options": self.options}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(name=data["name"], input=InputSpec(**data["input"]), options=dict(data["options"]))


def resolve(name: str, spec: InputSpec, *, dropout: float | None = None) -> ModelSpec:
    """Turn a user's model name into a concrete, rebuildable spec (a `fit:N` name is resolved to its width here)."""
    budget = parse_fit(name)
    if budget is not None:
        options: dict[str, Any] = {"width": fit_width(spec, budget)}
        default_dropout = FIT_DROPOUT
    else:
        options = {}
        default_dropout = MODELS.get(name).default_dropout
    dropout = default_dropout if dropout is None else dropout
    if dropout is not None:  # recorded, so a report's dropout column says what the model used
        options["dropout"] = dropout
    return ModelSpec(name=name, input=spec, options=options)


def build(model_spec: ModelSpec) -> nn.Module:
    """Rebuild a model from its spec, with its freezing policy applied (weights come from a checkpoint)."""
    options = dict(model_spec.options)
    freeze, freeze_bn = options.pop("freeze", None), options.pop("freeze_bn", False)
    unfreeze = set(options.pop("unfreeze", []))  # parameters that train whatever the policy (re-initialised ones)
    if "head" in options:  # a torchvision backbone with a new head (cnnbench finetune)
        from cnnbench.models.transfer import build_transfer

        model = build_transfer(model_spec.input, backbone=model_spec.name, head=options["head"])
    elif model_spec.name.startswith("fit:"):
        model = fit_net(model_spec.input, **options)
    else:
        model = MODELS.get(model_spec.name).build(model_spec.input, **options)
    if freeze is not None:
        from cnnbench.models.transfer import apply_freeze

        apply_freeze(model, freeze, freeze_bn=freeze_bn)
    train_always(model, unfreeze)
    return model


def train_always(model: nn.Module, names: set[str] | list[str]) -> None:
    """Make the named parameters trainable whatever the freezing policy (re-initialised layers must learn)."""
    for name, parameter in model.named_parameters():
        if name in names:
            parameter.requires_grad = True


def build_model(name: str, spec: InputSpec, *, dropout: float | None = None) -> tuple[nn.Module, ModelSpec]:
    model_spec = resolve(name, spec, dropout=dropout)
    return build(model_spec), model_spec


__all__ = ["MODELS", "InputSpec", "ModelSpec", "build", "build_model", "count_fit_params", "resolve"]
