"""Transfer learning: torchvision backbones, new heads, freezing policies and pretrained weights.

A fine-tune model is `TransferNet(backbone, head)`. The backbone keeps torchvision's own module names (`features.17`,
`layer4`), so a freezing policy can name modules the way torchvision's documentation and the seeds do, and a
checkpoint's keys read like torchvision's. The head is ours: `linear` (S3's "single dense"), `extended` (S3: pool,
flatten, dense with units/activation/penalty, dropout, output) or `mlp:W1,W2,...` (S4), with the pooling explicit.

Frozen means frozen: a BatchNorm layer whose parameters are frozen also keeps its running statistics (it stays in
eval mode while the rest trains), as Keras does for non-trainable layers; `--freeze-bn` extends that to the BatchNorm
layers of unfrozen blocks (S4's MobileNetV2 recipe).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from cnnbench.core.errors import UsageError
from cnnbench.models.layers import Dropout, MaxPool2d
from cnnbench.models.zoo import FrozenBatchNormMixin, InputSpec, num_outputs
from cnnbench.core.registry import Registry


@dataclass(frozen=True, kw_only=True)
class BackboneEntry:
    name: str  # torchvision's model name
    body: tuple[str, ...]  # top-level modules of the torchvision model that make the feature extractor, in order
    note: str = ""


BACKBONES: Registry[BackboneEntry] = Registry("backbone")
for _name in ("resnet18", "resnet34", "resnet50"):
    BACKBONES.register(_name, BackboneEntry(name=_name, body=("conv1", "bn1", "relu", "maxpool", "layer1", "layer2",
                                                              "layer3", "layer4")))  # fmt: skip
for _name in ("vgg16", "vgg16_bn", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "squeezenet1_0", "squeezenet1_1",
              "efficientnet_b0", "efficientnet_b3"):  # fmt: skip
    BACKBONES.register(_name, BackboneEntry(name=_name, body=("features",)))
BACKBONES.register("densenet121", BackboneEntry(name="densenet121", body=("features", "relu")))
BACKBONES.register("convnext_tiny", BackboneEntry(name="convnext_tiny", body=("features", "norm")))

# The seeds used two Keras-only models; these are the closest torchvision has, and why.
ALIASES = {
    "resnet50v2": ("resnet50", "torchvision has no pre-activation ResNet v2; resnet50 has the same depth and widths"),
    "xception": ("efficientnet_b3", "torchvision has no Xception; efficientnet_b3 is built, like Xception, on "
                                    "depthwise-separable convolutions, at similar ImageNet accuracy (82% vs 79%)"),
}  # fmt: skip


def resolve_backbone(name: str) -> tuple[BackboneEntry, str | None]:
    """The registry entry for a backbone name (or a seed alias), and the alias note when one was used."""
    if name.lower() in ALIASES:
        target, why = ALIASES[name.lower()]
        return BACKBONES.get(target), f"{name} -> {target}: {why}"
    if name not in BACKBONES:
        raise UsageError(BACKBONES.unknown_message(name) + f", or a seed alias ({', '.join(ALIASES)})")
    return BACKBONES.get(name), None


class Backbone(nn.Module):
    """A torchvision model's feature extractor, keeping its module names; outputs a feature map (N, C, h, w)."""

    def __init__(self, entry: BackboneEntry) -> None:
        super().__init__()
        from torchvision import models

        full = models.get_model(entry.name, weights=None)
        for part in entry.body:
            if part == "relu" and entry.name.startswith("densenet"):
                module: nn.Module = nn.ReLU()  # torchvision applies F.relu after densenet's features
            elif part == "norm" and entry.name.startswith("convnext"):
                module = full.classifier[0]  # ConvNeXt's LayerNorm2d before the classifier belongs to the features
            else:
                module = getattr(full, part)
            self.add_module(part, module)
        self.entry = entry

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grayscale into an RGB backbone
        for module in self.children():
            x = module(x)
        return x



def blocks(backbone: nn.Module) -> list[tuple[str, nn.Module]]:
    """The units `last:N` counts: children of `features` (or top-level modules) that hold parameters."""
    found = []
    for name, module in backbone.named_children():
        children = list(module.named_children()) if name == "features" else [("", module)]
        for child_name, child in children:
            if any(True for _ in child.parameters()):
                found.append((f"{name}.{child_name}" if child_name else name, child))
    return found


POOLS = ("avg", "flatten", "max2")
HEADS = ("linear", "extended", "mlp:W1,W2,...")
ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU}
DEFAULT_POOL = {"linear": "avg", "extended": "max2", "mlp": "avg"}


@dataclass(frozen=True, kw_only=True)
class HeadSpec:
    kind: str  # linear | extended | mlp
    widths: tuple[int, ...] = ()  # hidden layer widths (extended: one, mlp: several)
    pool: str = "avg"
    activation: str = "relu"
    dropout: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "widths": list(self.widths), "pool": self.pool, "activation": self.activation,
                "dropout": self.dropout}  # fmt: skip


