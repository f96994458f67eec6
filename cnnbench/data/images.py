"""Decoding image files into uint8 tensors.

Image sets on disk (flowers, pets, cats vs dogs, any folder tree) are decoded here, not by their readers in
cnnbench.data.datasets, so the caller can count and report the files that fail to decode instead of crashing halfway
through a dataset.

Every decoded image goes through `to_8bit`, the one conversion from whatever Pillow opened (palette, alpha, CMYK,
16-bit, float, 1-bit...) to 8-bit L or RGB: the prepared cache, the file index decoded while training and the
normalisation statistics therefore see the same pixels.

Resizing is Keras-style: straight to (size, size) with bilinear filtering, no aspect preservation, no crop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from cnnbench.data.datasets.base import NOT_AN_IMAGE, TRUNCATED, UNREADABLE, skip

# How many finished files between two calls of a `progress` callback.
_PROGRESS_EVERY = 256

_MODES = {1: "L", 3: "RGB"}


class CorruptImage(Exception):
    """An image file could not be opened or decoded (truncated, garbage bytes, empty file).

    Not a `UsageError`: one bad file in a large set is data to report and skip, not a reason to stop. `kind` is one
    of NOT_AN_IMAGE, TRUNCATED or UNREADABLE.
    """

    def __init__(self, path: str, reason: str, kind: str = UNREADABLE) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
        self.kind = kind


def _mode(channels: int) -> str:
    if channels not in _MODES:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    return _MODES[channels]


def _reason(err: Exception) -> str:
    """One line describing why a file failed, e.g. 'OSError: image file is truncated'."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _kind(err: Exception) -> str:
    """The manifest's category for a decoding failure."""
    if isinstance(err, UnidentifiedImageError):  # garbage bytes, an empty file, a format Pillow does not know
        return NOT_AN_IMAGE
    if isinstance(err, EOFError) or "truncated" in str(err).lower():
        return TRUNCATED
    return UNREADABLE


def _skipped(path: str, err: CorruptImage) -> dict:
    return skip(path, err.reason, err.kind)


# ------------------------------------------------------------------------------------------------ to 8-bit L or RGB


def to_8bit(img: Image.Image, mode: str) -> Image.Image:
    """`img` in any mode Pillow opens, as 8-bit `mode` ("L" or "RGB").

    Pillow's own `convert` clips wide values instead of scaling them (a 16-bit grey of 1,000 becomes 255) and cannot
    convert every mode, so the wide and alpha modes are converted here:
    - 1 (bilevel): 0 and 255.
    - P (palette): the palette's colours; with transparency, composited over black like the alpha modes below.
    - LA, RGBA, PA: composited over black (colour x alpha / 255). The colour of a transparent pixel is undefined
      (optimisers store anything there), so dropping alpha would let that garbage into the data; black is what a
      zero-padded border is too. La and RGBa are stored that way already (premultiplied).
    - I;16, I;16B, I;16L, I;16N (16-bit grey): value / 257, so 65535 is 255 and every level keeps its brightness.
    - I (32-bit integer; Pillow's mode for 16-bit PGM/PPM): values within 0..65535 are 16-bit levels (/ 257); an
      image with values outside that range has no conventional scale, so its own min..max is stretched to 0..255.
    - F (32-bit float): values within 0..1 are scaled by 255, values within 0..255 are kept (what Pillow's own
      `convert("F")` of an 8-bit image gives); floats have no other convention, so any other image's own min..max
      is stretched to 0..255. NaN and infinities become 0.
    - CMYK, YCbCr, HSV, RGBX: Pillow's conversion to RGB. LAB: through a colour-managed LAB -> sRGB transform.
    Grey becomes RGB by repeating the channel, colour becomes grey with ITU-R 601 luma (what `convert("L")` does).
    """
    img = _eight_bit_l_or_rgb(img)
    return img if img.mode == mode else img.convert(mode)


def _eight_bit_l_or_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode == "P" and "transparency" not in img.info:
        return img.convert("RGB")
    if mode in ("P", "PA"):
        return _over_black(np.asarray(img.convert("RGBA")))
    if mode in ("LA", "RGBA"):
        return _over_black(np.asarray(img))
    if mode in ("La", "RGBa"):  # premultiplied: already over black
        colour = np.asarray(img)[..., :-1]
        return Image.fromarray(np.ascontiguousarray(colour[..., 0] if mode == "La" else colour))
    if mode.startswith("I;16"):
        return _grey(np.asarray(img).astype(np.float64) / 257.0)
    if mode == "I":
        return _grey(_scaled(np.asarray(img).astype(np.float64), ranges=(65535.0,)))
    if mode == "F":
        return _grey(_scaled(np.asarray(img).astype(np.float64), ranges=(1.0, 255.0)))
    if mode == "LAB":
        from PIL import ImageCms  # only for LAB images: Pillow built without LittleCMS lacks it, and it costs 40 ms

        transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB",
                                            "RGB")  # fmt: skip
        return ImageCms.applyTransform(img, transform)
    return img.convert("RGB")  # CMYK, YCbCr, HSV, RGBX: Pillow converts these without loss of range


