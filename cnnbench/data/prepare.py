"""Turn a dataset's files into the prepared cache that `train` and `evaluate` read.

A prepared dataset is a folder `<root>/prepared/<dataset>-<key>/` where the key hashes every option that changes its
content (split ratios, seed, class subset, grayscale, size, source) and, for image files read in place (folder:PATH,
catsdogs), every image's name, size and modification time, so a changed tree is prepared again. It holds
`manifest.json` (written last, so its presence means the folder is complete) and either `<split>.pt` files with uint8
image tensors, for data that fits in memory, or `index.json`, a file index that is decoded batch by batch while
training; the manifest records each of those files' size and SHA-256, checked whenever the cache is read. The same
options always give the same folder, the same splits and the same split hashes, so a run directory can be re-evaluated
years later.

A prepare writes into a staging folder `.tmp-<cache>@<host>@<pid>@<ns>` beside the cache and renames it into place;
the staging folders of prepares that were killed are removed by the next prepare under the same root.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnbench import __version__
from cnnbench.data.catalog import DATASETS, DatasetEntry, get_dataset
from cnnbench.data.sources import UNREADABLE
from cnnbench.errors import DataMissing, UsageError
from cnnbench.storage import unwritable, jsonable, write_atomic

SPLITS = ("train", "val", "test")
MEMORY_LIMIT_BYTES = 2 * 1024**3  # above this, photo collections stay on disk as a file index
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, what PIL's convert("L") uses
MANIFEST = "manifest.json"
INDEX = "index.json"
STAGING_PREFIX = ".tmp-"
# A staging folder whose owner cannot be asked (another host, or a name without an owner) is left alone this long: a
# prepare only stages while it writes the cache, which takes minutes at most.
STALE_STAGING_SECONDS = 3600
_MANIFEST_KEYS = ("dataset", "classes", "input", "storage", "counts", "split_hashes", "skipped", "normalization")


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


@dataclass
class SplitData:
    labels: Any  # torch.int64 tensor (N,)
    images: Any = None  # torch.uint8 tensor (N, C, H, W) when held in memory
    paths: list[str] | None = None  # image files when streamed from disk

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Prepared:
    directory: Path
    manifest: dict[str, Any]
    splits: dict[str, SplitData] = field(repr=False)

    @property
    def input_spec(self):
        from cnnbench.models.zoo import InputSpec  # here, not at import: the CLI reads PrepareOptions without torch

        return InputSpec(**self.manifest["input"])

    @property
    def classes(self) -> list[str]:
        return self.manifest["classes"]

    @property
    def in_memory(self) -> bool:
        return self.manifest["storage"] == "memory"

    @property
    def mean(self) -> list[float]:
        return self.manifest["normalization"]["mean"]

    @property
    def std(self) -> list[float]:
        return self.manifest["normalization"]["std"]


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


def prepared_dir(options: PrepareOptions, *, files: str | None = None) -> Path:
    entry = get_dataset(options.dataset)
    digest = hashlib.sha256(json.dumps(options.content_key(files), sort_keys=True).encode()).hexdigest()[:12]
    return Path(options.root) / "prepared" / f"{entry.cache_name}-{digest}"


def load_or_prepare(options: PrepareOptions, *, log=None) -> Prepared:
    """The prepared dataset for these options, preparing it first if the cache does not hold it yet."""
    validate(options)  # the same answer for bad options whether or not a cache exists
    directory = prepared_dir(options)
    if (directory / MANIFEST).exists():
        try:
            return load_prepared(directory)
        except DamagedCache as damage:
            # The manifest is written last, so an unreadable one means the folder never became a complete cache (a
            # copy cut short, a disk filling up): nothing in it can be trusted, and preparing again is exactly what
            # a missing manifest triggers. A damaged data file under a sound manifest is different: the cache was
            # complete and changed afterwards (a failing disk, a hand edit), so load_prepared refuses it and lets the
            # user see that, instead of papering over it.
            if damage.path.name != MANIFEST:
                raise
            (log or (lambda message: None))(f"warning: {damage.path} is damaged ({damage.problem}); preparing again")
            try:
                return prepare(options, log=log)
            except DataMissing as missing:
                raise DataMissing(f"{damage.path} is damaged ({damage.problem}) and the dataset cannot be prepared "
                                  f"again: {missing}") from missing  # fmt: skip
    return prepare(options, log=log)


class DamagedCache(UsageError):
    """A file of a prepared cache that is missing, truncated, or not what was written: never used."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"prepared cache file {path} is damaged ({problem}); delete {self.path.parent} and prepare "
                         f"again")  # fmt: skip


