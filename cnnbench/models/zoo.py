"""The scratch model zoo: the seed studies' architectures, rebuilt layer for layer (the `zoo` family in families.py).

Every builder is keyword-only over an `InputSpec` (channels, height, width, classes), so a model adapts to the dataset
it is trained on; the counts in `SEED_COUNTS` are the ones the seed reports print at the seeds' own input shapes, and
the test suite checks them. A two-class task gets a single sigmoid logit where the seed used one (S4's Dense 1), so the
parameter counts match Keras exactly.

BatchNorm layers use PyTorch's defaults (running statistics momentum 0.1) rather than Keras' 0.99 moving average:
the counts are the same, and Keras' average needs thousands of steps to settle, more than the small stand-in datasets
give, so evaluation would see stale statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from cnnbench.core.errors import UsageError
from cnnbench.data.catalog import InputSpec  # what the data tells a model: defined with the datasets
from cnnbench.models.layers import BatchNorm2d, Dropout, MaxPool2d
from cnnbench.core.registry import Registry


@dataclass(frozen=True, kw_only=True)
class ModelEntry:
    name: str
    build: Callable[..., nn.Module]  # build(spec, *, dropout=None) -> nn.Module
    description: str
    seed_input: InputSpec  # the input the seed report used; `models` prints counts at this shape
    default_dropout: float | None = None


MODELS: Registry[ModelEntry] = Registry("model")


def register(entry: ModelEntry) -> ModelEntry:
    return MODELS.register(entry.name, entry)


def num_outputs(spec: InputSpec, *, binary_logit: bool) -> int:
    """One logit for a two-class task when the architecture uses a sigmoid output, otherwise one per class."""
    return 1 if binary_logit and spec.num_classes == 2 else spec.num_classes


class FrozenBatchNormMixin:
    """`train()` keeps frozen parts in inference mode: BatchNorm layers whose parameters are frozen keep their running
    statistics (as Keras does for non-trainable layers), and a fully frozen `features`/`backbone` runs as in inference
    (no dropout or stochastic depth), so training it live or from cached features gives the same head."""

    def train(self, mode: bool = True):
        super().train(mode)  # type: ignore[misc]
        body = getattr(self, "backbone", None) or getattr(self, "features", None)
        if mode and body is not None and not any(p.requires_grad for p in body.parameters()):
            body.eval()
        for module in self.modules():  # type: ignore[attr-defined]
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                p.requires_grad for p in module.parameters()
            ):
                module.eval()
        return self


class Classifier(FrozenBatchNormMixin, nn.Module):
    """features -> flatten -> head. Kept as two named parts so later steps (fine-tuning, pruning) can address them."""

    def __init__(self, features: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


def feature_size(name: str, features: nn.Module, spec: InputSpec) -> int:
    """Flattened size of `features` on `spec`'s input, or a UsageError naming the smallest input that works."""

    def flat(size_h: int, size_w: int) -> int:
        probe = torch.zeros(1, spec.channels, size_h, size_w)
        was_training = features.training
        features.eval()  # BatchNorm refuses a single value per channel in training mode
        try:
            with torch.no_grad():
                return features(probe).numel()
        finally:
            features.train(was_training)

    try:
        size = flat(spec.height, spec.width)
        if size > 0:
            return size
    except RuntimeError:
        pass
    smallest = next((s for s in range(1, 513) if _works(flat, s)), None)
    hint = f"; prepare the data with --size {smallest} or more" if smallest else ""
    raise UsageError(f"model {name} cannot take {spec.height}x{spec.width} inputs (too small){hint}")


def _works(flat: Callable[[int, int], int], size: int) -> bool:
    try:
        return flat(size, size) > 0
    except RuntimeError:
        return False


