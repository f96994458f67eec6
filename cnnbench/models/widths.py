"""Layer widths recorded in a ModelSpec, so a model narrowed after building (structured pruning) rebuilds from JSON.

Removing a channel takes it out of a convolution's outputs, the BatchNorm after it and the inputs of the next layer.
`record_widths` compares a narrowed model with a default build of its spec and returns, for each convolution, dense
and BatchNorm layer whose size changed, the sizes that changed (`{"features.0": {"out_channels": 5}}`, stored as
`options["widths"]`). `apply_widths`, run by `cnnbench.models.build`, replaces those layers of a default build with
layers of the same class and the recorded sizes, keeping kernel, stride, padding, bias, eps, momentum and the rest.
The weights then load from a checkpoint with a plain `load_state_dict`: no pickled modules. Only the sizes that changed
are recorded, so the same spec rebuilt for another dataset still takes that dataset's channels and classes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cnnbench.models.families import FAMILIES, ModelSpec
from cnnbench.models.layers import BatchNorm2d

_CONV_SIZES = ("in_channels", "out_channels", "groups")
# Exact classes, not subclasses: a subclass may take other constructor arguments than the ones _resized passes.
RESIZABLE: dict[type[nn.Module], tuple[str, ...]] = {
    nn.Conv1d: _CONV_SIZES, nn.Conv2d: _CONV_SIZES, nn.Conv3d: _CONV_SIZES,
    nn.Linear: ("in_features", "out_features"),
    nn.BatchNorm1d: ("num_features",), nn.BatchNorm2d: ("num_features",), nn.BatchNorm3d: ("num_features",),
    BatchNorm2d: ("num_features",),  # the zoo's: nn.BatchNorm2d's constructor and sizes, a faster CPU training step
}  # fmt: skip


def record_widths(model: nn.Module, spec: ModelSpec) -> dict[str, dict[str, int]]:
    """The sizes in which `model` differs from a default build of `spec`, for `spec.with_options(widths=...)`.

    Raises ValueError when the difference is more than layer sizes (a tensor of another kind changed shape, or a layer
    was added or removed), since a rebuild from the widths could not load this model's weights.
    """
    with torch.device("meta"):  # shapes only: no memory and no weight initialisation for the reference build
        reference = FAMILIES.get(spec.family).build(spec)
    defaults = dict(reference.named_modules())
    widths: dict[str, dict[str, int]] = {}
    for name, module in model.named_modules():
        sizes = RESIZABLE.get(type(module))
        if sizes is None:
            continue
        default = defaults.get(name)
        if type(default) is not type(module):
            raise ValueError(f"{name} is a {type(module).__name__}, but a default build of {spec.name} has "
                             f"{type(default).__name__ if default is not None else 'no such layer'} there")  # fmt: skip
        changed = {size: getattr(module, size) for size in sizes if getattr(module, size) != getattr(default, size)}
        if changed:
            widths[name] = changed
    apply_widths(reference, widths)
    _require_same_shapes(model, reference, spec)
    return widths


def apply_widths(model: nn.Module, widths: dict[str, dict[str, Any]]) -> None:
    """Replace each named layer with one of the same class and the recorded sizes (fresh weights)."""
    for name, sizes in widths.items():
        module = model.get_submodule(name)
        resizable = RESIZABLE.get(type(module), ())
        if not set(sizes) <= set(resizable):
            unknown = ", ".join(sorted(set(sizes) - set(resizable)))
            raise ValueError(f"widths for {name}: a {type(module).__name__} has no recordable size {unknown} (the "
                             f"resizable layers are convolutions, Linear and BatchNorm)")  # fmt: skip
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, _resized(module, sizes))


def _resized(module: nn.Module, sizes: dict[str, Any]) -> nn.Module:
    def size(attribute: str) -> int:
        return int(sizes.get(attribute, getattr(module, attribute)))

    tensor = next(iter(module.state_dict().values()))  # a BatchNorm without affine parameters still has buffers
    placement = {"device": tensor.device, "dtype": tensor.dtype}
    if isinstance(module, nn.Linear):
        resized: nn.Module = nn.Linear(size("in_features"), size("out_features"), bias=module.bias is not None,
                                       **placement)  # fmt: skip
    elif isinstance(module, nn.modules.conv._ConvNd):
        resized = type(module)(size("in_channels"), size("out_channels"), module.kernel_size, stride=module.stride,
                               padding=module.padding, dilation=module.dilation, groups=size("groups"),
                               bias=module.bias is not None, padding_mode=module.padding_mode, **placement)  # fmt: skip
    else:
        resized = type(module)(size("num_features"), eps=module.eps, momentum=module.momentum, affine=module.affine,
                               track_running_stats=module.track_running_stats, **placement)  # fmt: skip
    return resized.train(module.training)


def _require_same_shapes(model: nn.Module, rebuilt: nn.Module, spec: ModelSpec) -> None:
    own = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    theirs = {key: tuple(value.shape) for key, value in rebuilt.state_dict().items()}
    differ = sorted(set(own) ^ set(theirs)) or [key for key in own if own[key] != theirs[key]]
    if differ:
        key = differ[0]
        raise ValueError(f"{spec.name}: {key} is {own.get(key, 'absent')} in this model but "
                         f"{theirs.get(key, 'absent')} in a rebuild from its layer widths; only the sizes of "
                         f"convolutions, Linear and BatchNorm layers can be recorded")  # fmt: skip