def read_manifest(directory: Path) -> dict[str, Any]:
    """A cache folder's manifest, checked for the entries every reader of it needs."""
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise DamagedCache(path, "missing") from None
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror}") from err
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError both are
        raise DamagedCache(path, f"not JSON: {_one_line(err)}") from err
    if not isinstance(manifest, dict):
        raise DamagedCache(path, "not a JSON object")
    absent = [key for key in _MANIFEST_KEYS if key not in manifest]
    if absent:
        raise DamagedCache(path, f"no {', '.join(absent)} entry")
    malformed = _malformed_entries(manifest)
    if malformed:
        raise DamagedCache(path, f"malformed {', '.join(malformed)} entry")
    return manifest


def _malformed_entries(manifest: dict[str, Any]) -> list[str]:
    """The manifest entries that readers use and that do not have the shape prepare writes."""
    shape, counts, files = manifest["input"], manifest["counts"], manifest.get("files", {})
    sound = {
        "storage": manifest["storage"] in ("memory", "files"),
        "input": isinstance(shape, dict)
        and all(isinstance(shape.get(k), int) for k in ("channels", "height", "width", "num_classes")),
        "counts": isinstance(counts, dict)
        and all(isinstance(counts.get(name), dict) and isinstance(counts[name].get("total"), int) for name in SPLITS),
        "classes": isinstance(manifest["classes"], list)
        and isinstance(shape, dict) and len(manifest["classes"]) == shape.get("num_classes"),
        "files": isinstance(files, dict)
        and all(isinstance(f, dict) and isinstance(f.get("bytes"), int) and isinstance(f.get("sha256"), str)
                for f in files.values()),
    }  # fmt: skip
    return [name for name, ok in sound.items() if not ok]


def load_prepared(directory: Path) -> Prepared:
    """Read a prepared cache, checking every file against the manifest: a damaged file raises DamagedCache."""
    import torch

    directory = Path(directory)
    manifest = read_manifest(directory)
    written = manifest.get("files", {})  # size and SHA-256 of each file (caches from before them: not checked)
    splits: dict[str, SplitData] = {}
    if manifest["storage"] == "memory":
        for name in SPLITS:
            path = directory / f"{name}.pt"
            _check_written(path, written.get(path.name))
            try:
                tensors = torch.load(path, weights_only=True)
                splits[name] = SplitData(labels=tensors["labels"], images=tensors["images"])
            except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError... for a damaged file
                raise DamagedCache(path, f"it does not load: {_one_line(err)}") from err
            _check_split(path, splits[name], manifest, name)
    else:
        path = directory / INDEX
        _check_written(path, written.get(INDEX))
        try:
            index = json.loads(path.read_text())
            for name in SPLITS:
                paths, labels = index[name]["paths"], index[name]["labels"]
                if not all(isinstance(p, str) for p in paths):
                    raise TypeError("a path that is not a string")
                splits[name] = SplitData(labels=torch.tensor(labels, dtype=torch.int64), paths=paths)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
            raise DamagedCache(path, f"not a file index: {_one_line(err)}") from err
        for name in SPLITS:
            _check_split(path, splits[name], manifest, name)
    return Prepared(directory=directory, manifest=manifest, splits=splits)


def _check_written(path: Path, written: dict | None) -> None:
    """`path` exists and, when the manifest recorded them, has the size and SHA-256 it was written with.

    torch.load reads a tensor file with a flipped byte without complaint (it checks no CRC), so the digest is what
    keeps a damaged file from being trained on; hashing costs about what reading the file costs.
    """
    try:
        size = path.stat().st_size
    except OSError:
        raise DamagedCache(path, "missing") from None
    if written is None:
        return
    if size != written["bytes"]:
        raise DamagedCache(path, f"{size:,} bytes where {written['bytes']:,} were written")
    if _sha256(path) != written["sha256"]:
        raise DamagedCache(path, "its contents differ from those written (SHA-256 mismatch)")


