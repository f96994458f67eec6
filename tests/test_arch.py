"""The `arch` family: both S1 seed models are members, and its closed-form counts are the built model's."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from cnnbench.models import build, resolve
from cnnbench.models.accounting import count_macs, count_parameters
from cnnbench.models.arch import plan
from cnnbench.models.zoo import MNIST, InputSpec
from cnnbench.spec.run import ArchChoice

MNIST_722 = asdict(ArchChoice(stages=3, width=2, downsample="stride", batchnorm=False, dense=0))
MNIST_7498 = asdict(ArchChoice(stages=3, width=8, downsample="pool", batchnorm=True, dense=32))


@pytest.mark.parametrize("arch, dropout, zoo", [(MNIST_722, 0.0, "mnist-722"), (MNIST_7498, 0.3, "mnist-7498")])
def test_both_s1_models_are_members_of_the_family(arch, dropout, zoo):
    ours = build(resolve("arch", MNIST, arch=arch, dropout=dropout))
    seed = build(resolve(zoo, MNIST))
    assert count_parameters(ours) == count_parameters(seed)
    assert count_macs(ours, MNIST) == count_macs(seed, MNIST)
    assert [tuple(p.shape) for p in ours.parameters()] == [tuple(p.shape) for p in seed.parameters()]


@pytest.mark.parametrize("arch", [
    MNIST_722, MNIST_7498,
    asdict(ArchChoice(stages=4, width=6, growth=1.5, kernel=5, padding="same", downsample="stride", dense=64,
                      dense_activation="relu", features="avg")),
    asdict(ArchChoice(stages=2, width=3, growth=1.0, kernel=3, padding="same", batchnorm=False, features="flatten")),
    asdict(ArchChoice(stages=3, width=8, kernel=3, conv="separable", dense=0, features="avg")),
    asdict(ArchChoice(stages=2, width=4, kernel=5, padding="same", downsample="stride", conv="separable")),
])  # fmt: skip
@pytest.mark.parametrize("shape", [MNIST, InputSpec(channels=3, height=32, width=32, num_classes=100)])
def test_the_closed_form_counts_equal_the_built_model(arch, shape):
    model = build(resolve("arch", shape, arch=arch))
    closed = plan(shape, arch)
    assert closed.params == count_parameters(model)["trainable"]
    assert closed.macs == count_macs(model, shape)
    assert model(torch.zeros(2, shape.channels, shape.height, shape.width)).shape == (2, shape.num_classes)


def test_an_input_too_small_for_the_stages_is_refused_with_what_to_change():
    from cnnbench.core.errors import UsageError

    with pytest.raises(UsageError, match="fewer stages"):
        plan(InputSpec(channels=1, height=8, width=8, num_classes=10), asdict(ArchChoice(stages=4)))
