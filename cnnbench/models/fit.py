"""The budget-fitted family: `fit:N` is the widest member whose parameter count is at most N for the data's shape.

The family is a plain VGG-style CNN, chosen because its size grows smoothly and monotonically with one knob:
  stages of [Conv 3x3 'same' -> BN -> ReLU] x 2 -> MaxPool 2 (pooled before the last ReLU, which is equivalent),
  widths w, 2w, 4w, ... (one stage per halving while the feature map stays at least 4 pixels, at most 5 stages), then
  global average pooling, dropout and one linear layer.
Convolutions carry no bias because the BatchNorm shift that follows does that job. The width w is found by bisection
(the count is monotonic in w), so `fit:7500` on MNIST and `fit:2000000` on CIFAR-100 are both one exact search.
"""

from __future__ import annotations

import math

from torch import nn

from cnnbench.core.errors import UsageError
from cnnbench.models.layers import BatchNorm2d, Dropout
from cnnbench.models.zoo import Classifier, InputSpec, pool_relu

MAX_WIDTH = 4096
FIT_DROPOUT = 0.1


def stages_for(spec: InputSpec) -> int:
    return max(1, min(5, int(math.log2(min(spec.height, spec.width) / 4))))


def fit_net(spec: InputSpec, *, width: int, dropout: float = FIT_DROPOUT) -> nn.Module:
    layers: list[nn.Module] = []
    cin = spec.channels
    for stage in range(stages_for(spec)):
        cout = width * 2**stage
        for index in range(2):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), BatchNorm2d(cout)]
            layers += pool_relu() if index == 1 else [nn.ReLU(inplace=True)]  # pool before ReLU: see pool_relu
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1)]
    head = nn.Sequential(Dropout(dropout), nn.Linear(cin, spec.num_classes))
    return Classifier(nn.Sequential(*layers), head)


def count_fit_params(spec: InputSpec, width: int) -> int:
    """Closed form of fit_net's trainable count (building a 4096-wide net just to count it would take seconds)."""
    total, cin = 0, spec.channels
    for stage in range(stages_for(spec)):
        cout = width * 2**stage
        total += 9 * cin * cout + 2 * cout + 9 * cout * cout + 2 * cout  # two convs, each followed by BN (gamma, beta)
        cin = cout
    return total + cin * spec.num_classes + spec.num_classes


def fit_width(spec: InputSpec, max_params: int) -> int:
    """The largest width whose model has at most `max_params` trainable parameters."""
    smallest = count_fit_params(spec, 1)
    if max_params < smallest:
        raise UsageError(
            f"fit:{max_params} is below the smallest model of the fitted family for {spec.describe()} "
            f"({smallest:,} parameters); use fit:N with N >= {smallest}"
        )
    low, high = 1, MAX_WIDTH
    while low < high:
        mid = (low + high + 1) // 2
        if count_fit_params(spec, mid) <= max_params:
            low = mid
        else:
            high = mid - 1
    return low


def parse_fit(name: str) -> int | None:
    """`fit:7500` -> 7500, `fit:2e6` -> 2000000; None when `name` is not a fit spec; UsageError when malformed."""
    if not name.startswith("fit:"):
        return None
    text = name[4:].replace(",", "").replace("_", "")
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value.is_integer() or value <= 0:
        raise UsageError(f"bad model {name!r}: expected fit:N with N a positive whole number of parameters, "
                         f"e.g. fit:7500")  # fmt: skip
    return int(value)