def _check_split(path: Path, split: SplitData, manifest: dict[str, Any], name: str) -> None:
    """The split holds what the manifest says: its count, labels within the classes and (in memory) the image shape."""
    import torch

    shape = manifest["input"]
    expected = manifest["counts"][name]["total"]
    labels = split.labels
    problem = None
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.ndim != 1:
        problem = "its labels are not a 1-D int64 tensor"
    elif len(labels) != expected:
        problem = f"{len(labels):,} {name} labels where the manifest counts {expected:,}"
    elif len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= shape["num_classes"]):
        problem = f"{name} labels outside 0..{shape['num_classes'] - 1}"
    elif split.images is not None:
        images = split.images
        wanted = (expected, shape["channels"], shape["height"], shape["width"])
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or tuple(images.shape) != wanted:
            problem = f"its {name} images are not uint8 of shape {wanted}"
    elif split.paths is None or len(split.paths) != expected:
        problem = f"the {name} paths do not match the {expected:,} labels"
    if problem is not None:
        raise DamagedCache(path, problem)


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:200]}" if text else type(err).__name__


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


def prepare(options: PrepareOptions, *, log=None) -> Prepared:
    """Read the dataset's files, split, subset, resize, and write the prepared cache (atomically, as one folder)."""
    entry = validate(options)
    log = log or (lambda message: None)
    cache_root = _writable_cache_root(options)  # before reading: a read-only --root should not cost a decode first
    _remove_stale_staging(cache_root)
    raw = _read(entry, options)
    # Keyed by the files the read found, after it: reading may extract an archive whose files are then part of the key.
    # Files changed later (while decoding) change the key of the next prepare, which prepares again: the safe direction.
    final = prepared_dir(options, files=raw.content)
    members = _members(raw)  # (part, index in part) for every labelled image, with its label
    labels = np.array([label for _, _, label in members], dtype=np.int64)
    classes = list(raw.classes)
    rng = np.random.default_rng(options.seed)

    if options.classes is not None:
        chosen = np.sort(rng.choice(len(classes), size=options.classes, replace=False))
        remap = {int(old): new for new, old in enumerate(chosen)}
        keep = np.isin(labels, chosen)
        members = [(p, i, remap[int(lab)]) for (p, i, lab), k in zip(members, keep) if k]
        labels = np.array([lab for _, _, lab in members], dtype=np.int64)
        classes = [classes[i] for i in chosen]

    assignment = _assign_splits(members, labels, entry, options, rng)
    channels = 1 if options.grayscale else entry.channels
    size = options.size or (entry.size if entry.photos else None)
    if entry.photos:
        storage, splits, skipped, shape = _materialise_photos(raw, members, assignment, channels, size, options, log)
    else:
        storage, splits, skipped, shape = _materialise_arrays(raw, members, assignment, channels, size)
    skipped = list(raw.skipped) + skipped
    _check_classes(entry, raw, classes, splits, skipped, log)
    if skipped:
        log(f"warning: skipped {len(skipped)} file(s): {_counts_text(_skipped_by_reason(skipped))}; listed in "
            f"{final / MANIFEST}")  # fmt: skip
    manifest = _manifest(entry, options, raw, classes, splits, skipped, storage, shape)
    _store(cache_root, final, splits, storage, manifest)
    return load_prepared(final)


def _read(entry: DatasetEntry, options: PrepareOptions):
    return entry.read(options)  # validate() has refused a --source the dataset does not read


def _members(raw) -> list[tuple[str, int, int]]:
    return [(part_name, i, int(label)) for part_name, part in raw.parts.items() for i, label in enumerate(part.labels)]


def _assign_splits(members, labels, entry: DatasetEntry, options: PrepareOptions, rng) -> np.ndarray:
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


def _materialise_arrays(raw, members, assignment, channels: int, size: int | None):
    import torch

    splits = {}
    for code, name in enumerate(SPLITS):
        # members are grouped by part and ordered within it, so concatenating per part keeps images and labels aligned
        chosen = [m for m, a in zip(members, assignment) if a == code]
        images = torch.cat([
            part.images[torch.tensor([i for q, i, _ in chosen if q == part_name], dtype=torch.int64)]
            for part_name, part in raw.parts.items()
        ])  # fmt: skip
        images = _convert(images, channels, size)
        labels = torch.tensor([lab for _, _, lab in chosen], dtype=torch.int64)
        splits[name] = (SplitData(labels=labels, images=images), [f"{p}:{i}" for p, i, _ in chosen])
    shape = tuple(splits["train"][0].images.shape[1:])
    return "memory", splits, [], shape


