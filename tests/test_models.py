"""The zoo's exact parameter accounting, against the figures the seed reports print."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from cnnbench.core.errors import UsageError
from cnnbench.models import MODELS, build, build_model, resolve
from cnnbench.models.accounting import budget, count_macs, count_parameters
from cnnbench.models.fit import count_fit_params, fit_width
from cnnbench.models.zoo import CATSDOGS, InputSpec

# (model, input, trainable, keras-style total) as printed by the seeds' Keras summaries (STUDIES.md).
SEED_COUNTS = [
    ("mnist-722", None, 722, 722),
    ("mnist-7498", None, 7_386, 7_498),
    ("cifar-simple", None, 128_420, 128_420),
    ("cifar-basic", None, 1_489_732, 1_490_628),
    ("catsdogs-base", None, 20_573_761, 20_573_761),
    ("catsdogs-base", InputSpec(channels=1, height=200, width=200, num_classes=2), 20_573_185, 20_573_185),
    ("catsdogs-wide", None, 41_331_329, 41_331_329),
    ("catsdogs-deep", None, 20_767_521, 20_767_521),
]


@pytest.mark.parametrize(("name", "spec", "trainable", "keras_total"), SEED_COUNTS)
def test_seed_models_have_the_seed_reports_parameter_counts(name, spec, trainable, keras_total):
    spec = spec or MODELS.get(name).seed_input
    model, _ = build_model(name, spec)
    counts = count_parameters(model)
    assert counts["trainable"] == trainable
    assert counts["keras_total"] == keras_total
    assert counts["keras_total"] - counts["trainable"] == counts["bn_statistics"]


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_adapts_to_channels_and_an_odd_number_of_classes(name):
    seed = MODELS.get(name).seed_input
    side = 64 if seed.height > 64 else seed.height
    spec = InputSpec(channels=3 if seed.channels == 1 else 1, height=side, width=side, num_classes=7)
    model, _ = build_model(name, spec)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, spec.channels, side, side))
    assert out.shape == (2, 7)


def test_two_class_catsdogs_models_use_one_sigmoid_logit():
    model, _ = build_model("catsdogs-base", InputSpec(channels=3, height=32, width=32, num_classes=2))
    model.eval()
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 1)


def test_macs_of_mnist_722_by_hand():
    model, _ = build_model("mnist-722", MODELS.get("mnist-722").seed_input)
    # conv1 13*13*2*9 + conv2 6*6*4*18 + conv3 2*2*8*36 + dense 32*10 multiply-accumulates
    assert budget(model, MODELS.get("mnist-722").seed_input)["macs"] == 3042 + 2592 + 1152 + 320


def _flop_counter_macs(model: torch.nn.Module, spec: InputSpec) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(torch.zeros(1, spec.channels, spec.height, spec.width, device=device))
    return counter.get_total_flops() // 2  # two flops per multiply-accumulate


SMALL_RGB = InputSpec(channels=3, height=64, width=64, num_classes=7)
MAC_CASES = [(name, MODELS.get(name).seed_input) for name in MODELS] + [
    ("fit:7500", MODELS.get("mnist-7498").seed_input), ("fit:100000", SMALL_RGB),
    ("resnet18", SMALL_RGB), ("mobilenet_v2", SMALL_RGB), ("squeezenet1_1", SMALL_RGB),
]  # fmt: skip


@pytest.mark.parametrize(("name", "spec"), MAC_CASES, ids=[name for name, _ in MAC_CASES])
def test_hook_counted_macs_equal_torchs_flop_counter(name, spec):
    model = build(resolve(name, spec))  # backbones are built as with --weights none
    assert count_macs(model, spec) == _flop_counter_macs(model, spec)


def test_hook_counted_macs_equal_the_flop_counter_for_every_backbone():
    from cnnbench.models.transfer import BACKBONES

    for name in BACKBONES:
        with torch.device("meta"):  # shapes only: every backbone in well under a second
            model = build(resolve(name, SMALL_RGB))
        assert count_macs(model, SMALL_RGB) == _flop_counter_macs(model, SMALL_RGB), name


def test_nonzero_parameters_and_sparsity_count_the_zeros_pruning_leaves():
    model, _ = build_model("mnist-7498", MODELS.get("mnist-7498").seed_input)
    dense = count_parameters(model)
    assert dense["sparsity"] == 0.0
    zero_shifts = sum(int((m.bias == 0).sum()) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert zero_shifts == 8 + 16 + 32 and dense["nonzero"] == 7_386 - zero_shifts  # BatchNorm shifts start at zero
    with torch.no_grad():
        model.features[4].weight[:8] = 0  # half the second convolution's filters: 8 x 8 x 3 x 3
        model.head[1].weight[:, :16] = 0  # half the first dense layer's inputs: 32 x 16
    model.head[2].requires_grad_(False)  # frozen parameters count too
    counts = count_parameters(model)
    zeroed = 8 * 8 * 9 + 32 * 16
    assert counts["nonzero"] == dense["nonzero"] - zeroed
    assert counts["sparsity"] == pytest.approx(zeroed / 7_386)
    assert counts["trainable"] + counts["frozen"] == 7_386


def test_budget_of_zoo_and_fit_models_imports_neither_torchvision_nor_dynamo():
    code = (
        "import sys\n"
        "from cnnbench.cli import main\n"
        "assert main(['budget', 'mnist-7498', '--dataset', 'mnist', '--max-params', '7500', '--json']) == 0\n"
        "assert main(['budget', 'fit:7500', '--dataset', 'cifar10']) == 0\n"
        "loaded = [name for name in ('torchvision', 'torch._dynamo') if name in sys.modules]\n"
        "assert not loaded, f'budget imported {loaded}'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_an_input_too_small_for_the_architecture_names_the_size_to_use():
    with pytest.raises(UsageError, match=r"mnist-722 cannot take 8x8 inputs.*--size 15"):
        build_model("mnist-722", InputSpec(channels=1, height=8, width=8, num_classes=10))


MNIST = MODELS.get("mnist-7498").seed_input
CIFAR100 = MODELS.get("cifar-basic").seed_input


@pytest.mark.parametrize("spec", [MNIST, CIFAR100, CATSDOGS], ids=["mnist", "cifar100", "catsdogs"])
@pytest.mark.parametrize("max_params", [2_000, 7_500, 100_000, 1_000_000, 10_000_000])
def test_fit_family_is_the_widest_model_within_the_budget(spec, max_params):
    if max_params < count_fit_params(spec, 1):
        pytest.skip("budget below the family's smallest member for this shape")
    model, model_spec = build_model(f"fit:{max_params}", spec)
    width = model_spec.options["width"]
    trainable = count_parameters(model)["trainable"]
    assert trainable == count_fit_params(spec, width)  # the closed form used by the search is exact
    assert trainable <= max_params < count_fit_params(spec, width + 1)


def test_fit_budget_below_the_smallest_member_is_a_usage_error():
    with pytest.raises(UsageError, match=r"fit:100 is below the smallest model.*N >= "):
        fit_width(CIFAR100, 100)


@pytest.mark.parametrize("bad", ["fit:abc", "fit:-5", "fit:1.5"])
def test_malformed_fit_names_are_usage_errors(bad):
    with pytest.raises(UsageError, match="fit:N"):
        build_model(bad, MNIST)


def test_unknown_model_suggests_close_names():
    with pytest.raises(UsageError, match=r"unknown model 'mnist-7499' \(did you mean mnist-7498"):
        build_model("mnist-7499", MNIST)


def test_pooling_before_relu_gives_the_seed_order_results_and_gradients():
    from torch import nn

    model, _ = build_model("cifar-simple", MODELS.get("cifar-simple").seed_input)
    layers = list(model.features)
    seed_order = list(layers)
    for i in range(len(seed_order) - 1):  # back to the report's Conv -> ReLU -> MaxPool
        if isinstance(seed_order[i], nn.MaxPool2d) and isinstance(seed_order[i + 1], nn.ReLU):
            seed_order[i], seed_order[i + 1] = seed_order[i + 1], seed_order[i]
    x = torch.randn(4, 3, 32, 32)
    outputs, grads = [], []
    for features in (nn.Sequential(*layers), nn.Sequential(*seed_order)):
        model.zero_grad()
        out = model.head(torch.flatten(features(x), 1))
        out.square().sum().backward()
        outputs.append(out.detach())
        grads.append([p.grad.clone() for p in model.parameters()])
    assert torch.equal(outputs[0], outputs[1])
    assert all(torch.equal(a, b) for a, b in zip(*grads))
