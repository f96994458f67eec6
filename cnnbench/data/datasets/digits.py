"""`digits`: scikit-learn's bundled 8x8 handwritten digits, read with no files or network."""

from __future__ import annotations

import numpy as np

from cnnbench.data.datasets.base import DatasetEntry, RawDataset, RawPart, register


def read_digits() -> RawDataset:
    """scikit-learn's bundled 8x8 digits (no network), values 0..16 scaled to 0..255."""
    import torch  # here, not at the top: listing datasets (--help, budget) must not load torch
    from sklearn.datasets import load_digits  # only to read: scikit-learn takes seconds to import

    bunch = load_digits()
    pixels = np.rint(bunch.images * 255.0 / 16.0).astype(np.uint8)
    images = torch.from_numpy(pixels).unsqueeze(1)
    labels = bunch.target.astype(np.int64)
    return RawDataset(
        classes=[str(d) for d in range(10)],
        parts={"train": RawPart(labels=labels, images=images)},
        skipped=[],
        location="sklearn.datasets.load_digits (bundled)",
    )


register(DatasetEntry(name="digits", description="scikit-learn's bundled 8x8 handwritten digits (no network needed)",
                      channels=1, size=8, num_classes=10, images=1797, files="(bundled with scikit-learn)",
                      official_parts=("train",), default_split=(0.6, 0.2, 0.2), download=False, photos=False,
                      bundled=True, reader=lambda entry, options: read_digits()))  # fmt: skip

