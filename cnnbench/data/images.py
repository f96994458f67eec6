"""Decoding image files into uint8 tensors.

Image sets on disk (flowers, pets, cats vs dogs, any folder tree) are decoded here, not in `sources.py`, so the caller
can count and report the files that fail to decode instead of crashing halfway through a dataset.

Resizing is Keras-style: straight to (size, size) with bilinear filtering, no aspect preservation, no crop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np
import torch
from PIL import Image

# How many finished files between two calls of a `progress` callback.
_PROGRESS_EVERY = 256

_MODES = {1: "L", 3: "RGB"}


class CorruptImage(Exception):
    """An image file could not be opened or decoded (truncated, garbage bytes, empty file).

    Not a `UsageError`: one bad file in a large set is data to report and skip, not a reason to stop.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def _mode(channels: int) -> str:
    if channels not in _MODES:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    return _MODES[channels]


def _reason(err: Exception) -> str:
    """One line describing why a file failed, e.g. 'OSError: image file is truncated'."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _decode_array(path: str, size: int, mode: str) -> np.ndarray:
    """Decode one file to a (size, size[, 3]) uint8 array; raise CorruptImage on any failure."""
    try:
        with Image.open(path) as img:
            # load() forces the full decode, so a truncated JPEG fails here rather than yielding grey rows.
            img.load()
            img = img.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
            return np.array(img, dtype=np.uint8)  # a writable copy, as torch.from_numpy wants
    except Exception as err:  # PIL raises OSError, ValueError, SyntaxError, struct.error... depending on the format
        raise CorruptImage(str(path), _reason(err)) from err


def _to_chw(array: np.ndarray) -> torch.Tensor:
    tensor = torch.from_numpy(array)
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


def decode_image(path: str, size: int, channels: int) -> torch.Tensor:
    """Decode `path` to a uint8 tensor (channels, size, size): grey for 1 channel, RGB for 3."""
    return _to_chw(_decode_array(path, size, _mode(channels)))


def _compact(images: torch.Tensor, failed: set[int]) -> tuple[torch.Tensor, list[int]]:
    """Move the decoded rows down over the failed ones, keeping order, without a second full-size buffer."""
    kept = [i for i in range(images.shape[0]) if i not in failed]
    if failed:
        for dst, src in enumerate(kept):
            if dst != src:
                images[dst] = images[src]
    return images[: len(kept)], kept


def decode_many(
    paths: Sequence[str],
    size: int,
    channels: int,
    workers: int = 4,
    progress: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, list[int], list[dict]]:
    """Decode every file in `paths` into one preallocated uint8 tensor (N_ok, channels, size, size).

    Threads suffice because PIL releases the GIL while decoding. Returns (images, kept, skipped): `kept` lists the
    indices into `paths` of the decoded images, in order; `skipped` holds {"path", "reason"} for each failed file.
    """
    mode = _mode(channels)
    images = torch.empty((len(paths), channels, size, size), dtype=torch.uint8)
    reasons: dict[int, str] = {}

    def work(index: int) -> None:
        try:
            images[index] = _to_chw(_decode_array(paths[index], size, mode))
        except CorruptImage as err:
            reasons[index] = err.reason

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(work, i) for i in range(len(paths))]
        for done, future in enumerate(as_completed(futures), start=1):
            future.result()
            if progress is not None and (done % _PROGRESS_EVERY == 0 or done == len(paths)):
                progress(done)

    images, kept = _compact(images, set(reasons))
    skipped = [{"path": str(paths[i]), "reason": reasons[i]} for i in sorted(reasons)]
    return images, kept, skipped


def _verify_one(path: str) -> str | None:
    """Return why `path` is unreadable, or None when it decodes.

    `Image.verify()` checks structure (e.g. PNG CRCs) but passes truncated JPEGs, so a reduced-scale decode follows:
    JPEG draft mode still reads every entropy-coded byte, which is what catches truncation, at a fraction of the cost.
    """
    try:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            img.draft(img.mode, (64, 64))
            img.load()
    except Exception as err:
        return _reason(err)
    return None


def verify_many(paths: Sequence[str], workers: int = 4) -> tuple[list[int], list[dict]]:
    """Check that every file in `paths` decodes, without keeping the pixels (for sets too large for memory).

    Returns (kept indices into `paths` in order, skipped {"path", "reason"} list).
    """
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        reasons = list(pool.map(_verify_one, paths))
    kept = [i for i, reason in enumerate(reasons) if reason is None]
    skipped = [{"path": str(paths[i]), "reason": r} for i, r in enumerate(reasons) if r is not None]
    return kept, skipped


class ImageFileDataset(torch.utils.data.Dataset):
    """Images decoded on demand, for DataLoader workers when a set is too large to decode up front.

    Run `verify_many` first: a corrupt file raises CorruptImage from `__getitem__`, which would stop the loader.
    """

    def __init__(self, paths: Sequence[str], labels: Sequence[int], size: int, channels: int) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths = [str(p) for p in paths]
        self.labels = [int(label) for label in labels]
        self.size = size
        self.channels = channels
        _mode(channels)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return decode_image(self.paths[index], self.size, self.channels), self.labels[index]