def parse_head(text: str, *, units: int = 256, pool: str | None = None, activation: str = "relu",
               dropout: float = 0.0) -> HeadSpec:  # fmt: skip
    kind, _, widths_text = text.partition(":")
    if kind == "mlp":
        try:
            widths = tuple(int(w) for w in widths_text.split(",") if w.strip())
        except ValueError:
            widths = ()
        if not widths or any(w <= 0 for w in widths):
            raise UsageError(f"bad --head {text!r}: expected mlp:W1,W2,... with positive widths, e.g. mlp:128,64")
    elif kind == "extended" and not widths_text:
        widths = (units,)
    elif kind == "linear" and not widths_text:
        widths = ()
    else:
        raise UsageError(f"bad --head {text!r}: choose from {', '.join(HEADS)}")
    pool = pool or DEFAULT_POOL[kind]
    if pool not in POOLS:
        raise UsageError(f"bad --pool {pool!r}: choose from {', '.join(POOLS)}")
    if activation not in ACTIVATIONS:
        raise UsageError(f"bad --activation {activation!r}: choose from {', '.join(ACTIVATIONS)}")
    if units <= 0:
        raise UsageError(f"bad --units {units}: expected a positive number of units")
    return HeadSpec(kind=kind, widths=widths, pool=pool, activation=activation, dropout=dropout)


