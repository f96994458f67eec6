"""Model families: one registry and one interface behind every model name, and specs that say their family."""

from __future__ import annotations

import json

import pytest
import torch

from cnnbench.core.errors import UsageError
from cnnbench.models import FAMILIES, MODELS, InputSpec, ModelSpec, build, build_model, resolve
from cnnbench.models.families import family_of
from cnnbench.models.transfer import TransferNet, parse_head

MNIST = InputSpec(channels=1, height=28, width=28, num_classes=10)
CIFAR10 = InputSpec(channels=3, height=32, width=32, num_classes=10)


def test_each_name_belongs_to_exactly_one_family():
    examples = {"zoo": MODELS.names(), "fit": ["fit:7500", "fit:2e6"], "torchvision": ["resnet18", "resnet50v2"],
                "arch": ["arch"]}
    assert set(examples) == set(FAMILIES)
    for family, names in examples.items():
        for name in names:
            assert [f for f in FAMILIES if FAMILIES.get(f).owns(name)] == [family], name


def test_every_family_answers_the_same_interface():
    for name, input_spec in (("mnist-722", MNIST), ("fit:3000", MNIST), ("squeezenet1_1", CIFAR10), ("arch", MNIST)):
        family = family_of(name)
        spec = family.resolve(name, input_spec, dropout=None, head=None)
        assert spec.family == family.name
        model = family.build(spec)
        assert model(torch.zeros(2, input_spec.channels, input_spec.height, input_spec.width)).shape == (2, 10)
        assert family.describe(spec)
        assert family.listing()


def test_a_backbone_resolves_with_its_head_and_builds_like_finetune_does():
    head = parse_head("mlp:16,8", dropout=0.2).to_dict()
    spec = resolve("resnet18", CIFAR10, head=head)
    assert spec.family == "torchvision" and spec.options == {"head": head}
    assert isinstance(build(spec), TransferNet)
    assert resolve("resnet50v2", CIFAR10).name == "resnet50"  # a seed alias names the backbone it stands for
    assert resolve("resnet18", CIFAR10).options["head"]["kind"] == "linear"


def test_a_head_for_a_model_with_its_own_is_a_usage_error():
    with pytest.raises(UsageError, match="--head applies to torchvision backbones; mnist-722 is a zoo model"):
        resolve("mnist-722", MNIST, head=parse_head("linear").to_dict())


def test_specs_save_their_family_and_read_back():
    _, spec = build_model("fit:7500", MNIST)
    saved = json.loads(json.dumps(spec.to_dict()))
    assert saved["family"] == "fit"
    assert ModelSpec.from_dict(saved) == spec


@pytest.mark.parametrize(
    ("saved", "family"),
    [
        ({"name": "mnist-7498", "options": {"dropout": 0.3}}, "zoo"),
        ({"name": "fit:7500", "options": {"width": 8, "dropout": 0.1}}, "fit"),
        ({"name": "squeezenet1_1", "options": {"head": parse_head("linear").to_dict(), "freeze": "last:2",
                                               "freeze_bn": False}}, "torchvision"),
        ({"name": "mnist-722", "options": {"freeze": "all", "unfreeze": ["head.weight", "head.bias"]}}, "zoo"),
    ],
)  # fmt: skip
def test_run_directories_written_before_families_still_rebuild(saved, family):
    spec_in = CIFAR10 if family == "torchvision" else MNIST
    spec = ModelSpec.from_dict({**saved, "input": vars(spec_in)})
    assert spec.family == family
    model = build(spec)
    assert model.eval()(torch.zeros(1, spec_in.channels, spec_in.height, spec_in.width)).shape == (1, 10)
    if "unfreeze" in saved["options"]:
        assert [n for n, p in model.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]


def test_an_unknown_model_suggests_names_from_every_family():
    with pytest.raises(UsageError) as info:
        resolve("resnet9", CIFAR10)
    message = str(info.value)
    assert message.startswith("unknown model 'resnet9' (did you mean resnet")
    assert "mnist-722" in message and "fit:N" in message and "convnext_tiny" in message


def test_budget_counts_a_backbone_and_asks_a_sized_family_for_a_dataset(cli):
    result = cli("budget", "squeezenet1_1", "--dataset", "cifar10", "--json")
    assert result.code == 0, result.err
    data = result.json()
    assert data["family"] == "torchvision" and data["description"] == "torchvision squeezenet1_1 with a linear head"
    assert data["trainable"] == 722_496 + 512 * 10 + 10  # the backbone's features and a dense layer to 10 classes
    for sized in ("fit:7500", "squeezenet1_1"):
        refused = cli("budget", sized)
        assert refused.code == 2 and f"{sized} is sized for a dataset; pass --dataset" in refused.err
