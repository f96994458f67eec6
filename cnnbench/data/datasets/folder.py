"""`folder:PATH`: any class-per-subfolder image tree (torchvision's ImageFolder layout), a parametrised entry that
`get_dataset("folder:PATH")` makes concrete for one tree."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from cnnbench.core.errors import UsageError
from cnnbench.data.datasets.base import (
    DUPLICATE_LINK,
    NOT_AN_IMAGE,
    OUTSIDE_CLASSES,
    DatasetEntry,
    RawDataset,
    RawPart,
    register,
    skip,
)
from cnnbench.data.datasets.scan import FolderScan, folder_digest, is_image, scan_folders


def _class_dirs(path: Path) -> list[Path]:
    try:
        return sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    except OSError as err:
        raise UsageError(f"folder: cannot list {path} ({err.strerror}); pass a folder you can read") from err


def _image_refusal(name: str) -> tuple[str, str] | None:
    return None if is_image(name) else ("not an image extension", NOT_AN_IMAGE)


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