def _convert(images, channels: int, size: int | None):
    """uint8 (N, C, H, W) -> the requested channels and side, still uint8."""
    import torch
    import torch.nn.functional as F

    if images.shape[1] == 3 and channels == 1:
        weights = torch.tensor(LUMA).view(1, 3, 1, 1)
        images = (images.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    if size is not None and tuple(images.shape[2:]) != (size, size):
        out = torch.empty(images.shape[0], images.shape[1], size, size, dtype=torch.uint8)
        for start in range(0, images.shape[0], 4096):  # chunks keep the float copy small
            chunk = images[start : start + 4096].float()
            resized = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            out[start : start + 4096] = resized.round().clamp(0, 255).to(torch.uint8)
        images = out
    return images


def _materialise_photos(raw, members, assignment, channels: int, size: int, options: PrepareOptions, log):
    import torch

    from cnnbench.data.images import decode_many, verify_many

    need = len(members) * channels * size * size
    storage = options.storage if options.storage != "auto" else ("memory" if need <= MEMORY_LIMIT_BYTES else "files")
    log(f"reading {len(members):,} images ({'into memory' if storage == 'memory' else 'as a file index'})")
    splits, skipped = {}, []
    for code, name in enumerate(SPLITS):
        chosen = [m for m, a in zip(members, assignment) if a == code]
        paths = [raw.parts[p].paths[i] for p, i, _ in chosen]
        if storage == "memory":
            images, kept, bad = decode_many(paths, size, channels)
        else:
            kept, bad = verify_many(paths)
            images = None
        skipped += bad
        labels = torch.tensor([chosen[k][2] for k in kept], dtype=torch.int64)
        kept_paths = [paths[k] for k in kept]
        splits[name] = (SplitData(labels=labels, images=images, paths=kept_paths), _relative(kept_paths, raw.location))
    return storage, splits, skipped, (channels, size, size)


def _relative(paths: list[str], location: str) -> list[str]:
    base = Path(location)
    out = []
    for p in paths:
        try:
            out.append(str(Path(p).relative_to(base)))
        except ValueError:
            out.append(str(p))
    return out


# ------------------------------------------------------------------------------------------------- classes and skips


def _check_classes(entry: DatasetEntry, raw, classes: list[str], splits, skipped: list[dict], log) -> None:
    """Refuse a dataset a classifier cannot be trained on, naming the class; warn where it cannot be measured.

    A class with no images at all (none there, or every file of it skipped) is an output the model is never shown,
    and a class with images but none in the train split can never be learned, while each of its val or test images
    is an error that looks like the model's fault: both are refused. A class with train images but none in val or
    test (one image and three splits, a rare class under a small ratio) is learned but not measured there: a careful
    user wants to know, yet may well accept it for a rare class, so that is a warning naming the classes.
    """
    counts = {name: np.bincount(data.labels.numpy(), minlength=len(classes)) for name, (data, _) in splits.items()}
    total = sum(counts.values())
    if not total.any():
        raise UsageError(f"{entry.name}: no readable images, so the train split is empty{_skip_note(skipped)}; "
                         f"check the files under {raw.location}")  # fmt: skip
    empty = [classes[c] for c in np.flatnonzero(total == 0)]
    if empty:
        raise UsageError(_no_images(entry, raw, empty, skipped))
    untrained = np.flatnonzero(counts["train"] == 0)
    if untrained.size:
        c = int(untrained[0])
        where = ", ".join(f"{int(counts[name][c])} in {name}" for name in SPLITS)
        more = _and_more([classes[i] for i in untrained[1:]])
        raise UsageError(f"{entry.name}: class {classes[c]!r}{more} has no image in the train split ({where}), so it "
                         f"cannot be learned; add images to it, or give --split a larger train share")  # fmt: skip
    unmeasured = []
    for c, name in enumerate(classes):
        absent = [split for split in ("val", "test") if counts[split].any() and counts[split][c] == 0]
        if absent:
            unmeasured.append(f"{name!r} (none in {' or '.join(absent)})")
    if unmeasured:
        shown = ", ".join(unmeasured[:5]) + (f" and {len(unmeasured) - 5} more" if len(unmeasured) > 5 else "")
        log(f"warning: {len(unmeasured)} class(es) have no image in a split they are measured on: {shown}; add images "
            f"to them, or expect no score for them there")  # fmt: skip


def _no_images(entry: DatasetEntry, raw, empty: list[str], skipped: list[dict]) -> str:
    name = empty[0]
    folder = Path(raw.location) / name
    if folder.is_dir():  # classes are folders (folder:PATH): say which, and what was left out of it
        inside = [s for s in skipped if str(s["path"]).startswith(f"{folder}{os.sep}")]
        return (f"{entry.name}: class {name!r} ({folder}){_and_more(empty[1:])} has no readable images"
                f"{_skip_note(inside)}; add readable images to it or remove the folder")
    refetch = " (delete them and pass --download)" if entry.download else ""
    return (f"{entry.name}: class {name!r}{_and_more(empty[1:])} has no readable images under {raw.location}"
            f"{_skip_note(skipped)}; the files there look incomplete: check them{refetch}")


def _and_more(names: list[str]) -> str:
    if not names:
        return ""
    shown = ", ".join(repr(n) for n in names[:5])
    return f" (and {shown}{f' and {len(names) - 5} more' if len(names) > 5 else ''})"


def _skipped_by_reason(skipped: list[dict]) -> dict[str, int]:
    """How many files were left out for each kind of reason, most first."""
    counts = Counter(s.get("kind", UNREADABLE) for s in skipped)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _counts_text(by_reason: dict[str, int]) -> str:
    return ", ".join(f"{count} {kind}" for kind, count in by_reason.items())


def _skip_note(skipped: list[dict]) -> str:
    return f" ({len(skipped)} file(s) skipped: {_counts_text(_skipped_by_reason(skipped))})" if skipped else ""


def _split_hash(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def _manifest(entry, options, raw, classes, splits, skipped, storage, shape) -> dict[str, Any]:
    counts = {}
    for name, (data, _) in splits.items():
        per_class = np.bincount(data.labels.numpy(), minlength=len(classes)).tolist() if len(data) else [0] * len(classes)
        counts[name] = {"total": len(data), "per_class": per_class}
    mean, std = _normalization(splits["train"][0], shape[0])
    return {
        "dataset": entry.name,
        "description": entry.description,
        "source": raw.location,
        "options": options.to_dict(),
        "classes": classes,
        "input": {"channels": shape[0], "height": shape[1], "width": shape[2], "num_classes": len(classes)},
        "storage": storage,
        "counts": counts,
        "split_hashes": {name: _split_hash(ids) for name, (_, ids) in splits.items()},
        "skipped": skipped,
        "skipped_by_reason": _skipped_by_reason(skipped),
        "normalization": {"mean": mean, "std": std, "computed_on": "train split"},
        "synthetic": False,
        "cnnbench_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _normalization(train: SplitData, channels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the train split in [0, 1] units (a sample of 2,000 images for file indexes)."""
    import torch

    if train.images is not None:
        images = train.images
    else:
        from cnnbench.data.images import decode_many

        step = max(1, len(train.paths) // 2000)
        images, _, _ = decode_many(train.paths[::step], 64, channels)
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], 4096):
        chunk = images[start : start + 4096].double() / 255.0
        total += chunk.sum(dim=(0, 2, 3))
        total_sq += (chunk**2).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean**2).clamp_min(1e-12).sqrt()
    return [round(float(m), 6) for m in mean], [round(float(s), 6) for s in std]


# ------------------------------------------------------------------------------------------------ writing the cache


def _writable_cache_root(options: PrepareOptions) -> Path:
    """ROOT/prepared, once it is clear the cache can be written there (nothing is created yet: a prepare that fails
    for missing files leaves no folders behind)."""
    cache_root = Path(options.root) / "prepared"
    existing = cache_root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"cannot write the prepared cache under {cache_root}: {existing} is a file, not a folder; "
                         f"pass --root a folder")  # fmt: skip
    effective = {"effective_ids": True} if os.access in os.supports_effective_ids else {}
    if not os.access(existing, os.W_OK | os.X_OK, **effective):
        reason = os.strerror(errno.EROFS if _read_only(existing) else errno.EACCES)
        raise UsageError(f"cannot write the prepared cache under {cache_root}: {reason} ({existing}); pass --root a "
                         f"folder you can write to")  # fmt: skip
    return cache_root


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (AttributeError, OSError):  # no statvfs (Windows)
        return False


