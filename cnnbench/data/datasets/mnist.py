"""`mnist`: MNIST's IDX files in torchvision's layout, parsed here (plain or gzipped) and checked for damage."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from cnnbench.core.errors import UsageError
from cnnbench.data.datasets.base import DatasetEntry, RawDataset, RawPart, at_root, register
from cnnbench.data.datasets.download import missing_files_error, nonempty_file, run_download

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
        if nonempty_file(candidate):
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
    import torch  # here, not at the top: listing datasets (--help, budget) must not load torch

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
        from torchvision.datasets import MNIST  # only to download: torchvision loads torch

        run_download("mnist", raw, lambda: MNIST(str(root), train=True, download=True), _mnist_missing(raw))
        files = _mnist_files(raw)
    if files is None:
        raise missing_files_error("mnist", raw, _mnist_missing(raw))
    return RawDataset(
        classes=[str(d) for d in range(10)],
        parts={part: _mnist_part(*pair) for part, pair in files.items()},
        skipped=[],
        location=str(raw),
    )


register(DatasetEntry(name="mnist", description="MNIST handwritten digits (IDX files)", channels=1, size=28,
                      num_classes=10, images=70000, test_images=10000, files="MNIST/raw/", official_parts=("train", "test"),
                      default_split=None, download=True, photos=False, reader=at_root(read_mnist),
                      missing_files=lambda root: _mnist_missing(root / "MNIST" / "raw")))  # fmt: skip

