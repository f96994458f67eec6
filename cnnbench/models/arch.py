"""The `arch` family: a plain scratch CNN described by a handful of numbers (spec.ArchChoice), so an architecture
search can sample it and a budget can be checked before anything is built.

`plan` walks the shapes in closed form and returns the parameter count and the MACs, exactly what building the model
and counting would give (tests check both against `accounting`): a search rejects an architecture over its parameter
or MAC budget in microseconds, without building or training it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from cnnbench.core.errors import UsageError
from cnnbench.models.layers import BatchNorm2d, Dropout, MaxPool2d
from cnnbench.models.zoo import Classifier, InputSpec


@dataclass(frozen=True)
class ArchPlan:
    widths: list[int]  # channels per stage
    features: int  # inputs of the head
    params: int  # trainable parameters
    macs: int  # multiply-accumulates per image (convolutions and dense layers, as accounting.count_macs counts)


def stage_widths(arch: dict[str, Any]) -> list[int]:
    return [max(1, round(arch["width"] * arch["growth"] ** i)) for i in range(arch["stages"])]


def plan(spec: InputSpec, arch: dict[str, Any]) -> ArchPlan:
    """Shapes, parameters and MACs in closed form; a UsageError when the input is too small for the stages."""
    k, stride = arch["kernel"], 2 if arch["downsample"] == "stride" else 1
    pad = k // 2 if arch["padding"] == "same" else 0
    height, width, cin = spec.height, spec.width, spec.channels
    params = macs = 0
    widths = stage_widths(arch)
    for cout in widths:
        height, width = (height + 2 * pad - k) // stride + 1, (width + 2 * pad - k) // stride + 1
        if height < 1 or width < 1:
            raise UsageError(f"arch with {arch['stages']} stages and kernel {k} cannot take {spec.height}x{spec.width} "
                             f"inputs; use fewer stages, a smaller kernel, --arch-padding same or a larger --size")
        if arch.get("conv", "plain") == "separable":  # depthwise kxk (with bias), then pointwise 1x1
            params += k * k * cin + cin + cin * cout + cout
            macs += height * width * (k * k * cin + cin * cout)
        else:
            params += k * k * cin * cout + cout
            macs += height * width * k * k * cin * cout
        if arch["downsample"] == "pool":
            height, width = height // 2, width // 2
            if height < 1 or width < 1:
                raise UsageError(f"arch with {arch['stages']} pooled stages cannot take {spec.height}x{spec.width} "
                                 f"inputs; use fewer stages or a larger --size")
        if arch["batchnorm"]:
            params += 2 * cout
        cin = cout
    features = cin if arch["features"] == "avg" else cin * height * width
    inputs = features
    if arch["dense"]:
        params += inputs * arch["dense"] + arch["dense"]
        macs += inputs * arch["dense"]
        inputs = arch["dense"]
    params += inputs * spec.num_classes + spec.num_classes
    macs += inputs * spec.num_classes
    return ArchPlan(widths=widths, features=features, params=params, macs=macs)


def arch_net(spec: InputSpec, *, arch: dict[str, Any], dropout: float = 0.0) -> nn.Module:
    shape = plan(spec, arch)
    k = arch["kernel"]
    layers: list[nn.Module] = []
    cin = spec.channels
    for cout in shape.widths:
        stride, pad = 2 if arch["downsample"] == "stride" else 1, k // 2 if arch["padding"] == "same" else 0
        if arch.get("conv", "plain") == "separable":  # MobileNet's: a kxk filter per channel, then 1x1 across them
            layers += [nn.Conv2d(cin, cin, k, stride=stride, padding=pad, groups=cin), nn.Conv2d(cin, cout, 1)]
        else:
            layers.append(nn.Conv2d(cin, cout, k, stride=stride, padding=pad))
        if arch["downsample"] == "pool":
            layers.append(MaxPool2d(2))  # before the ReLU: the same function, a quarter of the ReLU work
        layers.append(nn.ReLU())
        if arch["batchnorm"]:
            layers.append(BatchNorm2d(cout))
        cin = cout
    if arch["features"] == "avg":
        layers.append(nn.AdaptiveAvgPool2d(1))
    head: list[nn.Module] = [Dropout(dropout)] if dropout else []
    inputs = shape.features
    if arch["dense"]:
        head.append(nn.Linear(inputs, arch["dense"]))
        if arch["dense_activation"] == "relu":
            head.append(nn.ReLU())
        inputs = arch["dense"]
    head.append(nn.Linear(inputs, spec.num_classes))
    return Classifier(nn.Sequential(*layers), nn.Sequential(*head))
