"""The options of a prepare (`PrepareOptions`, what the CLI and a run spec's data section build), the parsing of
--split, and `validate`, the checks every prepare and cache lookup makes before touching files."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnbench.core.errors import UsageError
from cnnbench.data.catalog import DATASETS, DatasetEntry, get_dataset


@dataclass(frozen=True, kw_only=True)
class PrepareOptions:
    """Every choice that shapes a prepared dataset (`root` and `download` do not change its content)."""

    dataset: str = "digits"
    root: Path = Path("data")
    split: tuple[float, float, float] | None = None  # None: the source's own test (and val) parts, val from train
    val_fraction: float = 0.1
    seed: int = 0
    classes: int | None = None
    grayscale: bool = False
    size: int | None = None
    source: Path | None = None
    download: bool = False
    storage: str = "auto"  # auto | memory | files

    def content_key(self, files: str | None = None) -> dict[str, Any]:
        """What the cache folder's name hashes. `files`: the digest of the files a read found (else they are walked)."""
        key = {k: v for k, v in asdict(self).items() if k not in ("root", "download", "storage")}
        entry = get_dataset(self.dataset)
        if entry.photos:  # a file index and decoded tensors are different caches
            key["storage"] = self.storage
        key["source"] = str(Path(self.source).resolve()) if self.source else None
        key["dataset"] = entry.cache_identity  # folder:PATH by its absolute path, so any working directory finds it
        # Image files read in place (a folder tree) can change between two prepares: their names, sizes and times are
        # part of the key. Datasets without such a digest keep the key (and cache folder name) they always had.
        files = files or entry.content_digest(self)
        if files is not None:
            key["files"] = files
        return key

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["root"] = str(self.root)
        data["source"] = str(self.source) if self.source else None
        data["split"] = list(self.split) if self.split else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrepareOptions:
        data = dict(data)
        data["root"] = Path(data["root"])
        data["source"] = Path(data["source"]) if data.get("source") else None
        data["split"] = tuple(data["split"]) if data.get("split") else None
        return cls(**data)


def parse_split(text: str | None) -> tuple[float, float, float] | None:
    """`0.64,0.16,0.20` -> ratios for train/val/test (normalised if they sum to 100, e.g. `64,16,20`)."""
    if text is None or text.strip() in ("", "official", "default"):
        return None
    parts = text.split(",")
    try:
        ratios = [float(p) for p in parts]
    except ValueError:
        ratios = []
    if len(ratios) != 3 or any(not np.isfinite(r) or r < 0 for r in ratios) or ratios[0] <= 0:
        raise UsageError(
            f"bad --split {text!r}: expected three non-negative train,val,test ratios, e.g. 0.64,0.16,0.20 (or 64,16,20)"
        )
    total = sum(ratios)
    if abs(total - 1.0) > 1e-6 and abs(total - 100.0) > 1e-6:
        raise UsageError(f"bad --split {text!r}: the ratios sum to {total:g}; they must sum to 1 (or 100)")
    return tuple(r / total for r in ratios)  # type: ignore[return-value]


def validate(options: PrepareOptions) -> DatasetEntry:
    entry = get_dataset(options.dataset)
    if options.size is not None and not 4 <= options.size <= 1024:
        raise UsageError(f"bad --size {options.size}: expected an image side between 4 and 1024 pixels")
    if options.classes is not None and not 2 <= options.classes <= entry.num_classes:
        raise UsageError(f"bad --classes {options.classes}: {entry.name} has {entry.num_classes} classes; "
                         f"choose 2 to {entry.num_classes}")  # fmt: skip
    if not 0.0 < options.val_fraction < 1.0:
        raise UsageError(f"bad --val-fraction {options.val_fraction}: expected a fraction between 0 and 1")
    if options.storage not in ("auto", "memory", "files"):
        raise UsageError(f"bad --storage {options.storage!r}: choose auto, memory or files")
    if options.storage == "files" and not entry.photos:
        photos = ", ".join(DATASETS.get(name).usage for name in DATASETS if DATASETS.get(name).photos)
        raise UsageError(f"--storage files is for image-file datasets ({photos}); {entry.name} is stored as "
                         f"arrays")  # fmt: skip
    if options.source is not None and not Path(options.source).exists():
        raise UsageError(f"--source {str(options.source)!r} does not exist")
    if options.source is not None and not entry.takes_source:
        takers = ", ".join(name for name in DATASETS if DATASETS.get(name).takes_source)
        raise UsageError(f"--source is only for {takers}; {entry.name} is read from --root {options.root}")
    return entry
