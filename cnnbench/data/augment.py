"""Batched augmentation on the device: one random affine warp per image, applied to the whole batch at once.

Keras' ImageDataGenerator, which the seeds used, transforms one PIL/NumPy image at a time on the CPU. Here every
geometric augmentation (flip, translation, rotation, zoom, shear) is folded into one 2x3 matrix per image and applied
with a single `grid_sample` call, so the cost is one kernel per batch on whatever device holds the data. Out-of-image
pixels repeat the border, like Keras' fill_mode="nearest" (S4). Brightness scales each image by a random factor.

Spec strings: comma-separated `name[=value]`, e.g. `flip,translate=0.1,rotate=20,zoom=0.2,shear=0.2,brightness=0.8-1.2`,
or a preset name (see PRESETS). Translation and zoom are fractions of the image size, rotation and shear are degrees
(Keras' units).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from cnnbench.core.errors import UsageError


@dataclass(frozen=True, kw_only=True)
class AugmentSpec:
    flip: bool = False  # random horizontal flip (never vertical: S4)
    translate: float = 0.0  # max shift, fraction of width/height
    rotate: float = 0.0  # max rotation, degrees
    zoom: float = 0.0  # scale drawn from [1 - zoom, 1 + zoom]
    shear: float = 0.0  # max shear angle, degrees
    brightness: tuple[float, float] | None = None  # multiply by a factor drawn from [low, high]

    @property
    def enabled(self) -> bool:
        return self != AugmentSpec()

    @property
    def geometric(self) -> bool:
        return bool(self.flip or self.translate or self.rotate or self.zoom or self.shear)


PRESETS = {
    "none": "",
    "flip": "flip",
    "light": "flip,translate=0.1",
    "s2": "flip,zoom=0.1,rotate=10,translate=0.1",  # S2's CIFAR-100 augmentation
    "s4": "flip,translate=0.15,rotate=20,zoom=0.3,shear=0.2,brightness=0.8-1.2",  # S4's Dogs vs Cats augmentation
}

_FLOAT_FIELDS = ("translate", "rotate", "zoom", "shear")


def parse_augment(text: str) -> AugmentSpec:
    text = PRESETS.get(text.strip(), text)
    values: dict[str, object] = {}
    accepted = ", ".join(f.name for f in fields(AugmentSpec))
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        if name == "flip" and not value:
            values["flip"] = True
        elif name in _FLOAT_FIELDS and value:
            values[name] = _number(item, value)
        elif name == "brightness" and value:
            low, sep, high = value.partition("-")
            bounds = (_number(item, low), _number(item, high)) if sep and low and high else None
            if bounds is None or bounds[0] > bounds[1]:
                raise UsageError(f"bad augmentation {item!r}: brightness takes a range low-high, e.g. brightness=0.8-1.2")
            values["brightness"] = bounds
        else:
            raise UsageError(
                f"bad augmentation {item!r}: expected a preset ({', '.join(PRESETS)}) or comma-separated "
                f"items of {accepted}, e.g. flip,rotate=20,zoom=0.2"
            )
    return AugmentSpec(**values)


def _number(item: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"bad augmentation {item!r}: {value!r} is not a number") from None
    if number < 0 or not math.isfinite(number):
        raise UsageError(f"bad augmentation {item!r}: values must be non-negative")
    return number


def augment_batch(x: torch.Tensor, spec: AugmentSpec, generator: torch.Generator) -> torch.Tensor:
    """Augment a float batch (N, C, H, W) in [0, 1]; randomness comes from `generator` (on x's device)."""
    n = x.shape[0]
    if spec.geometric:
        x = F.grid_sample(x, _affine_grid(x, spec, generator), mode="bilinear", padding_mode="border",
                          align_corners=False)  # fmt: skip
    if spec.brightness is not None:
        low, high = spec.brightness
        factor = torch.empty(n, 1, 1, 1, device=x.device, dtype=x.dtype).uniform_(low, high, generator=generator)
        x = (x * factor).clamp_(0.0, 1.0)
    return x


def _uniform(n: int, bound: float, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.empty(n, device=like.device, dtype=torch.float32).uniform_(-bound, bound, generator=generator)


def _affine_grid(x: torch.Tensor, spec: AugmentSpec, generator: torch.Generator) -> torch.Tensor:
    # Each matrix maps output coordinates to input coordinates in [-1, 1] space: theta = T @ R @ Sh @ Z @ Flip.
    n = x.shape[0]
    angle = torch.deg2rad(_uniform(n, spec.rotate, x, generator))
    shear = torch.deg2rad(_uniform(n, spec.shear, x, generator))
    scale = 1.0 + _uniform(n, spec.zoom, x, generator)
    shift_x = 2.0 * _uniform(n, spec.translate, x, generator)
    shift_y = 2.0 * _uniform(n, spec.translate, x, generator)
    flip = torch.ones(n, device=x.device)
    if spec.flip:
        flip = torch.where(torch.rand(n, device=x.device, generator=generator) < 0.5, -flip, flip)
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    # R @ Sh, with Sh = [[1, -tan], [0, 1]] (Keras shears along x), then zoom and flip scale the columns.
    a11, a12 = cos, -cos * tan - sin
    a21, a22 = sin, -sin * tan + cos
    theta = torch.stack(
        [
            torch.stack([a11 * scale * flip, a12 * scale, shift_x], dim=1),
            torch.stack([a21 * scale * flip, a22 * scale, shift_y], dim=1),
        ],
        dim=1,
    ).to(x.dtype)
    return F.affine_grid(theta, list(x.shape), align_corners=False)
