"""The generated `shapes` dataset: deterministic in its seed, balanced, any side, and prepared like any dataset."""

from __future__ import annotations

import numpy as np
import pytest

from cnnbench.data.datasets.shapes import OTHER_SHAPES, SHAPES, generate_shapes, register


def test_the_same_seed_gives_the_same_images_and_another_seed_others():
    images, labels = generate_shapes(6, size=16, seed=3)
    again, again_labels = generate_shapes(6, size=16, seed=3)
    assert np.array_equal(images, again) and np.array_equal(labels, again_labels)
    other, other_labels = generate_shapes(6, size=16, seed=4)
    assert not np.array_equal(images, other) and not np.array_equal(labels, other_labels)


def test_classes_are_balanced_and_arrays_have_the_promised_shape():
    images, labels = generate_shapes(7, classes=4, size=20, seed=0)
    assert images.dtype == np.uint8 and images.shape == (28, 3, 20, 20)
    assert labels.dtype == np.int64 and np.bincount(labels).tolist() == [7, 7, 7, 7]
    _, every = generate_shapes(5, seed=1, size=8)
    assert np.bincount(every, minlength=len(SHAPES)).tolist() == [5] * len(SHAPES)
    assert len(set(every[:10].tolist())) > 1, "labels are shuffled, not grouped by class"


def test_a_seed_draws_the_same_scenes_at_every_side():
    small, small_labels = generate_shapes(3, size=16, seed=5)
    large, large_labels = generate_shapes(3, size=64, seed=5)
    assert np.array_equal(small_labels, large_labels)
    # The same scene: the large picture shrunk 4x is close to the small one (noise and anti-aliasing differ).
    shrunk = large.reshape(len(large), 3, 16, 4, 16, 4).astype(float).mean(axis=(3, 5))
    assert np.abs(shrunk - small).mean() < 12


def test_each_image_shows_its_shape_against_the_background():
    images, labels = generate_shapes(4, size=32, seed=2)
    # Without noise or shape the image would be a smooth gradient; the shape's edge makes neighbouring pixels differ.
    spread = images.astype(float).std(axis=(1, 2, 3))
    assert (spread > 5).all()
    with pytest.raises(ValueError):
        generate_shapes(3, classes=len(SHAPES) + 1)


def test_shapes_is_registered_and_prepared_like_any_dataset(tmp_path, monkeypatch):
    from cnnbench.data.catalog import DATASETS, get_dataset
    from cnnbench.data.prepare import PrepareOptions, load_or_prepare

    # A registry of this test's own: where sources.py does not register shapes yet, the entry registered here must not
    # show in other tests' listings of every dataset.
    monkeypatch.setattr(DATASETS, "_entries", dict(DATASETS._entries))
    entry = register()
    assert register() is entry, "registering again returns the entry already there"
    assert get_dataset("shapes") is entry and entry.num_classes == len(SHAPES) and entry.present(tmp_path)
    prepared = load_or_prepare(PrepareOptions(dataset="shapes", root=tmp_path, size=8, classes=3, seed=1))
    assert len(prepared.classes) == 3 and set(prepared.classes) <= set(SHAPES)
    counts = {name: len(split) for name, split in prepared.splits.items()}
    total = 3 * entry.images // len(SHAPES)
    assert sum(counts.values()) == total and counts["train"] == round(0.7 * total)
    assert tuple(prepared.splits["train"].images.shape[1:]) == (3, 8, 8)
    assert np.bincount(prepared.splits["test"].labels.numpy()).tolist() == [counts["test"] // 3] * 3


def test_shapes_other_is_another_task_a_backbone_can_be_pretrained_on(tmp_path):
    from cnnbench.data.catalog import get_dataset
    from cnnbench.data.prepare import PrepareOptions, load_or_prepare

    # The smoke studies' stand-in for ImageNet: its classes are none of the target's, and its images are its own draw.
    other = load_or_prepare(PrepareOptions(dataset="shapes-other", root=tmp_path, size=16))
    small = load_or_prepare(PrepareOptions(dataset="shapes-small", root=tmp_path, size=16))
    assert sorted(other.classes) == sorted(OTHER_SHAPES) and not set(other.classes) & set(small.classes)
    assert get_dataset("shapes-other").images == 6000 and get_dataset("shapes-small").images == 2000
    images, labels = generate_shapes(4, size=16, seed=1, kinds=OTHER_SHAPES)
    assert np.bincount(labels).tolist() == [4] * len(OTHER_SHAPES) and (images.astype(float).std(axis=(1, 2, 3)) > 5).all()
