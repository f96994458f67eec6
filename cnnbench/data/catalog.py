"""The dataset registry: what `cnnbench datasets` lists and what `prepare` knows how to read.

An entry knows the dataset's shape and class count without its files (so `budget` runs with no data present), where
its files go under --root, and which reader turns them into a `RawDataset`. Readers live in `sources.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cnnbench.errors import UsageError
from cnnbench.registry import Registry


@dataclass(frozen=True, kw_only=True)
class DatasetEntry:
    name: str
    description: str
    channels: int
    size: int  # image side the data comes in (or is resized to by default, for photo collections of varying sizes)
    num_classes: int
    images: int  # how many labelled images the full dataset has
    files: str  # where the files go, relative to --root
    official_parts: tuple[str, ...]  # the parts the source defines ("train", "val", "test")
    default_split: tuple[float, float, float] | None  # used when the source has no test part of its own
    download: bool  # whether `--download` can fetch it
    photos: bool  # decoded from image files (a file index when too large for memory) rather than stored arrays
    reader: str  # name of the function in cnnbench.data.sources


DATASETS: Registry[DatasetEntry] = Registry("dataset")

for _entry in (
    DatasetEntry(name="digits", description="scikit-learn's bundled 8x8 handwritten digits (no network needed)",
                 channels=1, size=8, num_classes=10, images=1797, files="(bundled with scikit-learn)",
                 official_parts=("train",), default_split=(0.6, 0.2, 0.2), download=False, photos=False,
                 reader="read_digits"),
    DatasetEntry(name="mnist", description="MNIST handwritten digits (IDX files)", channels=1, size=28,
                 num_classes=10, images=70000, files="MNIST/raw/", official_parts=("train", "test"),
                 default_split=None, download=True, photos=False, reader="read_mnist"),
    DatasetEntry(name="cifar10", description="CIFAR-10 (python pickled batches)", channels=3, size=32,
                 num_classes=10, images=60000, files="cifar-10-batches-py/", official_parts=("train", "test"),
                 default_split=None, download=True, photos=False, reader="read_cifar10"),
    DatasetEntry(name="cifar100", description="CIFAR-100, fine labels (python pickled batches)", channels=3,
                 size=32, num_classes=100, images=60000, files="cifar-100-python/", official_parts=("train", "test"),
                 default_split=None, download=True, photos=False, reader="read_cifar100"),
    DatasetEntry(name="flowers102", description="Oxford Flowers-102 (official split; S3 used --split 0.5,0.2,0.3)",
                 channels=3, size=224, num_classes=102, images=8189, files="flowers-102/",
                 official_parts=("train", "val", "test"), default_split=None, download=True, photos=True,
                 reader="read_flowers102"),
    DatasetEntry(name="catsdogs", description="Kaggle Dogs vs Cats (give the archive or folder with --source)",
                 channels=3, size=200, num_classes=2, images=25000, files="catsdogs/train/",
                 official_parts=("train",), default_split=(0.64, 0.16, 0.20), download=False, photos=True,
                 reader="read_catsdogs"),
    DatasetEntry(name="pets", description="Oxford-IIIT Pet as cat vs dog", channels=3, size=224, num_classes=2,
                 images=7349, files="oxford-iiit-pet/", official_parts=("train", "test"), default_split=None,
                 download=True, photos=True, reader="read_pets"),
):  # fmt: skip
    DATASETS.register(_entry.name, _entry)

FOLDER_PREFIX = "folder:"
FOLDER_SIZE = 64  # default side for arbitrary image trees; override with --size


def get_dataset(name: str) -> DatasetEntry:
    """Look a dataset up; `folder:PATH` names any class-per-subfolder image tree."""
    if name.startswith(FOLDER_PREFIX):
        path = Path(name[len(FOLDER_PREFIX) :]).expanduser()
        if not path.is_dir():
            raise UsageError(f"dataset {name!r}: folder {str(path)!r} does not exist (expected PATH/<class>/<image>)")
        classes = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
        return DatasetEntry(name=name, description=f"image folder {path}", channels=3, size=FOLDER_SIZE,
                            num_classes=len(classes), images=0, files=str(path), official_parts=("train",),
                            default_split=(0.7, 0.15, 0.15), download=False, photos=True,
                            reader="read_folder")  # fmt: skip
    if name not in DATASETS:
        raise UsageError(DATASETS.unknown_message(name) + ", or folder:PATH")
    return DATASETS.get(name)


def reader_for(entry: DatasetEntry) -> Callable[..., object]:
    from cnnbench.data import sources

    return getattr(sources, entry.reader)
