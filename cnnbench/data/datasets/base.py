"""What every dataset reader shares: `DatasetEntry`, the one reader interface, the `RawDataset` a reader returns,
the kinds of files a reader leaves out, and the `DATASETS` registry the reader modules add their entries to.

A `DatasetEntry` knows the dataset's shape and class count without its files (so `budget` runs with no data present),
where its files go under --root, and `read(options)`. A `RawDataset` holds labels plus either decoded arrays (digits,
MNIST, CIFAR, shapes) or image paths (flowers, pets, cats vs dogs, folder); every file left out is listed with its
reason and a kind (`skip`). This module imports no reader: the readers import it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from cnnbench.core.registry import Registry

if TYPE_CHECKING:
    import torch

# Why a file was left out: the "kind" of a skipped entry, counted by kind in a prepared cache's manifest.
NOT_AN_IMAGE = "not an image"  # no image extension, not a regular file, or bytes Pillow does not recognise
TRUNCATED = "truncated"  # an image cut short
UNREADABLE = "unreadable"  # the OS would not read it (permissions, a broken link), or its data does not decode
DUPLICATE_LINK = "duplicate link"  # a link (symbolic or hard) to a file or folder that is read under another name
UNLABELLED = "unlabelled"  # an image the dataset's labels do not name
MISSING = "missing"  # named by the dataset's lists but not on disk
BAD_ANNOTATION = "bad annotation"  # a line of a label list that does not parse
OUTSIDE_CLASSES = "not in a class folder"  # a file beside the class folders of a folder: tree


def skip(path: str | Path, reason: str, kind: str) -> dict:
    """One entry of a dataset's `skipped` list: which file, why in words, and the kind it is counted under."""
    return {"path": str(path), "reason": reason, "kind": kind}


@dataclass
class RawPart:
    """One official part (train / val / test) as found on disk."""

    labels: np.ndarray  # int64, class indices into RawDataset.classes
    images: torch.Tensor | None = None  # uint8 (N, C, H, W) when the format stores decoded arrays
    paths: list[str] | None = None  # image files otherwise


@dataclass
class RawDataset:
    classes: list[str]
    parts: dict[str, RawPart]  # official parts present: "train", and "val"/"test" when the dataset defines them
    skipped: list[dict]  # files left out while reading, {"path", "reason", "kind"} (see `skip`)
    location: str  # where the files were found (directory or archive path)
    # For image files read in place: the digest of the files read (see `folder_digest`), which keys the prepared cache.
    content: str | None = None


class ReadOptions(Protocol):
    """What a reader may use (PrepareOptions has it): the data folder, whether to download, a user-given source."""

    root: Path
    download: bool
    source: Path | None


@dataclass(frozen=True, kw_only=True)
class DatasetEntry:
    """One dataset, or with `parameter` a family of them named `name:ARGUMENT` (`folder:PATH`) that `bind` makes
    concrete."""

    name: str
    description: str
    channels: int
    size: int  # image side the data comes in (or is resized to by default, for photo collections of varying sizes)
    num_classes: int
    images: int  # how many labelled images the full dataset has
    files: str  # where the files go, relative to --root (a folder:PATH entry's is its PATH)
    official_parts: tuple[str, ...]  # the parts the source defines ("train", "val", "test")
    default_split: tuple[float, float, float] | None  # used when the source has no test part of its own
    download: bool  # whether `--download` can fetch it
    photos: bool  # decoded from image files (a file index when too large for memory) rather than stored arrays
    reader: Callable[[DatasetEntry, ReadOptions], RawDataset]
    test_images: int = 0  # how many of `images` the source's own test part holds (a study's --plan counts with it)
    takes_source: bool = False  # also reads --source: an archive or folder the user downloaded
    bundled: bool = False  # ships inside a Python package: nothing to place under --root
    parameter: str | None = None  # what follows "name:" in a parametrised entry's name, as shown to users
    binder: Callable[[DatasetEntry, str], DatasetEntry] | None = None  # the concrete entry for one argument
    cache_name: str = ""  # prefix of its prepared cache folder (default: name)
    cache_identity: str = ""  # the dataset as the prepared cache's key records it (default: name)
    # The files under --root the reader needs that are absent or empty (an interrupted download leaves empty folders
    # and files behind); None: the entry's folder existing is enough.
    missing_files: Callable[[Path], list[str]] | None = None
    # A digest of the files a reader of image files in place will read (their names, sizes and modification times),
    # the same its RawDataset.content gives, for datasets a user can change between two prepares (folders); None
    # keeps the cache key free of file contents.
    content: Callable[[DatasetEntry, ReadOptions], str | None] | None = None

    def __post_init__(self) -> None:
        if (self.parameter is None) != (self.binder is None):
            raise ValueError(f"dataset {self.name}: a parametrised entry needs both parameter and binder")
        for attribute in ("cache_name", "cache_identity"):
            if not getattr(self, attribute):
                object.__setattr__(self, attribute, self.name)

    @property
    def usage(self) -> str:
        """How a user names it: `mnist`, or `folder:PATH` for a parametrised entry."""
        return f"{self.name}:{self.parameter}" if self.parameter else self.name

    def read(self, options: ReadOptions) -> RawDataset:
        return self.reader(self, options)

    def bind(self, argument: str) -> DatasetEntry:
        assert self.binder is not None, f"dataset {self.name} takes no argument"
        return self.binder(self, argument)

    def location(self, root: Path) -> str:
        return self.files if self.bundled else str(Path(root) / self.files)

    def missing(self, root: Path) -> list[str]:
        """The files under `root` the reader needs that are absent or empty; [] when it can read the dataset."""
        if self.bundled:
            return []
        if self.missing_files is not None:
            return self.missing_files(Path(root))
        return [] if (Path(root) / self.files).exists() else [self.files]

    def present(self, root: Path) -> bool:
        """Whether every file the reader needs is under `root` and not empty."""
        return not self.missing(root)

    def content_digest(self, options: ReadOptions) -> str | None:
        return self.content(self, options) if self.content is not None else None


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def register(entry: DatasetEntry) -> DatasetEntry:
    return DATASETS.register(entry.name, entry)


def at_root(read: Callable[..., RawDataset]) -> Callable[[DatasetEntry, ReadOptions], RawDataset]:
    """The reader interface for a format found under --root and downloaded there when asked."""

    def read_at_root(entry: DatasetEntry, options: ReadOptions) -> RawDataset:
        return read(Path(options.root), download=options.download)

    return read_at_root
