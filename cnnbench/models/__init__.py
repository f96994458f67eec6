"""Models by name: `resolve` a name to a rebuildable `ModelSpec`, `build` the spec, whatever family it belongs to.

The families (zoo, fit:N, torchvision backbones) live in families.py; what they share is applied here, after a
family builds its default architecture: recorded layer widths (widths.py), then the freezing policy.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from cnnbench.models.families import FAMILIES, ModelSpec, family_of
from cnnbench.models.fit import count_fit_params
from cnnbench.models.transfer import apply_freeze
from cnnbench.models.widths import apply_widths, record_widths
from cnnbench.models.zoo import MODELS, InputSpec


def resolve(name: str, spec: InputSpec, *, dropout: float | None = None, head: dict[str, Any] | None = None,
            arch: dict[str, Any] | None = None) -> ModelSpec:  # fmt: skip
    """Turn a user's model name into a concrete, rebuildable spec (a `fit:N` name is resolved to its width here).

    `head` (`transfer.parse_head(...).to_dict()`) is for torchvision backbones, which otherwise get a single dense
    layer; `dropout` is the model's own, or the head's for a backbone; `arch` is the `arch` model's shape
    (spec.ArchChoice as a dict).
    """
    return family_of(name).resolve(name, spec, dropout=dropout, head=head, arch=arch)


def build(model_spec: ModelSpec) -> nn.Module:
    """Rebuild a model from its spec, with its freezing policy applied (weights come from a checkpoint)."""
    options = model_spec.options
    model = FAMILIES.get(model_spec.family).build(model_spec)
    if options.get("widths"):
        apply_widths(model, options["widths"])
    if options.get("freeze") is not None:
        apply_freeze(model, options["freeze"], freeze_bn=options.get("freeze_bn", False))
    train_always(model, set(options.get("unfreeze", [])))  # parameters that train whatever the policy (re-initialised)
    return model


def train_always(model: nn.Module, names: set[str] | list[str]) -> None:
    """Make the named parameters trainable whatever the freezing policy (re-initialised layers must learn)."""
    for name, parameter in model.named_parameters():
        if name in names:
            parameter.requires_grad = True


def build_model(name: str, spec: InputSpec, *, dropout: float | None = None,
                arch: dict[str, Any] | None = None) -> tuple[nn.Module, ModelSpec]:  # fmt: skip
    model_spec = resolve(name, spec, dropout=dropout, arch=arch)
    return build(model_spec), model_spec


__all__ = ["FAMILIES", "MODELS", "InputSpec", "ModelSpec", "build", "build_model", "count_fit_params", "record_widths",
           "resolve", "train_always"]  # fmt: skip
