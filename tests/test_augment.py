"""Tests for cnnbench.data.augment: spec parsing, and what the batched affine warp does to real pixels.

Everything runs on the CPU on small random batches; each check is about something a user would notice (a flip that is
not a mirror, a run that is not reproducible, a typo that is silently accepted).
"""

from __future__ import annotations

import pytest
import torch

from cnnbench.data.augment import PRESETS, AugmentSpec, augment_batch, parse_augment
from cnnbench.engine import Preprocess
from cnnbench.core.errors import UsageError


def batch(n: int = 8, c: int = 3, h: int = 12, w: int = 10, *, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """A random float batch in [0, 1], non-square so that a transposed H/W would show."""
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- parse_augment ----------------------------------------------------------------------------------------------------


def test_full_spec_string_parses_to_the_right_fields():
    spec = parse_augment("flip,rotate=20,zoom=0.2,brightness=0.8-1.2")

    assert spec == AugmentSpec(flip=True, rotate=20.0, zoom=0.2, brightness=(0.8, 1.2))
    assert spec.translate == 0.0 and spec.shear == 0.0
    assert spec.enabled and spec.geometric


def test_spaces_around_items_are_ignored():
    assert parse_augment(" flip , translate=0.1 ") == AugmentSpec(flip=True, translate=0.1)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_resolves_to_its_spec_string(name):
    assert parse_augment(name) == parse_augment(PRESETS[name])


def test_presets_mean_what_their_names_say():
    assert parse_augment("none") == AugmentSpec()
    assert not parse_augment("none").enabled
    assert parse_augment("flip") == AugmentSpec(flip=True)
    assert parse_augment("light") == AugmentSpec(flip=True, translate=0.1)
    assert parse_augment("s2") == AugmentSpec(flip=True, zoom=0.1, rotate=10.0, translate=0.1)
    assert parse_augment("s4") == AugmentSpec(flip=True, translate=0.15, rotate=20.0, zoom=0.3, shear=0.2,
                                              brightness=(0.8, 1.2))  # fmt: skip


def test_brightness_alone_is_enabled_but_not_geometric():
    spec = parse_augment("brightness=0.5-1.5")
    assert spec.enabled and not spec.geometric


@pytest.mark.parametrize(
    "text, bad_item",
    [
        ("spin=3", "spin=3"),
        ("rotate=abc", "rotate=abc"),
        ("brightness=2", "brightness=2"),
        ("rotate=-5", "rotate=-5"),
        ("flip,zoom=0.2,spin=3", "spin=3"),  # the bad item is named even after good ones
        ("flip=1", "flip=1"),
        ("rotate", "rotate"),  # a numeric item without a value
        ("zoom=inf", "zoom=inf"),
        ("translate=nan", "translate=nan"),
        ("brightness=0.8-x", "brightness=0.8-x"),
    ],
)
def test_bad_items_raise_usage_error_naming_the_item(text, bad_item):
    with pytest.raises(UsageError) as caught:
        parse_augment(text)
    assert repr(bad_item) in str(caught.value)


def test_reversed_brightness_range_is_a_usage_error():
    with pytest.raises(UsageError, match="brightness=1.2-0.8"):
        spec = parse_augment("brightness=1.2-0.8")
        augment_batch(batch(), spec, gen(0))  # if parsing lets it through, this is where a user meets it


# --- "none" and normalisation -----------------------------------------------------------------------------------------


def test_disabled_spec_leaves_a_batch_unchanged():
    x = batch()
    assert torch.equal(augment_batch(x.clone(), parse_augment("none"), gen(0)), x)


def test_preprocess_with_disabled_spec_is_exactly_normalisation():
    images = torch.randint(0, 256, (6, 3, 9, 9), dtype=torch.uint8, generator=gen(1))
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    pre = Preprocess(mean, std, torch.device("cpu"), augment=parse_augment("none"), channels_last=False)

    expected = (images.float() / 255.0 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    out = pre(images, gen(0))  # a generator is passed, as in training: with nothing enabled it must not matter

    assert out.dtype == torch.float32 and out.shape == images.shape
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(out, pre(images))  # same as evaluation (no generator)


def test_preprocess_augments_only_when_given_a_generator():
    images = torch.randint(0, 256, (16, 3, 9, 9), dtype=torch.uint8, generator=gen(2))
    pre = Preprocess([0.0] * 3, [1.0] * 3, torch.device("cpu"), augment=parse_augment("rotate=30"), channels_last=True)

    evaluated = pre(images)
    trained = pre(images, gen(0))

    torch.testing.assert_close(evaluated, images.float() / 255.0)
    assert not torch.allclose(trained, evaluated)
    assert trained.is_contiguous(memory_format=torch.channels_last)


# --- flip -------------------------------------------------------------------------------------------------------------


def test_flip_gives_each_image_itself_or_its_exact_mirror_and_both_occur():
    x = batch(n=64, c=3, h=7, w=11, seed=3)
    out = augment_batch(x.clone(), parse_augment("flip"), gen(0))
    mirror = torch.flip(x, dims=[3])

    same = (out - x).abs().amax(dim=(1, 2, 3)) <= 1e-5
    mirrored = (out - mirror).abs().amax(dim=(1, 2, 3)) <= 1e-5
    assert bool((same | mirrored).all()), "some image is neither the input nor its horizontal mirror"
    assert int(same.sum()) > 0 and int(mirrored.sum()) > 0
    assert 10 <= int(mirrored.sum()) <= 54  # a fair coin over 64 images
    assert out.shape == x.shape and out.dtype == x.dtype


def test_flip_is_horizontal_never_vertical():
    x = batch(n=32, h=8, w=8, seed=4)
    out = augment_batch(x.clone(), parse_augment("flip"), gen(1))
    vertical = torch.flip(x, dims=[2])
    assert not bool(((out - vertical).abs().amax(dim=(1, 2, 3)) <= 1e-5).any())


# --- geometric warps --------------------------------------------------------------------------------------------------


GEOMETRIC = ["translate=0.2", "rotate=30", "zoom=0.3", "shear=20", "s2", "flip,translate=0.15,rotate=20,zoom=0.3"]


@pytest.mark.parametrize("text", GEOMETRIC)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_warps_keep_shape_dtype_and_range(text, dtype):
    x = batch(n=16, c=3, h=12, w=10, dtype=dtype)
    x[0] = 0.0  # extremes survive: a black and a white image stay in range
    x[1] = 1.0
    out = augment_batch(x.clone(), parse_augment(text), gen(0))

    assert out.shape == x.shape and out.dtype == dtype
    assert float(out.min()) >= -1e-6 and float(out.max()) <= 1.0 + 1e-6
    torch.testing.assert_close(out[0], torch.zeros_like(out[0]))  # border fill repeats edge pixels: no new values
    torch.testing.assert_close(out[1], torch.ones_like(out[1]))
    assert not torch.allclose(out[2:], x[2:])  # it did something


@pytest.mark.parametrize("text", GEOMETRIC + ["s4", "brightness=0.5-1.5"])
def test_same_seed_reproduces_and_other_seed_differs(text):
    x = batch(n=8, seed=5)
    spec = parse_augment(text)

    first = augment_batch(x.clone(), spec, gen(123))
    again = augment_batch(x.clone(), spec, gen(123))
    other = augment_batch(x.clone(), spec, gen(124))

    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_a_generator_advances_so_consecutive_batches_differ():
    x = batch(n=8, seed=6)
    g = gen(7)
    spec = parse_augment("rotate=30")
    assert not torch.allclose(augment_batch(x.clone(), spec, g), augment_batch(x.clone(), spec, g))


def test_each_image_gets_its_own_warp():
    x = batch(n=1, seed=8).expand(16, -1, -1, -1).contiguous()  # 16 copies of one image
    out = augment_batch(x.clone(), parse_augment("rotate=30,translate=0.1"), gen(0))
    distinct = {tuple(out[i].flatten()[:50].tolist()) for i in range(16)}
    assert len(distinct) == 16


def test_translate_shifts_content_by_at_most_the_fraction():
    # A single bright pixel in the centre of a 21x21 black image; translate=0.1 moves it by at most ~2.1 pixels.
    n, size = 64, 21
    x = torch.zeros(n, 1, size, size)
    x[:, :, 10, 10] = 1.0
    out = augment_batch(x.clone(), parse_augment("translate=0.1"), gen(0))

    rows = torch.arange(size, dtype=torch.float32).view(1, size, 1)
    mass = out[:, 0].sum(dim=(1, 2))
    centre_y = (out[:, 0] * rows).sum(dim=(1, 2)) / mass
    centre_x = (out[:, 0] * rows.transpose(1, 2)).sum(dim=(1, 2)) / mass
    shift = torch.stack([centre_y - 10, centre_x - 10], dim=1).abs()
    torch.testing.assert_close(mass, torch.ones(n))  # bilinear translation conserves the pixel
    assert float(shift.max()) <= 0.1 * size + 1e-4
    assert float(shift.max()) > 0.5  # and it does move


# --- brightness -------------------------------------------------------------------------------------------------------


def test_brightness_scales_each_image_by_one_factor_within_the_range():
    x = 0.05 + 0.75 * batch(n=32, seed=9)  # in [0.05, 0.8]: x * 1.2 stays below 1, so nothing is clipped
    out = augment_batch(x.clone(), parse_augment("brightness=0.8-1.2"), gen(0))

    ratio = out / x
    per_image = ratio.flatten(1)
    factor = per_image[:, 0]
    torch.testing.assert_close(per_image, factor[:, None].expand_as(per_image), rtol=1e-5, atol=1e-6)
    assert float(factor.min()) >= 0.8 - 1e-6 and float(factor.max()) <= 1.2 + 1e-6
    assert float(factor.max() - factor.min()) > 0.1  # factors vary between images


def test_brightness_clips_to_one():
    x = torch.full((8, 3, 4, 4), 0.9)
    out = augment_batch(x.clone(), parse_augment("brightness=1.5-2"), gen(0))
    assert float(out.max()) <= 1.0
    torch.testing.assert_close(out, torch.ones_like(out))
