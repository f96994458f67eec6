"""Every dataset: its registry entry beside the reader of its real on-disk format, so a dataset is one section here.

A `DatasetEntry` knows the dataset's shape and class count without its files (so `budget` runs with no data present),
where its files go under --root, and `read(options)`, the one reader interface. Every reader finds the files where
torchvision (or Kaggle) puts them under `--root`, downloads through torchvision only when asked, and returns a
`RawDataset`: labels plus either decoded arrays (digits, MNIST, CIFAR) or image paths (flowers, pets, cats vs dogs,
folder). Image files are not decoded here; the caller decodes them with `cnnbench.data.images` and reports the corrupt
ones. torch is imported only where arrays become tensors, so listing the datasets stays quick.
"""

from __future__ import annotations

import gzip
import os
import pickle
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from cnnbench.errors import DataMissing, UsageError
from cnnbench.registry import Registry

if TYPE_CHECKING:
    import torch

# Lower-case file extensions read as images (torchvision's IMG_EXTENSIONS, kept here to avoid importing it eagerly).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


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
    skipped: list[dict]  # files left out while reading, {"path", "reason"}
    location: str  # where the files were found (directory or archive path)


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
    takes_source: bool = False  # also reads --source: an archive or folder the user downloaded
    bundled: bool = False  # ships inside a Python package: nothing to place under --root
    parameter: str | None = None  # what follows "name:" in a parametrised entry's name, as shown to users
    binder: Callable[[DatasetEntry, str], DatasetEntry] | None = None  # the concrete entry for one argument
    cache_name: str = ""  # prefix of its prepared cache folder (default: name)
    cache_identity: str = ""  # the dataset as the prepared cache's key records it (default: name)

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

    def present(self, root: Path) -> bool:
        return self.bundled or (Path(root) / self.files).exists()


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def register(entry: DatasetEntry) -> DatasetEntry:
    return DATASETS.register(entry.name, entry)


def _at_root(read: Callable[..., RawDataset]) -> Callable[[DatasetEntry, ReadOptions], RawDataset]:
    """The reader interface for a format found under --root and downloaded there when asked."""

    def read_at_root(entry: DatasetEntry, options: ReadOptions) -> RawDataset:
        return read(Path(options.root), download=options.download)

    return read_at_root


def _fetch(name: str, where: Path, fetch: Callable[[], object]) -> None:
    """Run a torchvision download, turning its many failure types into one-line DataMissing errors."""
    try:
        fetch()
    except Exception as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise DataMissing(
            f"{name}: download into {where} failed ({reason}); check the network, or place the files there"
        ) from err


def _missing(name: str, where: Path, needed: list[str]) -> DataMissing:
    return DataMissing(
        f"{name}: files not found under {where} (need {', '.join(needed)}); pass --download, or place the files there"
    )


# ----------------------------------------------------------------------------------------------------------- digits


def read_digits() -> RawDataset:
    """scikit-learn's bundled 8x8 digits (no network), values 0..16 scaled to 0..255."""
    import torch
    from sklearn.datasets import load_digits

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


# ------------------------------------------------------------------------------------------------------------ MNIST

_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _read_idx(path: Path) -> np.ndarray:
    """Parse an unsigned-byte IDX file (plain or .gz): 2 zero bytes, type 0x08, rank, big-endian int32 dims, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise UsageError(f"{path}: cannot read IDX file ({err}); delete it and pass --download") from err
    if len(data) < 4 or data[0:2] != b"\x00\x00" or data[2] != 0x08:
        raise UsageError(f"{path}: not an unsigned-byte IDX file (bad magic); delete it and pass --download")
    rank = data[3]
    header = 4 + 4 * rank
    dims = tuple(int(d) for d in np.frombuffer(data[4:header], dtype=">i4"))
    if len(data) - header != int(np.prod(dims)):
        raise UsageError(
            f"{path}: IDX header says {dims} but holds {len(data) - header} bytes; delete it and pass --download"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(raw: Path, stem: str) -> Path | None:
    for candidate in (raw / stem, raw / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _mnist_files(raw: Path) -> dict[str, tuple[Path, Path]] | None:
    found = {part: (_find_idx(raw, img), _find_idx(raw, lab)) for part, (img, lab) in _MNIST_FILES.items()}
    if any(p is None for pair in found.values() for p in pair):
        return None
    return found  # type: ignore[return-value]


def _mnist_part(images_path: Path, labels_path: Path) -> RawPart:
    import torch

    images = _read_idx(images_path)
    labels = _read_idx(labels_path).astype(np.int64)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UsageError(
            f"{images_path}: {images.shape} images do not match {labels.shape} labels in {labels_path}; "
            "delete them and pass --download"
        )
    if labels.size and labels.max() > 9:
        raise UsageError(f"{labels_path}: label {labels.max()} is not a digit 0..9; delete it and pass --download")
    return RawPart(labels=labels, images=torch.from_numpy(images.copy()).unsqueeze(1))


def read_mnist(root: Path, *, download: bool = False) -> RawDataset:
    """MNIST in torchvision's layout root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]."""
    raw = Path(root) / "MNIST" / "raw"
    files = _mnist_files(raw)
    if files is None and download:
        from torchvision.datasets import MNIST

        _fetch("mnist", raw, lambda: MNIST(str(root), train=True, download=True))
        files = _mnist_files(raw)
    if files is None:
        raise _missing("mnist", raw, [name for pair in _MNIST_FILES.values() for name in pair])
    return RawDataset(
        classes=[str(d) for d in range(10)],
        parts={part: _mnist_part(*pair) for part, pair in files.items()},
        skipped=[],
        location=str(raw),
    )