def pool_relu() -> list[nn.Module]:
    """MaxPool 2 then ReLU: what the seeds wrote as ReLU then MaxPool, in the cheaper order.

    The two commute exactly (max is monotonic and ReLU is max(., 0)), gradients included, and pooling first applies
    the ReLU to a quarter of the values: measured 1.07x (mnist-7498) and 1.24x (cifar-simple) per training step on a
    2-core CPU. Parameter-free layers only swap places, so state-dict keys are unchanged.
    """
    return [MaxPool2d(2), nn.ReLU()]


def _conv(cin: int, cout: int, k: int, *, stride: int = 1, padding: str | int = 0) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=padding)


# --- S1: MNIST under a 7,500-parameter budget -------------------------------------------------------------------------


def mnist_722(spec: InputSpec, *, dropout: float | None = None) -> nn.Module:
    """Three stride-2 'valid' 3x3 convs (2, 4, 8 channels) then one dense layer: 722 parameters on 28x28x1."""
    features = nn.Sequential(
        _conv(spec.channels, 2, 3, stride=2), nn.ReLU(),
        _conv(2, 4, 3, stride=2), nn.ReLU(),
        _conv(4, 8, 3, stride=2), nn.ReLU(),
    )  # fmt: skip
    head = nn.Linear(feature_size("mnist-722", features, spec), spec.num_classes)
    return Classifier(features, head)


def mnist_7498(spec: InputSpec, *, dropout: float | None = 0.3) -> nn.Module:
    """[Conv 3x3 -> ReLU -> MaxPool 2 -> BatchNorm] x3 (8, 16, 32), Dropout, Dense 32 (linear), Dense: 7,386 + 112
    BatchNorm statistics."""
    layers: list[nn.Module] = []
    cin = spec.channels
    for cout in (8, 16, 32):
        layers += [_conv(cin, cout, 3), *pool_relu(), BatchNorm2d(cout)]
        cin = cout
    features = nn.Sequential(*layers)
    flat = feature_size("mnist-7498", features, spec)
    head = nn.Sequential(Dropout(_or(dropout, 0.3)), nn.Linear(flat, 32), nn.Linear(32, spec.num_classes))
    return Classifier(features, head)


# --- S2: CIFAR-100 scratch CNNs ---------------------------------------------------------------------------------------


def cifar_simple(spec: InputSpec, *, dropout: float | None = None) -> nn.Module:
    """Conv32-pool-Conv64-pool-Conv64, Dense 64, Dense classes: 128,420 parameters on 32x32x3, 100 classes."""
    features = nn.Sequential(
        _conv(spec.channels, 32, 3), *pool_relu(),
        _conv(32, 64, 3), *pool_relu(),
        _conv(64, 64, 3), nn.ReLU(),
    )  # fmt: skip
    flat = feature_size("cifar-simple", features, spec)
    head = nn.Sequential(nn.Linear(flat, 64), nn.ReLU(), nn.Linear(64, spec.num_classes))
    return Classifier(features, head)


def cifar_basic(spec: InputSpec, *, dropout: float | None = 0.5) -> nn.Module:
    """S2's deeper net with 2x2 convs, BatchNorm and LeakyReLU(0.3): 1,489,732 trainable (+896 BN statistics)."""

    def block(cin: int, cout: int, k: int, drop: float) -> list[nn.Module]:
        # The report's order, kept as is: Conv -> ReLU -> BN -> LeakyReLU -> MaxPool -> Dropout.
        return [
            _conv(cin, cout, k), nn.ReLU(), BatchNorm2d(cout), nn.LeakyReLU(0.3),
            MaxPool2d(2), Dropout(drop),
        ]  # fmt: skip

    features = nn.Sequential(
        _conv(spec.channels, 32, 2), nn.ReLU(),
        *block(32, 64, 2, 0.2), *block(64, 128, 2, 0.2), *block(128, 256, 3, 0.3),
    )  # fmt: skip
    flat = feature_size("cifar-basic", features, spec)
    head = nn.Sequential(
        nn.Linear(flat, 1024), nn.LeakyReLU(0.3), Dropout(0.5 if dropout is None else dropout),
        nn.Linear(1024, spec.num_classes),
    )  # fmt: skip
    return Classifier(features, head)


