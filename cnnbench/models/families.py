"""Model families: every way to name a model, behind one interface, in one registry.

A model name belongs to exactly one family: `zoo` (the seeds' architectures, zoo.py), `fit` (`fit:N`, fit.py) or
`torchvision` (a torchvision backbone with a new head, transfer.py). A family turns a name and the data's shape into a
`ModelSpec` (`resolve`) and a spec into a freshly initialised model of its default architecture (`build`); what every
family shares (recorded layer widths, freezing) is applied on top by `cnnbench.models.build`. Adding a family is one
class and one `FAMILIES.register` in this file.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from cnnbench.core.errors import UsageError
from cnnbench.models.fit import FIT_DROPOUT, fit_net, fit_width, parse_fit
from cnnbench.models.transfer import ALIASES, BACKBONES, build_transfer, parse_head, resolve_backbone
from cnnbench.models.zoo import MODELS, InputSpec
from cnnbench.core.registry import Registry, did_you_mean


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """Everything needed to rebuild a model from a run directory: saved as JSON next to its weights.

    `options` holds the family's own choices (a zoo model's dropout, a fit width, a torchvision head) and the ones
    every family shares: `widths` (layers narrowed after building, see widths.py), `freeze`, `freeze_bn`, `unfreeze`.
    """

    name: str
    input: InputSpec
    options: dict[str, Any]
    family: str = ""  # left out by run directories older than families (and by hand-made specs): then inferred

    def __post_init__(self) -> None:
        if not self.family:
            object.__setattr__(self, "family", legacy_family(self.name, self.options))

    def with_options(self, **changes: Any) -> ModelSpec:
        return replace(self, options={**self.options, **changes})

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "input": vars(self.input), "options": self.options}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(name=data["name"], family=data.get("family", ""), input=InputSpec(**data["input"]),
                   options=dict(data["options"]))  # fmt: skip


def legacy_family(name: str, options: dict[str, Any]) -> str:
    """The family of a spec that does not say: how `build` told them apart before there were families."""
    if "head" in options:
        return "torchvision"
    return "fit" if name.startswith("fit:") else "zoo"


class ModelFamily:
    """The interface every family answers (a family subclasses this: one class and one register call)."""

    name: str  # what ModelSpec.family records
    summary: str  # one line for `cnnbench models`

    def listing(self) -> list[str]:
        """What listings and error messages show: the members' names, or the pattern of a parametrised family."""
        ...

    def owns(self, model_name: str) -> bool:
        raise NotImplementedError

    def resolve(self, model_name: str, input_spec: InputSpec, *, dropout: float | None, head: dict[str, Any] | None,
                arch: dict[str, Any] | None = None) -> ModelSpec:  # fmt: skip
        """A rebuildable spec; `head` is for torchvision backbones, `arch` for the arch model (others ignore it)."""
        raise NotImplementedError

    def build(self, spec: ModelSpec) -> nn.Module:
        """The default architecture with fresh weights; reads only this family's own options."""
        raise NotImplementedError

    def seed_input(self, model_name: str) -> InputSpec | None:
        """The input the model is counted at when no dataset is given, or None when it must be sized for one."""
        return None

    def describe(self, spec: ModelSpec) -> str:
        raise NotImplementedError


def _refuse_head(model_name: str, family: str, head: dict[str, Any] | None) -> None:
    if head is not None:
        raise UsageError(f"--head applies to torchvision backbones; {model_name} is a {family} model with its own head")


class ZooFamily(ModelFamily):
    name = "zoo"
    summary = "the seed studies' architectures, rebuilt layer for layer (the table above)"

    def listing(self) -> list[str]:
        return MODELS.names()

    def owns(self, model_name: str) -> bool:
        return model_name in MODELS

    def resolve(self, model_name: str, input_spec: InputSpec, *, dropout: float | None,
                head: dict[str, Any] | None, arch: dict[str, Any] | None = None) -> ModelSpec:  # fmt: skip
        _refuse_head(model_name, self.name, head)
        dropout = MODELS.get(model_name).default_dropout if dropout is None else dropout
        options = {} if dropout is None else {"dropout": dropout}  # recorded, so a report's dropout column says it
        return ModelSpec(name=model_name, family=self.name, input=input_spec, options=options)

    def build(self, spec: ModelSpec) -> nn.Module:
        return MODELS.get(spec.name).build(spec.input, dropout=spec.options.get("dropout"))

    def seed_input(self, model_name: str) -> InputSpec | None:
        return MODELS.get(model_name).seed_input

    def describe(self, spec: ModelSpec) -> str:
        return MODELS.get(spec.name).description