register(DatasetEntry(name="mnist", description="MNIST handwritten digits (IDX files)", channels=1, size=28,
                      num_classes=10, images=70000, files="MNIST/raw/", official_parts=("train", "test"),
                      default_split=None, download=True, photos=False, reader=_at_root(read_mnist)))  # fmt: skip


# ------------------------------------------------------------------------------------------------------------ CIFAR


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
    import torch

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
    return [n for n in (*layout.train, layout.test, layout.meta) if not (folder / n).is_file()]


def _read_cifar(layout: _CifarLayout, root: Path, download: bool, fetch: Callable[[], object]) -> RawDataset:
    folder = Path(root) / layout.folder
    if _cifar_missing(folder, layout) and download:
        _fetch(layout.name, Path(root) / layout.folder, fetch)
    missing = _cifar_missing(folder, layout)
    if missing:
        raise _missing(layout.name, folder, missing)
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
        from torchvision.datasets import CIFAR10

        return CIFAR10(str(root), download=True)

    return _read_cifar(_CIFAR10, root, download, fetch)


def read_cifar100(root: Path, *, download: bool = False) -> RawDataset:
    """CIFAR-100 (fine labels) in torchvision's layout root/cifar-100-python/{train,test,meta}."""

    def fetch() -> object:
        from torchvision.datasets import CIFAR100

        return CIFAR100(str(root), download=True)

    return _read_cifar(_CIFAR100, root, download, fetch)


register(DatasetEntry(name="cifar10", description="CIFAR-10 (python pickled batches)", channels=3, size=32,
                      num_classes=10, images=60000, files="cifar-10-batches-py/", official_parts=("train", "test"),
                      default_split=None, download=True, photos=False, reader=_at_root(read_cifar10)))
register(DatasetEntry(name="cifar100", description="CIFAR-100, fine labels (python pickled batches)", channels=3,
                      size=32, num_classes=100, images=60000, files="cifar-100-python/",
                      official_parts=("train", "test"), default_split=None, download=True, photos=False,
                      reader=_at_root(read_cifar100)))  # fmt: skip


# ---------------------------------------------------------------------------------------------------------- flowers

_FLOWERS_SPLITS = {"train": "trnid", "val": "valid", "test": "tstid"}
_FLOWERS_CLASSES = 102


def _flowers_classes() -> list[str]:
    """Real class names when this torchvision exposes them (0.17+ does), else "1".."102"."""
    from torchvision.datasets import Flowers102

    names = getattr(Flowers102, "classes", None)
    if names is not None and len(names) == _FLOWERS_CLASSES:
        return list(names)
    return [str(i) for i in range(1, _FLOWERS_CLASSES + 1)]


def _load_mat(path: Path, keys: list[str]) -> dict[str, np.ndarray]:
    from scipy.io import loadmat

    try:
        mat = loadmat(path, squeeze_me=True)
    except Exception as err:
        raise UsageError(f"{path}: not a readable .mat file ({err}); delete it and pass --download") from err
    absent = [k for k in keys if k not in mat]
    if absent:
        raise UsageError(f"{path}: has no {', '.join(absent)} entry; delete it and pass --download")
    return {k: np.atleast_1d(np.asarray(mat[k])).astype(np.int64) for k in keys}


