"""Models narrowed after building (structured pruning) rebuild from their spec's JSON and load with load_state_dict."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from cnnbench.models import InputSpec, ModelSpec, build, record_widths, resolve

MNIST = InputSpec(channels=1, height=28, width=28, num_classes=10)
CIFAR10 = InputSpec(channels=3, height=32, width=32, num_classes=10)


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, module)


def narrow(model: nn.Module, producer: str, consumer: str, keep: list[int], *, norm: str | None = None) -> None:
    """Keep only the `keep` outputs of `producer` (a conv or dense layer), of the BatchNorm `norm` after it, and the
    matching inputs of `consumer`: what a structured pruner does to one group of channels."""
    index = torch.tensor(keep)
    with torch.no_grad():
        old = model.get_submodule(producer)
        if isinstance(old, nn.Conv2d):
            new = nn.Conv2d(old.in_channels, len(keep), old.kernel_size, stride=old.stride, padding=old.padding,
                            bias=old.bias is not None)  # fmt: skip
        else:
            new = nn.Linear(old.in_features, len(keep), bias=old.bias is not None)
        new.weight.copy_(old.weight[index])
        if old.bias is not None:
            new.bias.copy_(old.bias[index])
        _set(model, producer, new)
        if norm is not None:
            old_norm = model.get_submodule(norm)
            new_norm = type(old_norm)(len(keep))  # the class kept, as Torch-Pruning narrows a layer in place
            for key, value in old_norm.state_dict().items():
                getattr(new_norm, key).copy_(value if key == "num_batches_tracked" else value[index])
            _set(model, norm, new_norm)
        old = model.get_submodule(consumer)
        if isinstance(old, nn.Conv2d):
            new = nn.Conv2d(len(keep), old.out_channels, old.kernel_size, stride=old.stride, padding=old.padding,
                            bias=old.bias is not None)  # fmt: skip
        else:
            new = nn.Linear(len(keep), old.out_features, bias=old.bias is not None)
        new.weight.copy_(old.weight[:, index])
        if old.bias is not None:
            new.bias.copy_(old.bias)
        _set(model, consumer, new)


def _trained_statistics(model: nn.Module) -> None:
    """BatchNorm statistics as after training, so a rebuild that dropped or mixed them up would show in the outputs."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator))
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)


CASES = {
    # name: (input, [(producer, norm, consumer, channels kept)])
    "mnist-7498": (MNIST, [("features.0", "features.3", "features.4", [0, 2, 3, 5, 7]),
                           ("features.8", "features.11", "head.1", list(range(0, 32, 2))),
                           ("head.1", None, "head.2", list(range(20)))]),
    "fit:7500": (MNIST, [("features.0", "features.1", "features.3", [1, 2, 4]),
                         ("features.10", "features.11", "head.1", [0, 3, 5, 6, 9])]),
    "resnet18": (CIFAR10, [("backbone.layer1.0.conv1", "backbone.layer1.0.bn1", "backbone.layer1.0.conv2",
                            list(range(0, 64, 3))),
                           ("backbone.layer4.1.conv1", "backbone.layer4.1.bn1", "backbone.layer4.1.conv2",
                            list(range(100)))]),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_a_narrowed_model_rebuilds_from_its_json_spec_and_loads_strictly(name):
    spec_in, cuts = CASES[name]
    torch.manual_seed(0)
    spec = resolve(name, spec_in)
    model = build(spec)
    for producer, norm, consumer, keep in cuts:
        narrow(model, producer, consumer, keep, norm=norm)
    _trained_statistics(model)
    widths = record_widths(model, spec)

    saved = json.loads(json.dumps(spec.with_options(widths=widths).to_dict()))  # what config.json holds
    rebuilt = build(ModelSpec.from_dict(saved))
    rebuilt.load_state_dict(model.state_dict())  # strict: every tensor present, every shape equal
    model.eval(), rebuilt.eval()
    batch = torch.randn(4, spec_in.channels, spec_in.height, spec_in.width)
    with torch.no_grad():
        assert torch.equal(rebuilt(batch), model(batch))
    assert saved["family"] == {"mnist-7498": "zoo", "fit:7500": "fit", "resnet18": "torchvision"}[name]
    producer, norm, consumer, keep = cuts[0]
    assert widths[producer] == {"out_channels": len(keep)} and widths[consumer] == {"in_channels": len(keep)}
    assert widths[norm] == {"num_features": len(keep)}


def test_only_changed_sizes_are_recorded_so_the_spec_adapts_to_another_dataset():
    spec = resolve("mnist-7498", MNIST)
    model = build(spec)
    narrow(model, "features.8", "head.1", list(range(12)), norm="features.11")
    widths = record_widths(model, spec)
    assert widths["head.1"] == {"in_features": 12}  # the dense layer after the narrowed features: inputs only
    three_classes = ModelSpec(name=spec.name, family=spec.family, input=InputSpec(channels=3, height=28, width=28,
                              num_classes=3), options={**spec.options, "widths": widths})  # fmt: skip
    rebuilt = build(three_classes)
    assert rebuilt.features[0].in_channels == 3 and rebuilt.head[2].out_features == 3
    assert rebuilt.head[1].in_features == 12
    assert rebuilt(torch.zeros(2, 3, 28, 28)).shape == (2, 3)


def test_an_unchanged_model_records_no_widths():
    spec = resolve("fit:7500", MNIST)
    assert record_widths(build(spec), spec) == {}


def test_a_change_that_widths_cannot_describe_is_refused():
    spec = resolve("mnist-722", MNIST)
    model = build(spec)
    model.features[0] = nn.Conv2d(1, 2, 5, stride=2)  # same channels, another kernel: not a width
    with pytest.raises(ValueError, match=r"features\.0\.weight is \(2, 1, 5, 5\).*\(2, 1, 3, 3\)"):
        record_widths(model, spec)


def test_widths_and_a_freezing_policy_apply_together():
    spec = resolve("resnet18", CIFAR10)
    model = build(spec)
    narrow(model, "backbone.layer2.0.conv1", "backbone.layer2.0.conv2", list(range(64)), norm="backbone.layer2.0.bn1")
    frozen = spec.with_options(widths=record_widths(model, spec), freeze="all")
    rebuilt = build(frozen)
    assert rebuilt.backbone.layer2[0].conv1.out_channels == 64
    assert not any(p.requires_grad for p in rebuilt.backbone.parameters())
    assert all(p.requires_grad for p in rebuilt.head.parameters())