class FitFamily(ModelFamily):
    name = "fit"
    summary = "fit:N, the widest VGG-style model (2 convs + BN per stage) with at most N trainable parameters"

    def listing(self) -> list[str]:
        return ["fit:N"]

    def owns(self, model_name: str) -> bool:
        return model_name.startswith("fit:")

    def resolve(self, model_name: str, input_spec: InputSpec, *, dropout: float | None,
                head: dict[str, Any] | None, arch: dict[str, Any] | None = None) -> ModelSpec:  # fmt: skip
        _refuse_head(model_name, self.name, head)
        budget = parse_fit(model_name)
        assert budget is not None  # owns() saw the fit: prefix, and parse_fit raises on anything malformed after it
        options = {"width": fit_width(input_spec, budget), "dropout": FIT_DROPOUT if dropout is None else dropout}
        return ModelSpec(name=model_name, family=self.name, input=input_spec, options=options)

    def build(self, spec: ModelSpec) -> nn.Module:
        return fit_net(spec.input, width=spec.options["width"], dropout=spec.options.get("dropout", FIT_DROPOUT))

    def describe(self, spec: ModelSpec) -> str:
        return f"budget-fitted family, width {spec.options['width']}"


class TorchvisionFamily(ModelFamily):
    name = "torchvision"
    summary = "a torchvision backbone (the table below) with a new head; `cnnbench finetune` loads pretrained weights"

    def listing(self) -> list[str]:
        return BACKBONES.names()

    def owns(self, model_name: str) -> bool:
        return model_name in BACKBONES or model_name.lower() in ALIASES

    def resolve(self, model_name: str, input_spec: InputSpec, *, dropout: float | None,
                head: dict[str, Any] | None, arch: dict[str, Any] | None = None) -> ModelSpec:  # fmt: skip
        """`head` is `parse_head(...).to_dict()`; without one, S3's single dense layer. `dropout` is the head's."""
        entry, _ = resolve_backbone(model_name)  # a seed alias (resnet50v2) resolves to the backbone it stands for
        if head is None:
            head = parse_head("linear", dropout=dropout or 0.0).to_dict()
        elif dropout is not None:
            head = {**head, "dropout": dropout}
        return ModelSpec(name=entry.name, family=self.name, input=input_spec, options={"head": head})

    def build(self, spec: ModelSpec) -> nn.Module:
        return build_transfer(spec.input, backbone=spec.name, head=spec.options["head"])

    def describe(self, spec: ModelSpec) -> str:
        return f"torchvision {spec.name} with a {spec.options['head']['kind']} head"


class ArchFamily(ModelFamily):
    name = "arch"
    summary = "arch, a plain CNN described by --arch-* options (stages, width, growth, kernel ...): what tune searches"

    def listing(self) -> list[str]:
        return ["arch"]

    def owns(self, model_name: str) -> bool:
        return model_name == "arch"

    def resolve(self, model_name: str, input_spec: InputSpec, *, dropout: float | None,
                head: dict[str, Any] | None, arch: dict[str, Any] | None = None) -> ModelSpec:  # fmt: skip
        from dataclasses import asdict

        from cnnbench.models.arch import plan
        from cnnbench.spec.run import ArchChoice

        _refuse_head(model_name, self.name, head)
        arch = arch or asdict(ArchChoice())
        plan(input_spec, arch)  # refuses an input too small for the stages, before anything is built
        return ModelSpec(name=model_name, family=self.name, input=input_spec,
                         options={"arch": dict(arch), "dropout": dropout or 0.0})  # fmt: skip

    def build(self, spec: ModelSpec) -> nn.Module:
        from cnnbench.models.arch import arch_net

        return arch_net(spec.input, arch=spec.options["arch"], dropout=spec.options.get("dropout", 0.0))

    def describe(self, spec: ModelSpec) -> str:
        a = spec.options["arch"]
        return (f"arch: {a['stages']} stages from {a['width']} channels (x{a['growth']}), {a['kernel']}x{a['kernel']} "
                f"{a['padding']}, {a['downsample']}, {'BN, ' if a['batchnorm'] else ''}dense {a['dense']}")


FAMILIES: Registry[ModelFamily] = Registry("model family")
for _family in (ZooFamily(), FitFamily(), TorchvisionFamily(), ArchFamily()):
    FAMILIES.register(_family.name, _family)


def family_of(model_name: str) -> ModelFamily:
    """The family that owns a model name, or a UsageError that suggests close names from every family."""
    for family_name in FAMILIES:
        family = FAMILIES.get(family_name)
        if family.owns(model_name):
            return family
    names = [shown for family_name in FAMILIES for shown in FAMILIES.get(family_name).listing()]
    raise UsageError(f"unknown model {model_name!r}{did_you_mean(model_name, names)}; choose from: {', '.join(names)}")
