"""Looking a dataset up by name: `get_dataset("mnist")`, or `get_dataset("folder:PATH")` for a parametrised entry.

Each dataset is one `DatasetEntry` in the `DATASETS` registry, registered beside its reader in its module of
cnnbench.data.datasets, so adding a dataset is one new module there (and its import in the package's __init__);
everything else (prepare, budget, `cnnbench datasets`) asks the entry.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnnbench.core.errors import UsageError
from cnnbench.core.registry import did_you_mean
from cnnbench.data.datasets import DATASETS, DatasetEntry, RawDataset, ReadOptions


@dataclass(frozen=True, kw_only=True)
class InputSpec:
    """What a model needs to know about its data: image shape and number of classes (a prepared
    dataset's `input_spec`)."""

    channels: int
    height: int
    width: int
    num_classes: int

    def describe(self) -> str:
        return f"{self.channels}x{self.height}x{self.width}, {self.num_classes} classes"


def get_dataset(name: str) -> DatasetEntry:
    """A named dataset, or the concrete entry a parametrised one (`folder:PATH`) makes for its argument."""
    if name in DATASETS:
        entry = DATASETS.get(name)
        if entry.parameter is not None:
            raise UsageError(f"dataset {name!r} needs its {entry.parameter}: {entry.usage}")
        return entry
    family, colon, argument = name.partition(":")
    if colon and family in DATASETS and DATASETS.get(family).parameter is not None:
        return DATASETS.get(family).bind(argument)
    usages = [DATASETS.get(known).usage for known in DATASETS]
    raise UsageError(f"unknown dataset {name!r}{did_you_mean(name, usages)}; choose from: {', '.join(usages)}")


__all__ = ["DATASETS", "DatasetEntry", "InputSpec", "RawDataset", "ReadOptions", "get_dataset"]
