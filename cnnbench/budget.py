"""Parameter budgets without data: a dataset's input shape comes from the catalog, so `budget` runs in CI."""

from __future__ import annotations

from typing import Any

from cnnbench.data.catalog import get_dataset
from cnnbench.errors import UsageError
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


def describe_model(name: str, spec: InputSpec, *, dropout: float | None = None) -> dict[str, Any]:
    from cnnbench.models import MODELS, build_model
    from cnnbench.models.accounting import budget

    model, model_spec = build_model(name, spec, dropout=dropout)
    description = MODELS.get(name).description if name in MODELS else "budget-fitted family, width " \
        f"{model_spec.options['width']}"  # fmt: skip
    return {"name": name, "input": spec.describe(), **budget(model, spec), "options": model_spec.options,
            "description": description}  # fmt: skip


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
