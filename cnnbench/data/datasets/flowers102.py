"""`flowers102`: Oxford Flowers-102 in torchvision's layout, its images listed by the official split in setid.mat."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnbench.core.errors import UsageError
from cnnbench.data.datasets.base import MISSING, UNLABELLED, DatasetEntry, RawDataset, RawPart, at_root, register, skip
from cnnbench.data.datasets.download import holds_nonempty, nonempty_file, require_files

_FLOWERS_SPLITS = {"train": "trnid", "val": "valid", "test": "tstid"}
_FLOWERS_CLASSES = 102


def _flowers_classes() -> list[str]:
    """Real class names when this torchvision exposes them (0.17+ does), else "1".."102"."""
    from torchvision.datasets import Flowers102  # only when reading: torchvision loads torch

    names = getattr(Flowers102, "classes", None)
    if names is not None and len(names) == _FLOWERS_CLASSES:
        return list(names)
    return [str(i) for i in range(1, _FLOWERS_CLASSES + 1)]


def _load_mat(path: Path, keys: list[str]) -> dict[str, np.ndarray]:
    from scipy.io import loadmat  # only to read: scipy adds half a second to every start

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
    missing = [] if holds_nonempty(base / "jpg", "*.jpg") else ["jpg/image_*.jpg"]
    return missing + [n for n in ("imagelabels.mat", "setid.mat") if not nonempty_file(base / n)]


def read_flowers102(root: Path, *, download: bool = False) -> RawDataset:
    """Oxford Flowers-102 in torchvision's layout root/flowers-102/{jpg/, imagelabels.mat, setid.mat}.

    Labels in imagelabels.mat are 1-based (1..102) and are shifted to 0..101; setid.mat lists the official train / val /
    test image numbers (1-based, image_00001.jpg is number 1). Listed images absent from jpg/ go to `skipped`.
    """
    base = Path(root) / "flowers-102"
    def fetch() -> object:
        from torchvision.datasets import Flowers102  # only to download: torchvision loads torch

        return Flowers102(str(root), download=True)

    require_files("flowers102", base, lambda: _flowers_files(base), fetch, download=download)

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
                      channels=3, size=224, num_classes=102, images=8189, test_images=6149, files="flowers-102/",
                      official_parts=("train", "val", "test"), default_split=None, download=True, photos=True,
                      reader=at_root(read_flowers102),
                      missing_files=lambda root: _flowers_files(root / "flowers-102")))  # fmt: skip

