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

This module reads a dataset, turns its images into the splits' tensors or file index and checks its classes; its
other jobs have a module each: options.py (PrepareOptions, --split), cache.py (where a cache is, reading and checking
it), splitting.py (which split each image goes to) and staging.py (writing the cache, removing leftovers). The names
other packages use are all importable from here.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from cnnbench import __version__
from cnnbench.core.errors import DataMissing, UsageError
from cnnbench.data.cache import (
    INDEX,
    MANIFEST,
    SPLITS,
    DamagedCache,
    Prepared,
    SplitData,
    load_prepared,
    prepared_dir,
    read_manifest,
)
from cnnbench.data.catalog import DatasetEntry
from cnnbench.data.datasets.base import UNREADABLE
from cnnbench.data.options import PrepareOptions, parse_split, validate
from cnnbench.data.splitting import assign_splits, list_members
from cnnbench.data.staging import remove_stale_staging, store, writable_cache_root

logger = logging.getLogger(__name__)

MEMORY_LIMIT_BYTES = 2 * 1024**3  # above this, photo collections stay on disk as a file index
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, what PIL's convert("L") uses


def load_or_prepare(options: PrepareOptions) -> Prepared:
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
            logger.warning(f"{damage.path} is damaged ({damage.problem}); preparing again")
            try:
                return prepare(options)
            except DataMissing as missing:
                raise DataMissing(f"{damage.path} is damaged ({damage.problem}) and the dataset cannot be prepared "
                                  f"again: {missing}") from missing  # fmt: skip
    return prepare(options)


def prepare(options: PrepareOptions) -> Prepared:
    """Read the dataset's files, split, subset, resize, and write the prepared cache (atomically, as one folder)."""
    entry = validate(options)
    cache_root = writable_cache_root(options)  # before reading: a read-only --root should not cost a decode first
    remove_stale_staging(cache_root)
    raw = _read(entry, options)
    # Keyed by the files the read found, after it: reading may extract an archive whose files are then part of the key.
    # Files changed later (while decoding) change the key of the next prepare, which prepares again: the safe direction.
    final = prepared_dir(options, files=raw.content)
    members = list_members(raw)  # (part, index in part) for every labelled image, with its label
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

    assignment = assign_splits(members, labels, entry, options, rng)
    channels = 1 if options.grayscale else entry.channels
    size = options.size or (entry.size if entry.photos else None)
    if entry.photos:
        storage, splits, skipped, shape = _materialise_photos(raw, members, assignment, channels, size, options)
    else:
        storage, splits, skipped, shape = _materialise_arrays(raw, members, assignment, channels, size)
    skipped = list(raw.skipped) + skipped
    _check_classes(entry, raw, classes, splits, skipped)
    if skipped:
        logger.warning(f"skipped {len(skipped)} file(s): {_counts_text(_skipped_by_reason(skipped))}; listed in "
                       f"{final / MANIFEST}")  # fmt: skip
    manifest = _manifest(entry, options, raw, classes, splits, skipped, storage, shape)
    store(cache_root, final, splits, storage, manifest)
    return load_prepared(final)


def _read(entry: DatasetEntry, options: PrepareOptions):
    return entry.read(options)  # validate() has refused a --source the dataset does not read


def _materialise_arrays(raw, members, assignment, channels: int, size: int | None):
    import torch  # here, not at the top: the CLI imports cnnbench.data.prepare without torch

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
    import torch  # here, not at the top: the CLI imports cnnbench.data.prepare without torch
    import torch.nn.functional as F  # likewise

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


def _materialise_photos(raw, members, assignment, channels: int, size: int, options: PrepareOptions):
    import torch  # here, not at the top: the CLI imports cnnbench.data.prepare without torch

    from cnnbench.data.images import decode_many, verify_many  # images.py imports torch and PIL

    need = len(members) * channels * size * size
    storage = options.storage if options.storage != "auto" else ("memory" if need <= MEMORY_LIMIT_BYTES else "files")
    logger.info(f"reading {len(members):,} images ({'into memory' if storage == 'memory' else 'as a file index'})")
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


def _check_classes(entry: DatasetEntry, raw, classes: list[str], splits, skipped: list[dict]) -> None:
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
        logger.warning(f"{len(unmeasured)} class(es) have no image in a split they are measured on: {shown}; add "
                       f"images to them, or expect no score for them there")  # fmt: skip


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
    import torch  # here, not at the top: the CLI imports cnnbench.data.prepare without torch

    if train.images is not None:
        images = train.images
    else:
        from cnnbench.data.images import decode_many  # images.py imports torch and PIL

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


__all__ = [
    "INDEX",
    "MANIFEST",
    "SPLITS",
    "DamagedCache",
    "PrepareOptions",
    "Prepared",
    "SplitData",
    "load_or_prepare",
    "load_prepared",
    "parse_split",
    "prepare",
    "prepared_dir",
    "read_manifest",
    "validate",
]
