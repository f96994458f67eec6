"""`pets`: Oxford-IIIT Pet in torchvision's layout, read as cat vs dog from its official annotation lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnbench.core.errors import UsageError
from cnnbench.data.datasets.base import (
    BAD_ANNOTATION,
    MISSING,
    UNLABELLED,
    DatasetEntry,
    RawDataset,
    RawPart,
    at_root,
    register,
    skip,
)
from cnnbench.data.datasets.download import holds_nonempty, nonempty_file, require_files

_PETS_LISTS = {"train": "trainval.txt", "test": "test.txt"}
_PETS_SPECIES = {"1": 0, "2": 1}  # annotation column 3: 1 = cat, 2 = dog


def _pets_files(base: Path) -> list[str]:
    """What is missing or empty of oxford-iiit-pet/: at least one image in images/, and both annotation lists."""
    missing = [] if holds_nonempty(base / "images", "*.jpg") else ["images/*.jpg"]
    return missing + [f"annotations/{n}" for n in _PETS_LISTS.values() if not nonempty_file(base / "annotations" / n)]


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
        from torchvision.datasets import OxfordIIITPet  # only to download: torchvision loads torch

        return OxfordIIITPet(str(root), download=True)

    require_files("pets", base, lambda: _pets_files(base), fetch, download=download)

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
                      images=7349, test_images=3669, files="oxford-iiit-pet/", official_parts=("train", "test"), default_split=None,
                      download=True, photos=True, reader=at_root(read_pets),
                      missing_files=lambda root: _pets_files(root / "oxford-iiit-pet")))  # fmt: skip

