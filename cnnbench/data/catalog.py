"""Looking a dataset up by name: `get_dataset("mnist")`, or `get_dataset("folder:PATH")` for a parametrised entry.

Each dataset is one `DatasetEntry` in the `DATASETS` registry, registered in sources.py beside its reader, so adding a
dataset touches that one file; everything else (prepare, budget, `cnnbench datasets`) asks the entry.
"""

from __future__ import annotations

import difflib

from cnnbench.data.sources import DATASETS, DatasetEntry, RawDataset, ReadOptions
from cnnbench.errors import UsageError


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
    close = difflib.get_close_matches(name, usages, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UsageError(f"unknown dataset {name!r}{hint}; choose from: {', '.join(usages)}")


__all__ = ["DATASETS", "DatasetEntry", "RawDataset", "ReadOptions", "get_dataset"]