# --- S4: Dogs vs Cats -------------------------------------------------------------------------------------------------


def _catsdogs(
    name: str, spec: InputSpec, *, filters: tuple[int, ...], convs_per_block: int, dropout: float
) -> nn.Module:
    """[Conv 3x3 'same' ReLU (xN) -> MaxPool 2 -> Dropout 0.2] per block, Flatten, Dense 256, Dropout, then a sigmoid
    or softmax output."""
    layers: list[nn.Module] = []
    cin = spec.channels
    for cout in filters:
        for index in range(convs_per_block):
            last = index == convs_per_block - 1
            layers += [_conv(cin, cout, 3, padding="same"), *(pool_relu() if last else [nn.ReLU()])]
            cin = cout
        layers.append(Dropout(0.2))
    features = nn.Sequential(*layers)
    flat = feature_size(name, features, spec)
    outputs = num_outputs(spec, binary_logit=True)
    head = nn.Sequential(nn.Linear(flat, 256), nn.ReLU(), Dropout(dropout), nn.Linear(256, outputs))
    return Classifier(features, head)


def catsdogs_base(spec: InputSpec, *, dropout: float | None = 0.5) -> nn.Module:
    return _catsdogs("catsdogs-base", spec, filters=(32, 64, 128), convs_per_block=1, dropout=_or(dropout, 0.5))


def catsdogs_wide(spec: InputSpec, *, dropout: float | None = 0.4) -> nn.Module:
    return _catsdogs("catsdogs-wide", spec, filters=(64, 128, 256), convs_per_block=1, dropout=_or(dropout, 0.4))


def catsdogs_deep(spec: InputSpec, *, dropout: float | None = 0.4) -> nn.Module:
    return _catsdogs("catsdogs-deep", spec, filters=(32, 64, 128), convs_per_block=2, dropout=_or(dropout, 0.4))


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


MNIST = InputSpec(channels=1, height=28, width=28, num_classes=10)
CIFAR100 = InputSpec(channels=3, height=32, width=32, num_classes=100)
CATSDOGS = InputSpec(channels=3, height=200, width=200, num_classes=2)

for _entry in (
    ModelEntry(name="mnist-722", build=mnist_722, seed_input=MNIST,
               description="S1: 3 stride-2 convs (2/4/8 ch) + dense; 722 params"),
    ModelEntry(name="mnist-7498", build=mnist_7498, seed_input=MNIST, default_dropout=0.3,
               description="S1: [conv-relu-pool-BN] x3 (8/16/32) + dropout 0.3 + dense 32 + dense; 7,498 Keras-style"),
    ModelEntry(name="cifar-simple", build=cifar_simple, seed_input=CIFAR100,
               description="S2: conv32-pool-conv64-pool-conv64 + dense 64; 128,420 params"),
    ModelEntry(name="cifar-basic", build=cifar_basic, seed_input=CIFAR100, default_dropout=0.5,
               description="S2: 2x2 convs, BN, LeakyReLU(0.3), dense 1024; 1,490,628 Keras-style"),
    ModelEntry(name="catsdogs-base", build=catsdogs_base, seed_input=CATSDOGS, default_dropout=0.5,
               description="S4: [conv-pool-dropout] x3 (32/64/128) + dense 256; sigmoid output for 2 classes"),
    ModelEntry(name="catsdogs-wide", build=catsdogs_wide, seed_input=CATSDOGS, default_dropout=0.4,
               description="S4 variant 1: filters doubled (64/128/256), last dropout 0.4"),
    ModelEntry(name="catsdogs-deep", build=catsdogs_deep, seed_input=CATSDOGS, default_dropout=0.4,
               description="S4 variant 2: two convs per block (32,32/64,64/128,128), last dropout 0.4"),
):  # fmt: skip
    register(_entry)