def _flowers_files(base: Path) -> list[str]:
    return [n for n in ("jpg", "imagelabels.mat", "setid.mat") if not (base / n).exists()]


def read_flowers102(root: Path, *, download: bool = False) -> RawDataset:
    """Oxford Flowers-102 in torchvision's layout root/flowers-102/{jpg/, imagelabels.mat, setid.mat}.

    Labels in imagelabels.mat are 1-based (1..102) and are shifted to 0..101; setid.mat lists the official train / val /
    test image numbers (1-based, image_00001.jpg is number 1). Listed images absent from jpg/ go to `skipped`.
    """
    base = Path(root) / "flowers-102"
    if _flowers_files(base) and download:
        from torchvision.datasets import Flowers102

        _fetch("flowers102", base, lambda: Flowers102(str(root), download=True))
    missing = _flowers_files(base)
    if missing:
        raise _missing("flowers102", base, missing)

    labels = _load_mat(base / "imagelabels.mat", ["labels"])["labels"]
    if labels.size == 0 or labels.min() < 1 or labels.max() > _FLOWERS_CLASSES:
        raise UsageError(f"{base / 'imagelabels.mat'}: labels must lie in 1..102; delete it and pass --download")
    split_ids = _load_mat(base / "setid.mat", list(_FLOWERS_SPLITS.values()))

    parts, skipped = {}, []
    for part, key in _FLOWERS_SPLITS.items():
        paths, part_labels = [], []
        for image_id in split_ids[key].tolist():
            path = base / "jpg" / f"image_{image_id:05d}.jpg"
            if not 1 <= image_id <= labels.size:
                reason = f"setid.mat {key} lists image {image_id}, which has no label"
                skipped.append({"path": str(path), "reason": reason})
            elif not path.is_file():
                skipped.append({"path": str(path), "reason": f"listed in setid.mat {key} but missing"})
            else:
                paths.append(str(path))
                part_labels.append(int(labels[image_id - 1]) - 1)
        parts[part] = RawPart(labels=np.asarray(part_labels, dtype=np.int64), paths=paths)
    return RawDataset(classes=_flowers_classes(), parts=parts, skipped=skipped, location=str(base))


register(DatasetEntry(name="flowers102", description="Oxford Flowers-102 (official split; S3 used --split 0.5,0.2,0.3)",
                      channels=3, size=224, num_classes=102, images=8189, files="flowers-102/",
                      official_parts=("train", "val", "test"), default_split=None, download=True, photos=True,
                      reader=_at_root(read_flowers102)))  # fmt: skip


# --------------------------------------------------------------------------------------------------------- catsdogs

_CATSDOGS_NAME = re.compile(r"^(cat|dog)\.(\d+)\.([A-Za-z]+)$")
_CATSDOGS_CLASSES = ["cat", "dog"]


def _catsdogs_entry(name: str) -> tuple[int, int] | None:
    """(label, numeric id) for 'cat.12.jpg' / 'dog.3.png', None for anything else."""
    match = _CATSDOGS_NAME.match(name)
    if match is None or f".{match.group(3).lower()}" not in IMAGE_EXTENSIONS:
        return None
    return _CATSDOGS_CLASSES.index(match.group(1)), int(match.group(2))


def _has_catsdogs_files(folder: Path) -> bool:
    return folder.is_dir() and any(_catsdogs_entry(p.name) is not None for p in folder.iterdir() if p.is_file())


