"""Turn a dataset's files into the prepared cache that `train` and `evaluate` read.

A prepared dataset is a folder `<root>/prepared/<dataset>-<key>/` where the key hashes every option that changes its
content (split ratios, seed, class subset, grayscale, size, source). It holds `manifest.json` (written last, so its
presence means the folder is complete) and either `<split>.pt` files with uint8 image tensors, for data that fits in
memory, or `index.json`, a file index that is decoded batch by batch while training. The same options always give the
same folder, the same splits and the same split hashes, so a run directory can be re-evaluated years later.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnbench import __version__
from cnnbench.data.catalog import DATASETS, DatasetEntry, get_dataset
from cnnbench.errors import UsageError
from cnnbench.storage import write_json_atomic

SPLITS = ("train", "val", "test")
MEMORY_LIMIT_BYTES = 2 * 1024**3  # above this, photo collections stay on disk as a file index
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, what PIL's convert("L") uses


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

    def content_key(self) -> dict[str, Any]:
        key = {k: v for k, v in asdict(self).items() if k not in ("root", "download", "storage")}
        entry = get_dataset(self.dataset)
        if entry.photos:  # a file index and decoded tensors are different caches
            key["storage"] = self.storage
        key["source"] = str(Path(self.source).resolve()) if self.source else None
        key["dataset"] = entry.cache_identity  # folder:PATH by its absolute path, so any working directory finds it
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


def prepared_dir(options: PrepareOptions) -> Path:
    entry = get_dataset(options.dataset)
    digest = hashlib.sha256(json.dumps(options.content_key(), sort_keys=True).encode()).hexdigest()[:12]
    return Path(options.root) / "prepared" / f"{entry.cache_name}-{digest}"


def load_or_prepare(options: PrepareOptions, *, log=None) -> Prepared:
    """The prepared dataset for these options, preparing it first if the cache does not hold it yet."""
    validate(options)  # the same answer for bad options whether or not a cache exists
    directory = prepared_dir(options)
    if (directory / "manifest.json").exists():
        return load_prepared(directory)
    return prepare(options, log=log)


def load_prepared(directory: Path) -> Prepared:
    import torch

    manifest = json.loads((directory / "manifest.json").read_text())
    splits: dict[str, SplitData] = {}
    if manifest["storage"] == "memory":
        for name in SPLITS:
            tensors = torch.load(directory / f"{name}.pt", weights_only=True)
            splits[name] = SplitData(labels=tensors["labels"], images=tensors["images"])
    else:
        index = json.loads((directory / "index.json").read_text())
        for name in SPLITS:
            splits[name] = SplitData(labels=torch.tensor(index[name]["labels"], dtype=torch.int64),
                                     paths=index[name]["paths"])  # fmt: skip
    return Prepared(directory=directory, manifest=manifest, splits=splits)


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
    raw = _read(entry, options)
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
    stage = Path(options.root) / "prepared" / f".tmp-{prepared_dir(options).name}-{time.time_ns()}"
    stage.mkdir(parents=True)
    try:
        if entry.photos:
            storage, splits, skipped, shape = _materialise_photos(raw, members, assignment, channels, size, options, log)
        else:
            storage, splits, skipped, shape = _materialise_arrays(raw, members, assignment, channels, size)
        skipped = list(raw.skipped) + skipped
        if skipped:
            log(f"warning: skipped {len(skipped)} unreadable or unlabelled file(s); listed in manifest.json")
        manifest = _manifest(entry, options, raw, classes, splits, skipped, storage, shape)
        _write_cache(stage, splits, storage, manifest)
        final = prepared_dir(options)
        if final.exists():  # another process finished first; theirs is equally valid
            shutil.rmtree(stage)
        else:
            stage.rename(final)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return load_prepared(prepared_dir(options))


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


def _split_hash(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def _manifest(entry, options, raw, classes, splits, skipped, storage, shape) -> dict[str, Any]:
    counts = {}
    for name, (data, _) in splits.items():
        per_class = np.bincount(data.labels.numpy(), minlength=len(classes)).tolist() if len(data) else [0] * len(classes)
        counts[name] = {"total": len(data), "per_class": per_class}
    if not len(splits["train"][0]):
        raise UsageError(f"{entry.name}: the train split is empty; check --split and --classes")
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


def _write_cache(stage: Path, splits, storage: str, manifest: dict[str, Any]) -> None:
    import torch

    if storage == "memory":
        for name, (data, _) in splits.items():
            torch.save({"images": data.images.contiguous(), "labels": data.labels}, stage / f"{name}.pt")
    else:
        index = {name: {"paths": data.paths, "labels": data.labels.tolist()} for name, (data, _) in splits.items()}
        write_json_atomic(stage / "index.json", index)
    write_json_atomic(stage / "manifest.json", manifest)  # last: its presence marks the folder complete