def _over_black(pixels: np.ndarray) -> Image.Image:
    """(H, W, C+1) uint8 with alpha last -> the colour composited over black, rounded to the nearest level."""
    colour = pixels[..., :-1].astype(np.uint16)  # 255 * 255 + 127 still fits: half the memory of uint32
    alpha = pixels[..., -1:].astype(np.uint16)
    blended = ((colour * alpha + 127) // 255).astype(np.uint8)
    return Image.fromarray(blended[..., 0] if blended.shape[-1] == 1 else blended)


def _scaled(values: np.ndarray, *, ranges: tuple[float, ...]) -> np.ndarray:
    """`values` on a 0..255 scale: the first of `ranges` (0..top) holding every finite value, else their min..max."""
    finite = np.isfinite(values)
    values = np.where(finite, values, 0.0)
    if not finite.any():
        return values
    low, high = float(values[finite].min()), float(values[finite].max())
    for top in ranges:
        if low >= 0.0 and high <= top:
            return values * (255.0 / top)
    if high == low:
        return np.zeros_like(values)
    return (values - low) * (255.0 / (high - low))


def _grey(values: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))


# ---------------------------------------------------------------------------------------------------------- decoding


def _decode_array(path: str, size: int, mode: str) -> np.ndarray:
    """Decode one file to a (size, size[, 3]) uint8 array; raise CorruptImage on any failure."""
    try:
        with Image.open(path) as img:
            # load() forces the full decode, so a truncated JPEG fails here rather than yielding grey rows.
            img.load()
            img = to_8bit(img, mode).resize((size, size), Image.Resampling.BILINEAR)
            return np.array(img, dtype=np.uint8)  # a writable copy, as torch.from_numpy wants
    except Exception as err:  # PIL raises OSError, ValueError, SyntaxError, struct.error... depending on the format
        raise CorruptImage(str(path), _reason(err), _kind(err)) from err


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
    indices into `paths` of the decoded images, in order; `skipped` holds {"path", "reason", "kind"} for each failed
    file.
    """
    mode = _mode(channels)
    images = torch.empty((len(paths), channels, size, size), dtype=torch.uint8)
    failures: dict[int, CorruptImage] = {}

    def work(index: int) -> None:
        try:
            images[index] = _to_chw(_decode_array(paths[index], size, mode))
        except CorruptImage as err:
            failures[index] = err

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(work, i) for i in range(len(paths))]
        for done, future in enumerate(as_completed(futures), start=1):
            future.result()
            if progress is not None and (done % _PROGRESS_EVERY == 0 or done == len(paths)):
                progress(done)

    images, kept = _compact(images, set(failures))
    skipped = [_skipped(paths[i], failures[i]) for i in sorted(failures)]
    return images, kept, skipped


def _verify_one(path: str) -> CorruptImage | None:
    """Why `path` cannot be used, or None when it decodes and converts.

    `Image.verify()` checks structure (e.g. PNG CRCs) but passes truncated JPEGs, so a reduced-scale decode follows:
    JPEG draft mode still reads every entropy-coded byte, which is what catches truncation, at a fraction of the cost.
    The conversion runs too, so a file the training loader would fail on is refused now, not in a DataLoader worker.
    """
    try:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            img.draft(img.mode, (64, 64))
            img.load()
            to_8bit(img, "RGB")
    except Exception as err:
        return CorruptImage(str(path), _reason(err), _kind(err))
    return None


def verify_many(paths: Sequence[str], workers: int = 4) -> tuple[list[int], list[dict]]:
    """Check that every file in `paths` decodes, without keeping the pixels (for sets too large for memory).

    Returns (kept indices into `paths` in order, skipped {"path", "reason", "kind"} list).
    """
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        failures = list(pool.map(_verify_one, paths))
    kept = [i for i, failure in enumerate(failures) if failure is None]
    skipped = [_skipped(paths[i], failure) for i, failure in enumerate(failures) if failure is not None]
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
