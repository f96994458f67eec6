"""Every dataset: its registry entry beside the reader of its real on-disk format, so a dataset is one section here.

A `DatasetEntry` knows the dataset's shape and class count without its files (so `budget` runs with no data present),
where its files go under --root, and `read(options)`, the one reader interface. Every reader finds the files where
torchvision (or Kaggle) puts them under `--root`, downloads through torchvision only when asked, and returns a
`RawDataset`: labels plus either decoded arrays (digits, MNIST, CIFAR) or image paths (flowers, pets, cats vs dogs,
folder). Image files are not decoded here; the caller decodes them with `cnnbench.data.images` and reports the corrupt
ones. Trees of image files read in place (folder:PATH, catsdogs) are listed by `scan_folders`, which reads each file
once however many links name it, and `folder_digest` of what it found keys their prepared cache. Every file left out
is listed with its reason and a kind (`skip`). torch is imported only where arrays become tensors, so listing the
datasets stays quick.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import re
import shutil
import stat
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


def _at_root(read: Callable[..., RawDataset]) -> Callable[[DatasetEntry, ReadOptions], RawDataset]:
    """The reader interface for a format found under --root and downloaded there when asked."""

    def read_at_root(entry: DatasetEntry, options: ReadOptions) -> RawDataset:
        return read(Path(options.root), download=options.download)

    return read_at_root


def _fetch(name: str, where: Path, fetch: Callable[[], object], needed: list[str] | None = None) -> None:
    """Run a torchvision download, turning its many failure types into one-line DataMissing errors (naming the files
    to place by hand when the caller knows them)."""
    try:
        fetch()
    except Exception as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        files = f" ({', '.join(needed)})" if needed else ""
        raise DataMissing(
            f"{name}: download into {where} failed ({reason}); check the network, or place the files{files} there"
        ) from err


def _require_files(name: str, where: Path, missing: Callable[[], list[str]], fetch: Callable[[], object], *,
                   download: bool, fetch_into: Path | None = None) -> None:
    """The dataset's files, fetched first when some are missing and --download was given; else a one-line error
    naming what is missing (`missing()` lists absent or empty files)."""
    absent = missing()
    if absent and download:
        _fetch(name, fetch_into or where, fetch, absent)
    still_missing = missing()
    if still_missing:
        raise _missing(name, where, still_missing)


def _missing(name: str, where: Path, needed: list[str]) -> DataMissing:
    return DataMissing(
        f"{name}: files missing or empty under {where} (need {', '.join(needed)}); pass --download, or place the "
        "files there"
    )


def _nonempty_file(path: Path) -> bool:
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:
        return False


def _holds_nonempty(folder: Path, pattern: str) -> bool:
    """Whether `folder` has at least one non-empty file matching `pattern` (stops at the first)."""
    try:
        return any(_nonempty_file(path) for path in folder.glob(pattern))
    except OSError:
        return False


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
        if _nonempty_file(candidate):
            return candidate
    return None


def _mnist_missing(raw: Path) -> list[str]:
    return [stem for pair in _MNIST_FILES.values() for stem in pair if _find_idx(raw, stem) is None]


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

        _fetch("mnist", raw, lambda: MNIST(str(root), train=True, download=True), _mnist_missing(raw))
        files = _mnist_files(raw)
    if files is None:
        raise _missing("mnist", raw, _mnist_missing(raw))
    return RawDataset(
        classes=[str(d) for d in range(10)],
        parts={part: _mnist_part(*pair) for part, pair in files.items()},
        skipped=[],
        location=str(raw),
    )


register(DatasetEntry(name="mnist", description="MNIST handwritten digits (IDX files)", channels=1, size=28,
                      num_classes=10, images=70000, files="MNIST/raw/", official_parts=("train", "test"),
                      default_split=None, download=True, photos=False, reader=_at_root(read_mnist),
                      missing_files=lambda root: _mnist_missing(root / "MNIST" / "raw")))  # fmt: skip


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
    return [n for n in (*layout.train, layout.test, layout.meta) if not _nonempty_file(folder / n)]


def _read_cifar(layout: _CifarLayout, root: Path, download: bool, fetch: Callable[[], object]) -> RawDataset:
    folder = Path(root) / layout.folder
    _require_files(layout.name, folder, lambda: _cifar_missing(folder, layout), fetch, download=download,
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
                      default_split=None, download=True, photos=False, reader=_at_root(read_cifar10),
                      missing_files=lambda root: _cifar_missing(root / _CIFAR10.folder, _CIFAR10)))  # fmt: skip
register(DatasetEntry(name="cifar100", description="CIFAR-100, fine labels (python pickled batches)", channels=3,
                      size=32, num_classes=100, images=60000, files="cifar-100-python/",
                      official_parts=("train", "test"), default_split=None, download=True, photos=False,
                      reader=_at_root(read_cifar100),
                      missing_files=lambda root: _cifar_missing(root / _CIFAR100.folder, _CIFAR100)))  # fmt: skip


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
    """What is missing or empty of flowers-102/: at least one image in jpg/, and both .mat files."""
    missing = [] if _holds_nonempty(base / "jpg", "*.jpg") else ["jpg/image_*.jpg"]
    return missing + [n for n in ("imagelabels.mat", "setid.mat") if not _nonempty_file(base / n)]


def read_flowers102(root: Path, *, download: bool = False) -> RawDataset:
    """Oxford Flowers-102 in torchvision's layout root/flowers-102/{jpg/, imagelabels.mat, setid.mat}.

    Labels in imagelabels.mat are 1-based (1..102) and are shifted to 0..101; setid.mat lists the official train / val /
    test image numbers (1-based, image_00001.jpg is number 1). Listed images absent from jpg/ go to `skipped`.
    """
    base = Path(root) / "flowers-102"
    def fetch() -> object:
        from torchvision.datasets import Flowers102

        return Flowers102(str(root), download=True)

    _require_files("flowers102", base, lambda: _flowers_files(base), fetch, download=download)

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
                skipped.append(skip(path, reason, UNLABELLED))
            elif not path.is_file():
                skipped.append(skip(path, f"listed in setid.mat {key} but missing", MISSING))
            else:
                paths.append(str(path))
                part_labels.append(int(labels[image_id - 1]) - 1)
        parts[part] = RawPart(labels=np.asarray(part_labels, dtype=np.int64), paths=paths)
    return RawDataset(classes=_flowers_classes(), parts=parts, skipped=skipped, location=str(base))


register(DatasetEntry(name="flowers102", description="Oxford Flowers-102 (official split; S3 used --split 0.5,0.2,0.3)",
                      channels=3, size=224, num_classes=102, images=8189, files="flowers-102/",
                      official_parts=("train", "val", "test"), default_split=None, download=True, photos=True,
                      reader=_at_root(read_flowers102),
                      missing_files=lambda root: _flowers_files(root / "flowers-102")))  # fmt: skip


# ---------------------------------------------------------------------------------------- image files read in place


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


@dataclass
class _Candidate:
    root: int  # index of the folder (a class folder) it was found under
    path: str  # as reached from that folder, through any links
    stat: os.stat_result  # of the file itself (links followed)
    via_link: bool  # reached through a symbolic link (to the file, or to a folder on its path)


@dataclass
class FolderScan:
    """The files under some folders, each file once however many names it has: see `scan_folders`."""

    files: list[list[tuple[str, os.stat_result]]]  # per folder, in os.walk's sorted top-down order
    skipped: list[dict]


def scan_folders(folders: list[Path], *, recursive: bool,
                 refuse: Callable[[str], tuple[str, str] | None]) -> FolderScan:  # fmt: skip
    """The regular files under each of `folders` (and their subfolders when `recursive`), found with os.scandir (one
    stat per entry, no image decoding, so a tree of 100,000 files takes a fraction of a second).

    Links are followed, as torchvision's ImageFolder follows them, but no file is read twice: every name of one file
    (symbolic links, hard links, the same folder reached through a link) shares its (st_dev, st_ino), and only one
    name is kept: the first reached without a symbolic link, else the first reached at all, so a link inside the tree
    never moves an image to the class (or split) of the link. A link to a file outside the tree is read once. A
    linked folder is walked once whatever links to it, which also ends link cycles. `refuse(name)` gives the
    (reason, kind) for which a file is left out before any of that, or None to keep it.
    """
    candidates: list[_Candidate] = []
    skipped: list[dict] = []
    walked: dict[tuple[int, int], str] = {}  # folder identity -> the path it was first walked at
    for index, top in enumerate(folders):
        pending = [(str(top), os.path.islink(top), os.path.islink(top))]
        while pending:
            directory, is_link, via_link = pending.pop()
            try:
                info = os.stat(directory)
            except OSError as err:
                skipped.append(skip(directory, f"cannot read this folder: {err.strerror}", UNREADABLE))
                continue
            identity = (info.st_dev, info.st_ino)
            # A folder reached by its own name is always walked (names without links cannot form cycles, and it is
            # the name its files should keep); through a link, only a folder no other name has walked yet.
            if is_link and identity in walked:
                reason = f"a link to the folder {walked[identity]}, which is read already"
                skipped.append(skip(directory, reason, DUPLICATE_LINK))
                continue
            walked.setdefault(identity, directory)
            try:
                with os.scandir(directory) as listing:
                    entries = sorted(listing, key=lambda entry: entry.name)
            except OSError as err:
                skipped.append(skip(directory, f"cannot list this folder: {err.strerror}", UNREADABLE))
                continue
            subfolders = []
            for entry in entries:
                link = entry.is_symlink()
                try:
                    entry_stat = entry.stat()
                except OSError as err:
                    reason = "a broken link" if link else f"cannot read it: {err.strerror}"
                    skipped.append(skip(entry.path, reason, UNREADABLE))
                    continue
                if stat.S_ISDIR(entry_stat.st_mode):
                    subfolders.append((entry.path, link, via_link or link))
                elif not stat.S_ISREG(entry_stat.st_mode):  # a FIFO would block the decoder forever
                    skipped.append(skip(entry.path, "not a regular file", NOT_AN_IMAGE))
                elif (refusal := refuse(entry.name)) is not None:
                    skipped.append(skip(entry.path, *refusal))
                else:
                    candidates.append(_Candidate(index, entry.path, entry_stat, via_link or link))
            if recursive:
                pending.extend(reversed(subfolders))  # popped in sorted order: os.walk's top-down order
    return _one_name_per_file(candidates, skipped, len(folders))


def _one_name_per_file(candidates: list[_Candidate], skipped: list[dict], folders: int) -> FolderScan:
    chosen: dict[tuple[int, int], _Candidate] = {}
    for candidate in candidates:
        identity = (candidate.stat.st_dev, candidate.stat.st_ino)
        held = chosen.get(identity)
        if held is None or (held.via_link and not candidate.via_link):
            chosen[identity] = candidate
    files: list[list[tuple[str, os.stat_result]]] = [[] for _ in range(folders)]
    for candidate in candidates:
        kept = chosen[(candidate.stat.st_dev, candidate.stat.st_ino)]
        if kept is candidate:
            files[candidate.root].append((candidate.path, candidate.stat))
        else:
            skipped.append(skip(candidate.path, f"the same file as {kept.path}, which is read", DUPLICATE_LINK))
    return FolderScan(files=files, skipped=skipped)


def folder_digest(base: Path, scan: FolderScan, classes: list[str]) -> str:
    """A digest of what a scan found: every kept file's path (relative to `base`), size and modification time, and
    every file left out for a reason other than not being an image, so that adding, removing or replacing an image
    changes it. Files that are not images (.DS_Store, notes) stay out of it: they change often and matter not."""
    lines = ["\t".join(classes)]
    for files in scan.files:
        lines += [f"{os.path.relpath(path, base)}\t{info.st_size}\t{info.st_mtime_ns}" for path, info in files]
    lines += [f"{os.path.relpath(s['path'], base)}\t{s['kind']}" for s in scan.skipped if s["kind"] != NOT_AN_IMAGE]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


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
    try:
        return folder.is_dir() and any(_catsdogs_entry(p.name) is not None for p in folder.iterdir() if p.is_file())
    except OSError:  # a folder that cannot be listed holds nothing usable
        return False


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


def _catsdogs_refusal(name: str) -> tuple[str, str] | None:
    if _catsdogs_entry(name) is not None:
        return None
    reason = "name is not cat.<n>.<ext> or dog.<n>.<ext> with an image extension"
    return reason, UNLABELLED if _is_image(name) else NOT_AN_IMAGE


def read_catsdogs(root: Path, *, source: Path | None = None) -> RawDataset:
    """Kaggle Dogs vs Cats: labels from file names cat.<n>.<ext> / dog.<n>.<ext>; one part "train".

    `source` is a folder of the images (directly or in train/) or the Kaggle zip, extracted once into
    root/catsdogs/train. Other files go to `skipped`, and so do extra names (links) of a file already read. Paths are
    sorted by class, then numeric id.
    """
    folder = _catsdogs_folder(root, source)
    scan = scan_folders([folder], recursive=False, refuse=_catsdogs_refusal)
    entries = sorted((*_catsdogs_entry(os.path.basename(path)), path)  # type: ignore[misc]
                     for path, _ in scan.files[0])  # fmt: skip
    part = RawPart(labels=np.asarray([e[0] for e in entries], dtype=np.int64), paths=[e[2] for e in entries])
    return RawDataset(classes=list(_CATSDOGS_CLASSES), parts={"train": part}, skipped=scan.skipped,
                      location=str(folder), content=folder_digest(folder, scan, _CATSDOGS_CLASSES))  # fmt: skip


def _catsdogs_content(root: Path, source: Path | None) -> str | None:
    """The digest of the folder `read_catsdogs` will read, when it is there already; an archive not extracted yet has
    none until its first prepare extracts it (that prepare keys its cache after reading, so it finds it again)."""
    if source is not None and Path(source).is_dir():
        folder = next((d for d in (Path(source), Path(source) / "train") if _has_catsdogs_files(d)), None)
    else:
        target = Path(root) / "catsdogs" / "train"
        folder = target if _has_catsdogs_files(target) else None
    if folder is None:
        return None
    return folder_digest(folder, scan_folders([folder], recursive=False, refuse=_catsdogs_refusal), _CATSDOGS_CLASSES)


register(DatasetEntry(name="catsdogs", description="Kaggle Dogs vs Cats (give the archive or folder with --source)",
                      channels=3, size=200, num_classes=2, images=25000, files="catsdogs/train/",
                      official_parts=("train",), default_split=(0.64, 0.16, 0.20), download=False, photos=True,
                      takes_source=True,
                      reader=lambda entry, options: read_catsdogs(options.root, source=options.source),
                      missing_files=lambda root: [] if _has_catsdogs_files(root / "catsdogs" / "train") else
                                                 ["cat.<n>.jpg / dog.<n>.jpg files"],
                      content=lambda entry, options: _catsdogs_content(options.root, options.source)))  # fmt: skip


# ------------------------------------------------------------------------------------------------------------- pets

_PETS_LISTS = {"train": "trainval.txt", "test": "test.txt"}
_PETS_SPECIES = {"1": 0, "2": 1}  # annotation column 3: 1 = cat, 2 = dog


def _pets_files(base: Path) -> list[str]:
    """What is missing or empty of oxford-iiit-pet/: at least one image in images/, and both annotation lists."""
    missing = [] if _holds_nonempty(base / "images", "*.jpg") else ["images/*.jpg"]
    return missing + [f"annotations/{n}" for n in _PETS_LISTS.values() if not _nonempty_file(base / "annotations" / n)]


def _read_pets_list(base: Path, list_name: str, skipped: list[dict]) -> tuple[list[str], list[int]]:
    """Parse one annotation list: "<image id> <class id> <species> <breed id>" per line, '#' starts a comment."""
    list_path = base / "annotations" / list_name
    try:
        text = list_path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"pets: cannot read {list_path} ({err}); delete {base} and pass --download") from err
    paths, labels = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != 4 or fields[2] not in _PETS_SPECIES:
            reason = f"not '<id> <class> <species 1|2> <breed>': {line.strip()}"
            skipped.append(skip(f"{list_path}:{number}", reason, BAD_ANNOTATION))
            continue
        path = base / "images" / f"{fields[0]}.jpg"
        if not path.is_file():
            skipped.append(skip(path, f"listed in {list_name} but missing", MISSING))
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
    def fetch() -> object:
        from torchvision.datasets import OxfordIIITPet

        return OxfordIIITPet(str(root), download=True)

    _require_files("pets", base, lambda: _pets_files(base), fetch, download=download)

    parts, skipped = {}, []
    for part, list_name in _PETS_LISTS.items():
        paths, labels = _read_pets_list(base, list_name, skipped)
        parts[part] = RawPart(labels=np.asarray(labels, dtype=np.int64), paths=paths)
    listed = {p for part in parts.values() for p in part.paths or []}
    for path in sorted((base / "images").glob("*.jpg")):
        if str(path) not in listed:
            skipped.append(skip(path, "not in trainval.txt or test.txt (unlabeled)", UNLABELLED))
    return RawDataset(classes=["cat", "dog"], parts=parts, skipped=skipped, location=str(base))


register(DatasetEntry(name="pets", description="Oxford-IIIT Pet as cat vs dog", channels=3, size=224, num_classes=2,
                      images=7349, files="oxford-iiit-pet/", official_parts=("train", "test"), default_split=None,
                      download=True, photos=True, reader=_at_root(read_pets),
                      missing_files=lambda root: _pets_files(root / "oxford-iiit-pet")))  # fmt: skip


# ----------------------------------------------------------------------------------------------------------- folder


def _class_dirs(path: Path) -> list[Path]:
    try:
        return sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    except OSError as err:
        raise UsageError(f"folder: cannot list {path} ({err.strerror}); pass a folder you can read") from err


def _image_refusal(name: str) -> tuple[str, str] | None:
    return None if _is_image(name) else ("not an image extension", NOT_AN_IMAGE)


def _scan_tree(path: Path) -> tuple[list[Path], FolderScan]:
    """The class folders of a tree, and the image files anywhere under each, following links as torchvision's
    ImageFolder does but reading each file once (see `scan_folders`)."""
    class_dirs = _class_dirs(path)
    return class_dirs, scan_folders(class_dirs, recursive=True, refuse=_image_refusal)


def read_folder(path: Path) -> RawDataset:
    """Any class-per-subfolder image tree (torchvision ImageFolder layout); class names are the sorted folder names."""
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"folder: {path} is not a directory; pass --path a folder with one subfolder per class")
    class_dirs, scan = _scan_tree(path)
    if not class_dirs:
        raise UsageError(f"folder: {path} has no class subfolders; put each class's images in {path}/<class name>/")
    if len(class_dirs) == 1:
        raise UsageError(f"folder: {path} has one class folder ({class_dirs[0].name}) and a classifier needs at least "
                         f"two; put each class's images in its own {path}/<class name>/")  # fmt: skip
    outside = [skip(f, "not inside a class folder", OUTSIDE_CLASSES) for f in sorted(path.iterdir()) if f.is_file()]
    empty = [d for d, files in zip(class_dirs, scan.files) if not files]
    if empty:
        raise UsageError(_empty_class_folders(empty, scan.skipped))
    paths = [file for files in scan.files for file, _ in files]
    labels = [label for label, files in enumerate(scan.files) for _ in files]
    part = RawPart(labels=np.asarray(labels, dtype=np.int64), paths=paths)
    classes = [d.name for d in class_dirs]
    return RawDataset(classes=classes, parts={"train": part}, skipped=outside + scan.skipped, location=str(path),
                      content=folder_digest(path, scan, classes))  # fmt: skip


def _empty_class_folders(empty: list[Path], skipped: list[dict]) -> str:
    first = empty[0]
    inside = [s for s in skipped if s["path"].startswith(f"{first}{os.sep}")]
    if inside and all(s["kind"] == DUPLICATE_LINK for s in inside):
        why = "only links to images that are read under another name"
    elif inside:
        kinds = sorted({s["kind"] for s in inside})
        why = f"no image files ({len(inside)} file(s) left out: {', '.join(kinds)})"
    else:
        why = "no image files"
    more = f" (and so do {', '.join(str(d) for d in empty[1:])})" if len(empty) > 1 else ""
    return f"folder: class folder {first} holds {why}{more}; add images to it or remove the folder"


def _folder_content(path: Path) -> str | None:
    if not path.is_dir():
        return None
    class_dirs, scan = _scan_tree(path)
    return folder_digest(path, scan, [d.name for d in class_dirs])


FOLDER_SIZE = 64  # default side for arbitrary image trees; override with --size


def _bind_folder(family: DatasetEntry, argument: str) -> DatasetEntry:
    """`folder:PATH` as a dataset of its own: its classes are counted here, its files are read from PATH."""
    name = f"{family.name}:{argument}"
    path = Path(argument).expanduser()
    if not path.is_dir():
        raise UsageError(f"dataset {name!r}: folder {str(path)!r} does not exist (expected PATH/<class>/<image>)")
    classes = _class_dirs(path)
    # Every tree shares the cache folder prefix "folder"; the key tells trees apart by their absolute path (resolved
    # without expanding ~, as caches prepared so far were keyed) and their contents (`content`).
    return replace(family, name=name, description=f"image folder {path}", num_classes=len(classes), files=str(path),
                   parameter=None, binder=None, cache_name=family.name,
                   cache_identity=f"{family.name}:{Path(argument).resolve()}")  # fmt: skip


register(DatasetEntry(name="folder", parameter="PATH", binder=_bind_folder,
                      description=f"any class-per-subfolder image tree (resized to {FOLDER_SIZE}x{FOLDER_SIZE} unless "
                                  f"--size)",
                      channels=3, size=FOLDER_SIZE, num_classes=0, images=0, files="", official_parts=("train",),
                      default_split=(0.7, 0.15, 0.15), download=False, photos=True,
                      reader=lambda entry, options: read_folder(Path(entry.files)),
                      content=lambda entry, options: _folder_content(Path(entry.files))))  # fmt: skip


# ----------------------------------------------------------------------------------------------------------- shapes
# Generated, not read from files: its generator, reader and entry are in shapes.py.
from cnnbench.data import shapes  # noqa: E402  (it imports this module's names, all defined by now)

shapes.register()
