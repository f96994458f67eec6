"""Parameter budgets without data: a dataset's input shape comes from the catalog, so `budget` runs in CI."""

from __future__ import annotations

from typing import Any

from cnnbench.data.catalog import get_dataset
from cnnbench.core.errors import UsageError
from cnnbench.models.zoo import InputSpec

COUNTS = ("trainable", "keras_total")


def dataset_input(dataset: str, *, size: int | None = None, grayscale: bool = False,
                  classes: int | None = None) -> InputSpec:  # fmt: skip
    entry = get_dataset(dataset)
    if classes is not None and not 2 <= classes <= entry.num_classes:
        raise UsageError(f"bad --classes {classes}: {entry.name} has {entry.num_classes} classes")
    side = size or entry.size
    return InputSpec(channels=1 if grayscale else entry.channels, height=side, width=side,
                     num_classes=classes or entry.num_classes)  # fmt: skip


def seed_input(name: str) -> InputSpec | None:
    """The input a model is counted at without --dataset (a zoo model's seed input), or None when it needs one."""
    from cnnbench.models.families import family_of

    return family_of(name).seed_input(name)


def describe_model(name: str, spec: InputSpec, *, dropout: float | None = None) -> dict[str, Any]:
    from cnnbench.models import FAMILIES, build, resolve
    from cnnbench.models.accounting import budget

    model_spec = resolve(name, spec, dropout=dropout)
    model = build(model_spec)
    return {"name": name, "family": model_spec.family, "input": spec.describe(), **budget(model, spec),
            "options": model_spec.options, "description": FAMILIES.get(model_spec.family).describe(model_spec)}


def check(name: str, spec: InputSpec, *, max_params: int | None, count: str = "trainable") -> dict[str, Any]:
    if count not in COUNTS:
        raise UsageError(f"bad --count {count!r}: choose from {', '.join(COUNTS)}")
    if max_params is not None and max_params <= 0:
        raise UsageError(f"bad --max-params {max_params}: expected a positive number of parameters")
    result = describe_model(name, spec)
    result["budget"] = None
    if max_params is not None:
        result["budget"] = {"max_params": max_params, "count": count, "value": result[count],
                            "within": result[count] <= max_params}  # fmt: skip
    return result