def _extract_catsdogs(archive: Path, target: Path) -> None:
    """Extract the Kaggle train.zip (or the competition zip holding it) so its images end up in `target`.

    Extraction goes to a temporary folder beside `target` and is renamed into place at the end, so an interrupted
    run never leaves a `target` that looks complete.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent))
    try:
        with zipfile.ZipFile(archive) as outer:
            names = outer.namelist()
            inner = next((n for n in names if Path(n).name == "train.zip"), None)
            if inner is None:
                outer.extractall(staging)
            else:
                # dogs-vs-cats.zip nests train.zip (and test1.zip, which is unlabeled and not needed).
                inner_path = Path(outer.extract(inner, staging))
                with zipfile.ZipFile(inner_path) as train_zip:
                    train_zip.extractall(staging)
                inner_path.unlink()
        found = next((d for d in (staging / "train", staging) if _has_catsdogs_files(d)), None)
        if found is None:
            raise UsageError(
                f"catsdogs: {archive} holds no cat.N.jpg / dog.N.jpg files (nor a train.zip with them); "
                "pass --source the Kaggle train.zip or dogs-vs-cats.zip"
            )
        os.replace(found, target)
    except (zipfile.BadZipFile, OSError) as err:
        raise UsageError(f"catsdogs: cannot extract {archive} ({err}); pass --source a readable zip or folder") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _catsdogs_folder(root: Path, source: Path | None) -> Path:
    """The folder to read: --source itself or its train/, or root/catsdogs/train (extracting an archive there once)."""
    target = Path(root) / "catsdogs" / "train"
    if source is None:
        if not _has_catsdogs_files(target):
            raise DataMissing(
                f"catsdogs: no cat.N.jpg / dog.N.jpg files under {target} (Kaggle Dogs vs Cats needs a login, so "
                "there is no download); pass --source PATH to train.zip, dogs-vs-cats.zip or a folder of the images"
            )
        return target
    source = Path(source)
    if source.is_dir():
        found = next((d for d in (source, source / "train") if _has_catsdogs_files(d)), None)
        if found is None:
            raise UsageError(
                f"catsdogs: no cat.N.jpg / dog.N.jpg files in {source} or {source / 'train'}; "
                "pass --source the folder holding them"
            )
        return found
    if not source.is_file():
        raise UsageError(
            f"catsdogs: --source {source} does not exist; pass the Kaggle train.zip, dogs-vs-cats.zip or a folder"
        )
    if not zipfile.is_zipfile(source):
        raise UsageError(
            f"catsdogs: --source {source} is not a zip archive; pass the Kaggle train.zip, dogs-vs-cats.zip or a folder"
        )
    if not _has_catsdogs_files(target):
        _extract_catsdogs(source, target)
    return target


def read_catsdogs(root: Path, *, source: Path | None = None) -> RawDataset:
    """Kaggle Dogs vs Cats: labels from file names cat.<n>.<ext> / dog.<n>.<ext>; one part "train".

    `source` is a folder of the images (directly or in train/) or the Kaggle zip, extracted once into
    root/catsdogs/train. Other files go to `skipped`. Paths are sorted by class, then numeric id.
    """
    folder = _catsdogs_folder(root, source)
    entries, skipped = [], []
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        entry = _catsdogs_entry(path.name)
        if entry is None:
            reason = "name is not cat.<n>.<ext> or dog.<n>.<ext> with an image extension"
            skipped.append({"path": str(path), "reason": reason})
        else:
            entries.append((*entry, str(path)))
    entries.sort()
    part = RawPart(labels=np.asarray([e[0] for e in entries], dtype=np.int64), paths=[e[2] for e in entries])
    return RawDataset(classes=list(_CATSDOGS_CLASSES), parts={"train": part}, skipped=skipped, location=str(folder))


register(DatasetEntry(name="catsdogs", description="Kaggle Dogs vs Cats (give the archive or folder with --source)",
                      channels=3, size=200, num_classes=2, images=25000, files="catsdogs/train/",
                      official_parts=("train",), default_split=(0.64, 0.16, 0.20), download=False, photos=True,
                      takes_source=True,
                      reader=lambda entry, options: read_catsdogs(options.root, source=options.source)))  # fmt: skip


# ------------------------------------------------------------------------------------------------------------- pets

_PETS_LISTS = {"train": "trainval.txt", "test": "test.txt"}
_PETS_SPECIES = {"1": 0, "2": 1}  # annotation column 3: 1 = cat, 2 = dog


def _pets_files(base: Path) -> list[str]:
    needed = ["images", *(f"annotations/{name}" for name in _PETS_LISTS.values())]
    return [n for n in needed if not (base / n).exists()]


def _read_pets_list(base: Path, list_name: str, skipped: list[dict]) -> tuple[list[str], list[int]]:
    """Parse one annotation list: "<image id> <class id> <species> <breed id>" per line, '#' starts a comment."""
    list_path = base / "annotations" / list_name
    paths, labels = [], []
    for number, line in enumerate(list_path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != 4 or fields[2] not in _PETS_SPECIES:
            reason = f"not '<id> <class> <species 1|2> <breed>': {line.strip()}"
            skipped.append({"path": f"{list_path}:{number}", "reason": reason})
            continue
        path = base / "images" / f"{fields[0]}.jpg"
        if not path.is_file():
            skipped.append({"path": str(path), "reason": f"listed in {list_name} but missing"})
            continue
        paths.append(str(path))
        labels.append(_PETS_SPECIES[fields[2]])
    return paths, labels


def read_pets(root: Path, *, download: bool = False) -> RawDataset:
    """Oxford-IIIT Pet as cat vs dog, in torchvision's layout root/oxford-iiit-pet/{images/, annotations/}.

    Parts follow the official lists: "train" from trainval.txt, "test" from test.txt. Images in images/ named in
    neither list (the release has a few) go to `skipped` as unlabeled.
    """
    base = Path(root) / "oxford-iiit-pet"
    if _pets_files(base) and download:
        from torchvision.datasets import OxfordIIITPet

        _fetch("pets", base, lambda: OxfordIIITPet(str(root), download=True))
    missing = _pets_files(base)
    if missing:
        raise _missing("pets", base, missing)

    parts, skipped = {}, []
    for part, list_name in _PETS_LISTS.items():
        paths, labels = _read_pets_list(base, list_name, skipped)
        parts[part] = RawPart(labels=np.asarray(labels, dtype=np.int64), paths=paths)
    listed = {p for part in parts.values() for p in part.paths or []}
    for path in sorted((base / "images").glob("*.jpg")):
        if str(path) not in listed:
            skipped.append({"path": str(path), "reason": "not in trainval.txt or test.txt (unlabeled)"})
    return RawDataset(classes=["cat", "dog"], parts=parts, skipped=skipped, location=str(base))


register(DatasetEntry(name="pets", description="Oxford-IIIT Pet as cat vs dog", channels=3, size=224, num_classes=2,
                      images=7349, files="oxford-iiit-pet/", official_parts=("train", "test"), default_split=None,
                      download=True, photos=True, reader=_at_root(read_pets)))  # fmt: skip


# ----------------------------------------------------------------------------------------------------------- folder


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _class_files(class_dir: Path, skipped: list[dict]) -> list[str]:
    """Image files anywhere under `class_dir`, sorted, following symlinks as torchvision's ImageFolder does."""
    files = []
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if _is_image(name):
                files.append(path)
            else:
                skipped.append({"path": path, "reason": "not an image extension"})
    return files


