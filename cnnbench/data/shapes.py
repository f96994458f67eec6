"""`shapes`: a generated colour image dataset, so every study's chain can run on colour images with no files or network.

Each image is one shape of ten kinds (the class) drawn with a random colour, position, size, rotation and slight
stretch over a two-colour gradient background, plus Gaussian pixel noise. Nothing about the class sits at a fixed
place or in a fixed colour, so a linear model over raw pixels cannot find it; a small CNN, which looks for edges and
corners anywhere, can (the README gives both accuracies).

Shapes are drawn from signed distance functions in the shape's own frame (its "radius" is 1), so any image side renders
the same scene sharply, with anti-aliased edges: the scene's parameters are fractions of the side, drawn before the
pixel noise, and the same seed gives the same scenes at 32 and at 128 pixels. Kinds that rotation would make
identical (a square and a diamond) are not both classes.

The registered dataset is one fixed draw (seed 0 of `generate_shapes`), like a dataset on disk: `--seed` splits it,
`--classes` chooses classes from it and `--size` renders it at another side (rendered natively, never resampled).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cnnbench.data.sources import DatasetEntry, RawDataset, ReadOptions

SHAPES = ("circle", "square", "triangle", "cross", "ring", "bar", "star", "crescent", "frame", "ell")
DEFAULT_SIZE = 32
IMAGES_PER_CLASS = 2000
DATASET_SEED = 0  # the one draw the registered dataset is; `--seed` splits it, as it splits any other dataset

# Scene parameters, as fractions of the image side (radius: the shape's circumscribed half-width).
RADIUS_RANGE = (0.16, 0.34)
STRETCH_RANGE = (0.85, 1.18)  # mild: enough to vary, too little to turn a square into a bar
NOISE_STD_RANGE = (0.0, 0.08)  # per-pixel Gaussian noise, in units of full intensity
MIN_CONTRAST = 0.22  # least luminance difference between a shape and the background under it
_RENDER_CHUNK = 256  # images rendered at once: bounds the float32 working arrays at large sides


def generate_shapes(images_per_class: int, *, classes: int = len(SHAPES), size: int = DEFAULT_SIZE,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """`images_per_class` images of each of the first `classes` shapes, shuffled: uint8 (N, 3, size, size) and int64
    labels (N,), indices into SHAPES. Deterministic in `seed`; the scenes do not depend on `size`."""
    if not 2 <= classes <= len(SHAPES):
        raise ValueError(f"classes must be 2 to {len(SHAPES)}, got {classes}")
    if images_per_class < 1 or size < 4:
        raise ValueError(f"need images_per_class >= 1 and size >= 4, got {images_per_class} and {size}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(classes, dtype=np.int64), images_per_class))
    scenes = _draw_scenes(rng, len(labels))
    # A generator of its own for the noise, so the scenes stay the same whatever the side (noise is per pixel).
    noise_rng = np.random.default_rng([seed, size])
    images = np.empty((len(labels), 3, size, size), dtype=np.uint8)
    for start in range(0, len(labels), _RENDER_CHUNK):
        chunk = slice(start, start + _RENDER_CHUNK)
        images[chunk] = _render({key: value[chunk] for key, value in scenes.items()}, labels[chunk], size, noise_rng)
    return images, labels


def _draw_scenes(rng: np.random.Generator, count: int) -> dict[str, np.ndarray]:
    radius = rng.uniform(*RADIUS_RANGE, count)
    # The whole shape stays inside the image: the centre keeps one stretched radius from every edge.
    reach = radius * STRETCH_RANGE[1]
    centre = rng.uniform(reach[:, None], 1.0 - reach[:, None], (count, 2))
    foreground = _random_colours(rng, count)
    background = np.stack([_contrasting_colours(rng, foreground), _contrasting_colours(rng, foreground)], axis=1)
    return {
        "radius": radius,
        "centre": centre,
        "angle": rng.uniform(0.0, 2 * np.pi, count),
        "stretch": rng.uniform(*STRETCH_RANGE, count),
        "foreground": foreground,
        "background": background,  # (count, 2, 3): the gradient's two ends
        "gradient_angle": rng.uniform(0.0, 2 * np.pi, count),
        "noise_std": rng.uniform(*NOISE_STD_RANGE, count),
    }


def _luminance(colours: np.ndarray) -> np.ndarray:
    return colours @ np.array([0.299, 0.587, 0.114])


def _random_colours(rng: np.random.Generator, count: int) -> np.ndarray:
    return rng.uniform(0.0, 1.0, (count, 3))


def _contrasting_colours(rng: np.random.Generator, foreground: np.ndarray) -> np.ndarray:
    """A random colour per row whose luminance differs from the foreground's by MIN_CONTRAST at least, drawn again
    where it does not: a shape as bright as its background vanishes under --grayscale, and nearly so in colour."""
    colours = _random_colours(rng, len(foreground))
    while True:
        poor = np.abs(_luminance(colours) - _luminance(foreground)) < MIN_CONTRAST
        if not poor.any():
            return colours
        colours[poor] = _random_colours(rng, int(poor.sum()))


def _render(scenes: dict[str, np.ndarray], labels: np.ndarray, size: int, noise_rng: np.random.Generator) -> np.ndarray:
    count = len(labels)
    pixel = (np.arange(size, dtype=np.float32) + 0.5) / size  # pixel centres, in fractions of the side
    x = pixel[None, None, :] - scenes["centre"][:, 0, None, None].astype(np.float32)
    y = pixel[None, :, None] - scenes["centre"][:, 1, None, None].astype(np.float32)
    cos, sin = (f(scenes["angle"]).astype(np.float32)[:, None, None] for f in (np.cos, np.sin))
    radius_x = (scenes["radius"] * scenes["stretch"]).astype(np.float32)[:, None, None]
    radius_y = (scenes["radius"] / scenes["stretch"]).astype(np.float32)[:, None, None]
    # Into the shape's frame: rotate back, then divide by the radii, so every shape is drawn at radius 1.
    u = (cos * x + sin * y) / radius_x
    v = (-sin * x + cos * y) / radius_y
    distance = np.empty((count, size, size), dtype=np.float32)
    for label in np.unique(labels):
        rows = labels == label
        distance[rows] = DISTANCES[SHAPES[label]](u[rows], v[rows])
    # Signed distance in pixels (approximately, under the stretch) -> the share of each pixel the shape covers.
    pixels_per_unit = (scenes["radius"] * size).astype(np.float32)[:, None, None]
    coverage = np.clip(0.5 - distance * pixels_per_unit, 0.0, 1.0)[:, None]

    gradient = (np.cos(scenes["gradient_angle"]).astype(np.float32)[:, None, None] * (pixel[None, None, :] - 0.5)
                + np.sin(scenes["gradient_angle"]).astype(np.float32)[:, None, None] * (pixel[None, :, None] - 0.5))
    mix = np.clip(gradient * 2**-0.5 + 0.5, 0.0, 1.0)[:, None]  # 0 .. 1 across the image (a Python float keeps float32)
    near, far = (scenes["background"][:, end, :, None, None].astype(np.float32) for end in (0, 1))
    background = near * (1.0 - mix) + far * mix
    foreground = scenes["foreground"].astype(np.float32)[:, :, None, None]
    image = background * (1.0 - coverage) + foreground * coverage
    noise = noise_rng.standard_normal(image.shape, dtype=np.float32)
    image += noise * scenes["noise_std"].astype(np.float32)[:, None, None, None]
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


# --- the shapes, as signed distances in the shape's frame (negative inside; the shape fits in the unit disc) ---


def _box(u: np.ndarray, v: np.ndarray, half_width: float, half_height: float) -> np.ndarray:
    dx, dy = np.abs(u) - half_width, np.abs(v) - half_height
    outside = np.hypot(np.maximum(dx, 0.0), np.maximum(dy, 0.0))
    return outside + np.minimum(np.maximum(dx, dy), 0.0)


def _regular_polygon(u: np.ndarray, v: np.ndarray, sides: int) -> np.ndarray:
    """A convex polygon with circumradius 1: the largest signed distance to its edges' lines (exact inside, a close
    enough bound outside for anti-aliasing)."""
    inradius = np.cos(np.pi / sides)
    normals = [np.pi / 2 + np.pi / sides + 2 * np.pi * k / sides for k in range(sides)]
    return np.max([np.cos(a) * u + np.sin(a) * v for a in normals], axis=0) - inradius


def _star(u: np.ndarray, v: np.ndarray, points: int = 5, inner: float = 0.45) -> np.ndarray:
    """The radius along each direction swings linearly between the tips (1) and the notches (`inner`)."""
    sector = 2 * np.pi / points
    phase = np.mod(np.arctan2(v, u) - np.pi / 2, sector) / sector  # 0 at a tip, 0.5 at a notch
    edge = inner + (1.0 - inner) * np.abs(2.0 * phase - 1.0)
    return (np.hypot(u, v) - edge) * 0.6  # the edge is slanted: radial distance overstates the true one


def _crescent(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(np.hypot(u, v) - 1.0, -(np.hypot(u - 0.5, v) - 0.82))


def _ell(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    upright = _box(u + 0.45, v, 0.3, 1.0)
    foot = _box(u, v + 0.7, 0.75, 0.3)
    return np.minimum(upright, foot)


DISTANCES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "circle": lambda u, v: np.hypot(u, v) - 1.0,
    "square": lambda u, v: _box(u, v, 0.72, 0.72),
    "triangle": lambda u, v: _regular_polygon(u, v, 3),
    "cross": lambda u, v: np.minimum(_box(u, v, 1.0, 0.3), _box(u, v, 0.3, 1.0)),
    "ring": lambda u, v: np.abs(np.hypot(u, v) - 0.72) - 0.28,
    "bar": lambda u, v: _box(u, v, 1.0, 0.3),
    "star": _star,
    "crescent": _crescent,
    "frame": lambda u, v: np.abs(_box(u, v, 0.72, 0.72)) - 0.22,
    "ell": _ell,
}
assert tuple(DISTANCES) == SHAPES


# --- the dataset entry ---


def read_shapes(entry: DatasetEntry, options: ReadOptions) -> RawDataset:
    """The registered draw at the side `--size` asks for (PrepareOptions has it; another reader's options may not),
    rendered there rather than resampled from 32 pixels. Every class is generated; prepare chooses `--classes` from
    them by the seed, as it does for every dataset."""
    import torch

    from cnnbench.data.sources import RawDataset, RawPart

    size = getattr(options, "size", None) or entry.size
    images, labels = generate_shapes(entry.images // len(SHAPES), size=size, seed=DATASET_SEED)
    return RawDataset(classes=list(SHAPES), parts={"train": RawPart(labels=labels, images=torch.from_numpy(images))},
                      skipped=[], location=f"generated by cnnbench.data.shapes (seed {DATASET_SEED})")  # fmt: skip


SMALL_PER_CLASS = 200  # `shapes-small`: digits' size (2,000 images), for the studies' smoke runs on a CPU


def dataset_entry(name: str = "shapes", per_class: int = IMAGES_PER_CLASS) -> DatasetEntry:
    # sources.py is imported here, not at the top: it imports this module to register the entry, and either module
    # may be imported first.
    from cnnbench.data.sources import DatasetEntry

    what = "" if per_class == IMAGES_PER_CLASS else f", {per_class} per class"
    return DatasetEntry(name=name, description=f"generated coloured shapes ({len(SHAPES)} kinds{what}; no files or "
                        f"network)", channels=3, size=DEFAULT_SIZE, num_classes=len(SHAPES),
                        images=per_class * len(SHAPES), files="(generated, nothing to download)",
                        official_parts=("train",), default_split=(0.7, 0.15, 0.15), download=False, photos=False,
                        bundled=True, reader=read_shapes)  # fmt: skip


def register() -> DatasetEntry:
    """Add `shapes` to the dataset registry (sources.py calls this once, after its own entries). A second call finds
    the entry there and returns it, so a test may call it whether or not sources.py has."""
    from cnnbench.data.sources import DATASETS

    if "shapes" in DATASETS:
        return DATASETS.get("shapes")
    DATASETS.register("shapes-small", dataset_entry("shapes-small", SMALL_PER_CLASS))
    return DATASETS.register("shapes", dataset_entry())
