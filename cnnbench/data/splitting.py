"""Which split (train, val or test) each labelled image of a dataset goes to: the source's own parts where it has them,
else a stratified cut at the --split ratios, deterministic in the seed."""

from __future__ import annotations

import numpy as np

from cnnbench.data.catalog import DatasetEntry
from cnnbench.data.options import PrepareOptions


def list_members(raw) -> list[tuple[str, int, int]]:
    """(part, index in part, label) for every labelled image, grouped by part and in order within it."""
    return [(part_name, i, int(label)) for part_name, part in raw.parts.items() for i, label in enumerate(part.labels)]


def assign_splits(members, labels, entry: DatasetEntry, options: PrepareOptions, rng) -> np.ndarray:
    """For each member, its split: 0 train, 1 val, 2 test. Stratified and deterministic in the seed."""
    parts = np.array([p for p, _, _ in members])
    if options.split is None and "test" in entry.official_parts:
        assignment = np.where(parts == "test", 2, np.where(parts == "val", 1, 0))
        if "val" not in entry.official_parts:
            train = np.flatnonzero(parts == "train")
            frac = options.val_fraction
            sub = _stratified(labels[train], (1 - frac, frac, 0.0), rng)
            assignment[train] = sub
        return assignment
    ratios = options.split or entry.default_split
    return _stratified(labels, ratios, rng)


def _stratified(labels: np.ndarray, ratios, rng) -> np.ndarray:
    """Per class: shuffle, then cut at the cumulative ratios (largest-remainder rounding keeps totals exact)."""
    assignment = np.zeros(len(labels), dtype=np.int64)
    cuts = np.cumsum(ratios)[:-1]
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        idx = idx[rng.permutation(len(idx))]
        bounds = np.round(cuts * len(idx)).astype(int)
        assignment[idx[bounds[0] : bounds[1]]] = 1
        assignment[idx[bounds[1] :]] = 2
    return assignment