def _store(cache_root: Path, final: Path, splits, storage: str, manifest: dict[str, Any]) -> None:
    """Write the cache into a staging folder and rename it into place; any OS error becomes one line saying what to do,
    and the staging folder is removed whatever happens."""
    stage = cache_root / _staging_name(final.name)
    try:
        cache_root.mkdir(parents=True, exist_ok=True)
        stage.mkdir()
        manifest["files"] = _write_cache(stage, splits, storage)
        _write_json(stage / MANIFEST, manifest)  # last: its presence marks the folder complete
        _publish(stage, final)
    except OSError as err:
        shutil.rmtree(stage, ignore_errors=True)
        raise _cannot_write(cache_root, err, _cache_bytes(splits, storage)) from err
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _write_cache(stage: Path, splits, storage: str) -> dict[str, dict[str, Any]]:
    """Write the data files; returns each one's size and SHA-256, for the manifest."""
    if storage == "memory":
        for name, (data, _) in splits.items():
            tensors = {"images": data.images.contiguous(), "labels": data.labels}
            write_atomic(stage / f"{name}.pt", lambda handle, tensors=tensors: _save_tensors(tensors, handle))
        names = [f"{name}.pt" for name in splits]
    else:
        index = {name: {"paths": data.paths, "labels": data.labels.tolist()} for name, (data, _) in splits.items()}
        _write_json(stage / INDEX, index)
        names = [INDEX]
    return {name: {"bytes": (stage / name).stat().st_size, "sha256": _sha256(stage / name)} for name in names}