def read_folder(path: Path) -> RawDataset:
    """Any class-per-subfolder image tree (torchvision ImageFolder layout); class names are the sorted folder names."""
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"folder: {path} is not a directory; pass --path a folder with one subfolder per class")
    class_dirs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise UsageError(f"folder: {path} has no class subfolders; put each class's images in {path}/<class name>/")
    skipped = [{"path": str(f), "reason": "not inside a class folder"} for f in sorted(path.iterdir()) if f.is_file()]
    paths, labels, empty = [], [], []
    for label, class_dir in enumerate(class_dirs):
        files = _class_files(class_dir, skipped)
        if not files:
            empty.append(str(class_dir))
        paths.extend(files)
        labels.extend([label] * len(files))
    if empty:
        raise UsageError(
            f"folder: no image files in class folder(s) {', '.join(empty)}; add images or remove the folder(s)"
        )
    part = RawPart(labels=np.asarray(labels, dtype=np.int64), paths=paths)
    return RawDataset(classes=[d.name for d in class_dirs], parts={"train": part}, skipped=skipped, location=str(path))


FOLDER_SIZE = 64  # default side for arbitrary image trees; override with --size


def _bind_folder(family: DatasetEntry, argument: str) -> DatasetEntry:
    """`folder:PATH` as a dataset of its own: its classes are counted here, its files are read from PATH."""
    name = f"{family.name}:{argument}"
    path = Path(argument).expanduser()
    if not path.is_dir():
        raise UsageError(f"dataset {name!r}: folder {str(path)!r} does not exist (expected PATH/<class>/<image>)")
    classes = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    # Every tree shares the cache folder prefix "folder"; the key tells trees apart by their absolute path (resolved
    # without expanding ~, as caches prepared so far were keyed).
    return replace(family, name=name, description=f"image folder {path}", num_classes=len(classes), files=str(path),
                   parameter=None, binder=None, cache_name=family.name,
                   cache_identity=f"{family.name}:{Path(argument).resolve()}")  # fmt: skip


register(DatasetEntry(name="folder", parameter="PATH", binder=_bind_folder,
                      description=f"any class-per-subfolder image tree (resized to {FOLDER_SIZE}x{FOLDER_SIZE} unless "
                                  f"--size)",
                      channels=3, size=FOLDER_SIZE, num_classes=0, images=0, files="", official_parts=("train",),
                      default_split=(0.7, 0.15, 0.15), download=False, photos=True,
                      reader=lambda entry, options: read_folder(Path(entry.files))))  # fmt: skip
