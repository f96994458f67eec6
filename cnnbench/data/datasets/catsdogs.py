"""`catsdogs`: Kaggle Dogs vs Cats, labelled by file name, read from --source (a folder, or the Kaggle zip extracted
once under --root)."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from cnnbench.core.errors import DataMissing, UsageError
from cnnbench.data.datasets.base import NOT_AN_IMAGE, UNLABELLED, DatasetEntry, RawDataset, RawPart, register
from cnnbench.data.datasets.scan import IMAGE_EXTENSIONS, folder_digest, is_image, scan_folders

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
    return reason, UNLABELLED if is_image(name) else NOT_AN_IMAGE


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