class _WriteErrorKeeper:
    """A file for torch.save that keeps the OSError of a failed write: torch reports a full disk as a RuntimeError about
    stream positions, which would hide "No space left on device" behind an internal-looking error."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self) -> None:
        self.handle.flush()


def _save_tensors(tensors: dict[str, Any], handle) -> None:
    import torch

    keeper = _WriteErrorKeeper(handle)
    try:
        torch.save(tensors, keeper)
    except RuntimeError as err:
        if keeper.error is not None:
            raise keeper.error from err
        raise


def _write_json(path: Path, data: Any) -> None:
    text = json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n"
    write_atomic(path, lambda handle: handle.write(text.encode()))


def _publish(stage: Path, final: Path) -> None:
    """Rename the staging folder to `final`. A complete cache already there (another process finished first) is kept:
    it is equally valid. One with a damaged manifest is replaced (load_or_prepare decided to prepare it again)."""
    if final.exists():
        try:
            read_manifest(final)
        except UsageError:
            aside = final.parent / _staging_name(final.name)
            final.rename(aside)
            stage.rename(final)
            shutil.rmtree(aside, ignore_errors=True)
            return
        shutil.rmtree(stage)
        return
    try:
        stage.rename(final)
    except OSError as err:  # it appeared since the check: another process finished first
        if err.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not (final / MANIFEST).exists():
            raise
        shutil.rmtree(stage)


def _cache_bytes(splits, storage: str) -> int | None:
    if storage != "memory":
        return None
    return sum(data.images.numel() + data.labels.numel() * 8 for data, _ in splits.values())


def _human_bytes(count: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:,.1f} {unit}"
    return f"{count} bytes"


def _cannot_write(cache_root: Path, err: OSError, need: int | None) -> UsageError:
    message = unwritable(cache_root, err, elsewhere="pass --root a folder you can write to")
    if err.errno in (errno.ENOSPC, errno.EDQUOT) and need:
        message += f" (the prepared images alone take {_human_bytes(need)})"
    return UsageError(message)


# ------------------------------------------------------------------------------------------ stale staging folders


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "unknown"


def _staging_name(final_name: str) -> str:
    """A staging folder's name says whose it is (host and pid), so a later prepare can tell a dead one's leftovers
    from a live one's work in progress."""
    return f"{STAGING_PREFIX}{final_name}@{_host()}@{os.getpid()}@{time.time_ns()}"


def _remove_stale_staging(cache_root: Path) -> None:
    """Remove the staging folders that prepares killed while writing left under `cache_root`."""
    try:
        leftovers = [path for path in cache_root.iterdir() if path.name.startswith(STAGING_PREFIX)]
    except OSError:
        return
    for path in leftovers:
        if path.is_dir() and not path.is_symlink() and _stale(path):
            shutil.rmtree(path, ignore_errors=True)


def _stale(path: Path) -> bool:
    """Whether a staging folder's owner is gone: a pid of this host that no longer runs, or, where the owner cannot be
    asked (another host sharing the folder, a name from before owners were recorded), an hour without it finishing."""
    owner = path.name[len(STAGING_PREFIX) :].split("@")
    if len(owner) == 4 and owner[2].isdigit():
        if owner[1] == _host():
            return not _alive(int(owner[2]))
        if owner[3].isdigit():
            return time.time() - int(owner[3]) / 1e9 > STALE_STAGING_SECONDS
    try:
        return time.time() - path.stat().st_mtime > STALE_STAGING_SECONDS
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it runs, as another user
        return True
    return True
