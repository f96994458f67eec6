"""`cifar10` and `cifar100`: the python pickled batches in torchvision's layout, one reader for both layouts."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnbench.core.errors import UsageError
from cnnbench.data.datasets.base import DatasetEntry, RawDataset, RawPart, at_root, register
from cnnbench.data.datasets.download import nonempty_file, require_files

@dataclass(frozen=True)
class _CifarLayout:
    name: str
    folder: str
    train: tuple[str, ...]
    test: str
    meta: str
    label_key: str
    names_key: str


_CIFAR10 = _CifarLayout(
    "cifar10",
    "cifar-10-batches-py",
    tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test_batch",
    "batches.meta",
    "labels",
    "label_names",
)
_CIFAR100 = _CifarLayout(
    "cifar100", "cifar-100-python", ("train",), "test", "meta", "fine_labels", "fine_label_names"
)


def _load_pickle(path: Path) -> dict:
    """Load a CIFAR pickle (written by Python 2, hence latin1) with its keys as str whether stored as bytes or str."""
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except Exception as err:
        raise UsageError(f"{path}: not a readable CIFAR pickle ({err}); delete it and pass --download") from err
    if not isinstance(obj, dict):
        raise UsageError(f"{path}: CIFAR pickle holds {type(obj).__name__}, not a dict; delete it and pass --download")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _field(batch: dict, key: str, path: Path) -> object:
    if key not in batch:
        raise UsageError(
            f"{path}: CIFAR pickle has no '{key}' entry (has {sorted(batch)}); delete it and pass --download"
        )
    return batch[key]


def _cifar_part(layout: _CifarLayout, folder: Path, names: tuple[str, ...]) -> RawPart:
    import torch  # here, not at the top: listing datasets (--help, budget) must not load torch

    images, labels = [], []
    for name in names:
        path = folder / name
        batch = _load_pickle(path)
        data = np.asarray(_field(batch, "data", path), dtype=np.uint8)
        batch_labels = np.asarray(_field(batch, layout.label_key, path), dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(batch_labels):
            raise UsageError(
                f"{path}: data {data.shape} and {len(batch_labels)} labels are not N x 3072 with N labels; "
                "delete it and pass --download"
            )
        # Each row is the 1024 red values, then green, then blue, each plane row-major: exactly (3, 32, 32).
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(batch_labels)
    return RawPart(labels=np.concatenate(labels), images=torch.from_numpy(np.concatenate(images)))


def _cifar_missing(folder: Path, layout: _CifarLayout) -> list[str]:
    return [n for n in (*layout.train, layout.test, layout.meta) if not nonempty_file(folder / n)]


def _read_cifar(layout: _CifarLayout, root: Path, download: bool, fetch: Callable[[], object]) -> RawDataset:
    folder = Path(root) / layout.folder
    require_files(layout.name, folder, lambda: _cifar_missing(folder, layout), fetch, download=download,
                   fetch_into=Path(root) / layout.folder)  # fmt: skip
    meta_path = folder / layout.meta
    names = _field(_load_pickle(meta_path), layout.names_key, meta_path)
    classes = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]
    parts = {"train": _cifar_part(layout, folder, layout.train), "test": _cifar_part(layout, folder, (layout.test,))}
    for name, part in parts.items():
        if part.labels.size and (part.labels.min() < 0 or part.labels.max() >= len(classes)):
            raise UsageError(
                f"{layout.name}: {name} labels span {part.labels.min()}..{part.labels.max()} but {meta_path} names "
                f"{len(classes)} classes; delete {folder} and pass --download"
            )
    return RawDataset(classes=classes, parts=parts, skipped=[], location=str(folder))


def read_cifar10(root: Path, *, download: bool = False) -> RawDataset:
    """CIFAR-10 in torchvision's layout root/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}."""

    def fetch() -> object:
        from torchvision.datasets import CIFAR10  # only to download: torchvision loads torch

        return CIFAR10(str(root), download=True)

    return _read_cifar(_CIFAR10, root, download, fetch)


def read_cifar100(root: Path, *, download: bool = False) -> RawDataset:
    """CIFAR-100 (fine labels) in torchvision's layout root/cifar-100-python/{train,test,meta}."""

    def fetch() -> object:
        from torchvision.datasets import CIFAR100  # only to download: torchvision loads torch

        return CIFAR100(str(root), download=True)

    return _read_cifar(_CIFAR100, root, download, fetch)


register(DatasetEntry(name="cifar10", description="CIFAR-10 (python pickled batches)", channels=3, size=32,
                      num_classes=10, images=60000, files="cifar-10-batches-py/", official_parts=("train", "test"), test_images=10000,
                      default_split=None, download=True, photos=False, reader=at_root(read_cifar10),
                      missing_files=lambda root: _cifar_missing(root / _CIFAR10.folder, _CIFAR10)))  # fmt: skip
register(DatasetEntry(name="cifar100", description="CIFAR-100, fine labels (python pickled batches)", channels=3,
                      size=32, num_classes=100, images=60000, test_images=10000, files="cifar-100-python/",
                      official_parts=("train", "test"), default_split=None, download=True, photos=False,
                      reader=at_root(read_cifar100),
                      missing_files=lambda root: _cifar_missing(root / _CIFAR100.folder, _CIFAR100)))  # fmt: skip