def build_head(spec: HeadSpec, channels: int, feature_hw: tuple[int, int], outputs: int) -> nn.Sequential:
    h, w = feature_hw
    layers: list[nn.Module]
    if spec.pool == "avg":
        layers, flat = [nn.AdaptiveAvgPool2d(1)], channels
    elif spec.pool == "max2":
        if min(h, w) < 2:
            raise UsageError(f"--pool max2 needs a feature map of at least 2x2; this backbone gives {h}x{w} at this "
                             f"input size (use a larger --size or --pool avg)")  # fmt: skip
        layers, flat = [MaxPool2d(2)], channels * (h // 2) * (w // 2)
    else:
        layers, flat = [], channels * h * w
    layers.append(nn.Flatten())
    for width in spec.widths:
        layers += [nn.Linear(flat, width), ACTIVATIONS[spec.activation](), Dropout(spec.dropout)]
        flat = width
    layers.append(nn.Linear(flat, outputs))
    return nn.Sequential(*layers)


class TransferNet(FrozenBatchNormMixin, nn.Module):
    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


# --- freezing ---------------------------------------------------------------------------------------------------------


def parse_freeze(text: str) -> tuple[str, str | None]:
    kind, _, arg = text.partition(":")
    if kind in ("all", "none") and not arg:
        return kind, None
    if kind == "fraction":
        try:
            value = float(arg)
        except ValueError:
            value = math.nan
        if not value >= 1.0:
            raise UsageError(f"bad --freeze {text!r}: fraction:X unfreezes from layer n_layers/X onwards; X >= 1, "
                             f"e.g. fraction:2 or fraction:1.05")  # fmt: skip
        return kind, arg
    if kind == "last" and arg.isdigit() and int(arg) > 0:
        return kind, arg
    if kind == "from" and arg:
        return kind, arg
    raise UsageError(f"bad --freeze {text!r}: choose all, none, fraction:X, last:N or from:MODULE "
                     f"(e.g. fraction:2, last:2, from:features.17)")  # fmt: skip


def parts(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(backbone, head) of a fine-tune model, or (features, head) of a zoo model transferred from a run."""
    if isinstance(model, TransferNet):
        return model.backbone, model.head
    return model.features, model.head


def apply_freeze(model: nn.Module, policy: str, *, freeze_bn: bool = False) -> None:
    """Set requires_grad on the backbone by policy (the head always trains)."""
    kind, arg = parse_freeze(policy)
    backbone, head = parts(model)
    label = backbone.entry.name if isinstance(backbone, Backbone) else "this model's features"
    leaves = [(name, m) for name, m in backbone.named_modules() if not list(m.children()) and _has_params(m)]
    if kind == "none":
        trainable_from = 0
    elif kind == "all":
        trainable_from = len(leaves)
    elif kind == "fraction":
        # S3: "unfreeze from layer n_layers / X onwards", counting the backbone's parameterised layers in order.
        trainable_from = int(len(leaves) / float(arg))
    else:
        if kind == "last":
            units = blocks(backbone)
            if int(arg) > len(units):
                raise UsageError(f"--freeze last:{arg}: {label} has only {len(units)} blocks "
                                 f"({', '.join(name for name, _ in units)})")  # fmt: skip
            first = units[-int(arg)][0]
        else:
            first = arg
        matches = [i for i, (name, _) in enumerate(leaves) if name == first or name.startswith(first + ".")]
        if not matches:
            raise UsageError(f"--freeze from:{first}: no module {first!r} with parameters in {label}; its blocks are "
                             f"{', '.join(name for name, _ in blocks(backbone))}")  # fmt: skip
        trainable_from = matches[0]
    for index, (_, module) in enumerate(leaves):
        for parameter in module.parameters(recurse=False):
            parameter.requires_grad = index >= trainable_from
    if freeze_bn:
        for module in backbone.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                for parameter in module.parameters():
                    parameter.requires_grad = False
    for parameter in head.parameters():
        parameter.requires_grad = True


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def backbone_frozen(model: nn.Module) -> bool:
    """True when only the head trains: the case where backbone features can be computed once and cached."""
    if not hasattr(model, "head"):
        return False
    backbone, _ = parts(model)
    return not any(p.requires_grad for p in backbone.parameters())


# --- building and weights ---------------------------------------------------------------------------------------------


def build_transfer(spec: InputSpec, *, backbone: str, head: dict[str, Any]) -> TransferNet:
    """Build a fine-tune model with fresh weights (a run's checkpoint or `load_*` provides trained ones)."""
    entry, _ = resolve_backbone(backbone)
    body = Backbone(entry)
    body.eval()
    with torch.no_grad():
        try:
            features = body(torch.zeros(1, 3, spec.height, spec.width))
        except RuntimeError:
            raise UsageError(f"backbone {entry.name} cannot take {spec.height}x{spec.width} inputs; use a larger "
                             f"--size (224 is what its ImageNet weights were trained on)") from None  # fmt: skip
    head_spec = HeadSpec(**{**head, "widths": tuple(head["widths"])})  # widths is a list once it went through JSON
    outputs = num_outputs(spec, binary_logit=True)
    return TransferNet(body, build_head(head_spec, features.shape[1], tuple(features.shape[2:]), outputs)).train()


def weights_enum(backbone: str):
    from torchvision import models

    return models.get_model_weights(backbone).DEFAULT


def imagenet_weights_path(backbone: str) -> Path:
    """Where torch keeps the backbone's ImageNet weights: <torch hub dir>/checkpoints/<torchvision's file name>."""
    filename = os.path.basename(urlparse(weights_enum(backbone).url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def imagenet_state_dict(backbone: str) -> dict[str, torch.Tensor]:
    """The backbone's ImageNet weights, read from imagenet_weights_file."""
    path = imagenet_weights_file(backbone)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UsageError(f"{path} is not a readable weights file ({type(error).__name__}); delete it and "
                         f"retry") from None  # fmt: skip


def imagenet_weights_file(backbone: str) -> Path:
    """The cached file when present (no network); otherwise torch's download into the cache; else a clear error."""
    path = imagenet_weights_path(backbone)
    if not path.is_file():
        try:
            torch.hub.load_state_dict_from_url(weights_enum(backbone).url, model_dir=str(path.parent), progress=False,
                                               check_hash=True, file_name=path.name)  # fmt: skip
        except Exception as error:  # no network, a proxy, a half download: all end the same way for the user
            reason = " ".join(str(error).split())[:120] or type(error).__name__
            raise UsageError(f"ImageNet weights for {backbone} are not cached and could not be downloaded ({reason}); "
                             f"place {path.name} in {path.parent}") from None  # fmt: skip
    return path


def load_backbone_weights(model: TransferNet, state: dict[str, torch.Tensor]) -> list[str]:
    """Load a torchvision state dict (keys like `features.0.weight`, `classifier.1.weight`) into the backbone.

    The torchvision classifier is dropped (the head is new). Returns the backbone keys the file did not provide.
    """
    backbone = model.backbone
    renamed = {}
    for key, value in state.items():
        if backbone.entry.name.startswith("convnext") and key.startswith("classifier.0."):
            renamed["norm." + key[len("classifier.0."):]] = value
        elif key.split(".")[0] in backbone.entry.body:
            renamed[key] = value
    result = backbone.load_state_dict(renamed, strict=False)
    if result.unexpected_keys:
        raise UsageError(f"the weights do not fit {backbone.entry.name}: unexpected keys such as "
                         f"{result.unexpected_keys[0]}")  # fmt: skip
    return list(result.missing_keys)


def load_matching(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Load every tensor whose name and shape match (a new head with another class count is left as initialised).

    Returns (loaded keys, skipped keys).
    """
    own = model.state_dict()
    loaded = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(loaded, strict=False)
    return sorted(loaded), sorted(set(own) - set(loaded))


def describe_backbones() -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Each backbone's feature-extractor size, output channels, blocks and weights file; and the seed aliases."""
    rows = []
    for name in BACKBONES:
        with torch.device("meta"):  # shapes and counts only: no memory, no weight initialisation (vgg16 takes seconds)
            body = Backbone(BACKBONES.get(name))
            channels = body(torch.zeros(1, 3, 64, 64)).shape[1]
        units = [unit for unit, _ in blocks(body)]
        rows.append({
            "name": name,
            "params": sum(p.numel() for p in body.parameters()),
            "channels": channels,
            "blocks": f"{len(units)}: {units[0]} .. {units[-1]}",
            "weights_file": imagenet_weights_path(name).name,
        })  # fmt: skip
    return rows, {alias: f"-> {target}: {why}" for alias, (target, why) in ALIASES.items()}
