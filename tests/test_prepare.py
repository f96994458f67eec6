"""`prepare`: splits, subsets, resizing and the prepared cache, on digits and on tiny files in each real format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnbench.cli import main
from cnnbench.data.prepare import (
    SPLITS,
    PrepareOptions,
    load_or_prepare,
    parse_split,
    prepare,
    prepared_dir,
)
from cnnbench.core.errors import DataMissing, UsageError
from tests.fixtures_formats import (
    truncated_jpeg_bytes,
    write_catsdogs,
    write_cifar_batches,
    write_flowers,
    write_image_folder,
    write_mnist,
    write_pets,
    zip_folder,
)


def _totals(prepared) -> dict[str, int]:
    return {name: prepared.manifest["counts"][name]["total"] for name in SPLITS}


def _per_class(prepared) -> dict[str, list[int]]:
    return {name: prepared.manifest["counts"][name]["per_class"] for name in SPLITS}


def _assert_stratified(prepared, ratios, class_sizes) -> None:
    """Every class is cut at the ratios: its count in each split is within one image of ratio * class size."""
    per_class = _per_class(prepared)
    for c, n in enumerate(class_sizes):
        got = [per_class[name][c] for name in SPLITS]
        assert sum(got) == n, (c, got, n)
        for name, ratio, count in zip(SPLITS, ratios, got):
            assert abs(count - ratio * n) <= 1.0 + 1e-9, (c, name, count, ratio * n)


def _row_index(images: np.ndarray) -> dict[bytes, int]:
    """Map each image's bytes to its position (fixture images are random noise, so rows are unique)."""
    index = {row.tobytes(): i for i, row in enumerate(images)}
    assert len(index) == len(images)
    return index


# ------------------------------------------------------------------------------------------------------- parse_split


def test_parse_split_accepts_fractions_and_percentages_alike():
    assert parse_split("0.64,0.16,0.20") == pytest.approx((0.64, 0.16, 0.20))
    assert parse_split("64,16,20") == pytest.approx(parse_split("0.64,0.16,0.20"))
    assert parse_split("0.6, 0.2, 0.2") == pytest.approx((0.6, 0.2, 0.2))
    for text in (None, "", "official"):
        assert parse_split(text) is None


@pytest.mark.parametrize("text", ["0.5,0.5", "a,b,c", "0.5,0.2,0.2", "-0.2,0.6,0.6", "0.5,-0.1,0.6", "0,0.5,0.5"])
def test_parse_split_rejects_malformed_text_naming_it(text):
    with pytest.raises(UsageError) as info:
        parse_split(text)
    assert text in str(info.value)


# ------------------------------------------------------------------------------------------------------------ digits


@pytest.fixture(scope="module")
def digits_default(tmp_path_factory):
    return prepare(PrepareOptions(dataset="digits", root=tmp_path_factory.mktemp("digits")))


def test_digits_default_split_is_stratified_and_complete(digits_default):
    from sklearn.datasets import load_digits

    prepared = digits_default
    class_sizes = np.bincount(load_digits().target, minlength=10).tolist()
    assert sum(_totals(prepared).values()) == 1797
    _assert_stratified(prepared, (0.6, 0.2, 0.2), class_sizes)
    for name in SPLITS:
        split = prepared.splits[name]
        assert split.images.dtype == torch.uint8
        assert tuple(split.images.shape) == (len(split), 1, 8, 8)
        assert split.labels.dtype == torch.int64
        assert split.paths is None
        # the manifest's counts describe the tensors actually stored
        counted = np.bincount(split.labels.numpy(), minlength=10).tolist()
        assert counted == prepared.manifest["counts"][name]["per_class"]
    assert prepared.classes == [str(d) for d in range(10)]
    assert prepared.in_memory
    assert prepared.input_spec.channels == 1 and prepared.input_spec.height == 8
    assert prepared.input_spec.num_classes == 10
    assert (prepared.directory / "manifest.json").is_file()
    assert prepared.directory == prepared_dir(PrepareOptions(dataset="digits", root=prepared.directory.parent.parent))


def test_digits_normalization_matches_the_train_split(digits_default):
    prepared = digits_default
    (mean,), (std,) = prepared.mean, prepared.std
    assert 0.0 < mean < 1.0 and 0.0 < std < 1.0
    train = prepared.splits["train"].images.double() / 255.0
    assert mean == pytest.approx(train.mean().item(), abs=1e-4)
    assert std == pytest.approx(train.std(unbiased=False).item(), abs=1e-4)
    assert prepared.manifest["skipped"] == []


def test_digits_size_resizes_every_split(tmp_path):
    prepared = prepare(PrepareOptions(dataset="digits", root=tmp_path, size=28))
    for name in SPLITS:
        images = prepared.splits[name].images
        assert images.dtype == torch.uint8 and tuple(images.shape[1:]) == (1, 28, 28)
    assert prepared.manifest["input"] == {"channels": 1, "height": 28, "width": 28, "num_classes": 10}
    assert sum(_totals(prepared).values()) == 1797


def test_same_options_give_same_splits_in_any_root_and_seed_changes_them(tmp_path, digits_default):
    again = prepare(PrepareOptions(dataset="digits", root=tmp_path / "elsewhere"))
    assert again.manifest["split_hashes"] == digits_default.manifest["split_hashes"]
    assert again.directory.name == digits_default.directory.name
    for name in SPLITS:
        assert torch.equal(again.splits[name].labels, digits_default.splits[name].labels)
        assert torch.equal(again.splits[name].images, digits_default.splits[name].images)

    other = prepare(PrepareOptions(dataset="digits", root=tmp_path / "elsewhere", seed=1))
    assert other.directory != again.directory
    for name in SPLITS:
        assert other.manifest["split_hashes"][name] != again.manifest["split_hashes"][name]
    assert _totals(other) == _totals(again)  # the seed reshuffles, the stratified sizes stay


def test_options_stored_in_the_manifest_find_the_same_cache(digits_default):
    options = PrepareOptions.from_dict(digits_default.manifest["options"])
    assert prepared_dir(options) == digits_default.directory


def test_class_subset_is_chosen_by_the_seed_and_remapped(tmp_path):
    from sklearn.datasets import load_digits

    first = prepare(PrepareOptions(dataset="digits", root=tmp_path / "a", classes=3, seed=7))
    second = prepare(PrepareOptions(dataset="digits", root=tmp_path / "b", classes=3, seed=7))
    assert len(first.classes) == 3 and set(first.classes) <= {str(d) for d in range(10)}
    assert first.classes == sorted(first.classes, key=int)
    assert second.classes == first.classes
    assert second.manifest["split_hashes"] == first.manifest["split_hashes"]
    assert first.input_spec.num_classes == 3

    target = load_digits().target
    kept = [int(c) for c in first.classes]
    for name in SPLITS:
        labels = first.splits[name].labels
        assert set(labels.tolist()) == {0, 1, 2}
        assert len(first.manifest["counts"][name]["per_class"]) == 3
    assert sum(_totals(first).values()) == int(np.isin(target, kept).sum())
    _assert_stratified(first, (0.6, 0.2, 0.2), [int((target == k).sum()) for k in kept])

    subsets = {tuple(prepare(PrepareOptions(dataset="digits", root=tmp_path / "c", classes=3, seed=s)).classes)
               for s in range(4)}  # fmt: skip
    assert len(subsets) > 1, "the class subset does not depend on the seed"


def test_class_subset_keeps_images_with_their_labels(tmp_path):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.rint(bunch.images * 255.0 / 16.0).astype(np.uint8)
    prepared = prepare(PrepareOptions(dataset="digits", root=tmp_path, classes=2, seed=3))
    originals = [int(c) for c in prepared.classes]
    for name in SPLITS:
        split = prepared.splits[name]
        for image, label in zip(split.images[:, 0].numpy(), split.labels.tolist()):
            matches = np.flatnonzero((pixels == image).all(axis=(1, 2)))
            assert matches.size, "an image in the split is not a digits image"
            assert originals[label] in set(bunch.target[matches].tolist())


# ------------------------------------------------------------------------------------------------------------- MNIST


def test_mnist_official_test_part_and_val_carved_from_train(tmp_path):
    written = write_mnist(tmp_path, n_train=100, n_test=20)
    prepared = prepare(PrepareOptions(dataset="mnist", root=tmp_path))
    assert _totals(prepared) == {"train": 90, "val": 10, "test": 20}
    assert _per_class(prepared)["val"] == [1] * 10  # val_fraction 0.1 of each class's 10 train images

    test = prepared.splits["test"]
    assert tuple(test.images.shape) == (20, 1, 28, 28) and test.images.dtype == torch.uint8
    assert np.array_equal(test.images[:, 0].numpy(), written["test"][0])  # pixels and order survive
    assert test.labels.tolist() == written["test"][1].tolist()

    train_images, train_labels = written["train"]
    where = _row_index(train_images)
    seen = []
    for name in ("train", "val"):
        split = prepared.splits[name]
        for image, label in zip(split.images[:, 0].numpy(), split.labels.tolist()):
            i = where[image.tobytes()]
            assert train_labels[i] == label
            seen.append(i)
    assert sorted(seen) == list(range(100))


def test_mnist_val_fraction_and_explicit_split(tmp_path):
    write_mnist(tmp_path, n_train=100, n_test=20, gz=True)
    half = prepare(PrepareOptions(dataset="mnist", root=tmp_path, val_fraction=0.3))
    assert _totals(half) == {"train": 70, "val": 30, "test": 20}
    resplit = prepare(PrepareOptions(dataset="mnist", root=tmp_path, split=(0.5, 0.25, 0.25)))
    assert _totals(resplit) == {"train": 60, "val": 30, "test": 30}  # ratios over all 120 labelled images
    _assert_stratified(resplit, (0.5, 0.25, 0.25), [12] * 10)


def test_mnist_missing_files_raise_data_missing(tmp_path):
    with pytest.raises(DataMissing) as info:
        prepare(PrepareOptions(dataset="mnist", root=tmp_path))
    assert "train-images-idx3-ubyte" in str(info.value) and "--download" in str(info.value)
    assert not (tmp_path / "prepared").exists() or not any((tmp_path / "prepared").iterdir())


# ------------------------------------------------------------------------------------------------------------ CIFAR


def test_cifar10_shapes_pixels_and_grayscale(tmp_path):
    written = write_cifar_batches(tmp_path, classes=10, per_batch=4)
    prepared = prepare(PrepareOptions(dataset="cifar10", root=tmp_path))
    assert prepared.classes == written["classes"]
    assert _totals(prepared)["test"] == 4 and sum(_totals(prepared).values()) == 24
    for name in SPLITS:
        assert tuple(prepared.splits[name].images.shape[1:]) == (3, 32, 32)
    assert np.array_equal(prepared.splits["test"].images.numpy(), written["test"][0])
    assert prepared.splits["test"].labels.tolist() == written["test"][1].tolist()
    assert len(prepared.mean) == 3 and all(0 < m < 1 for m in prepared.mean)

    grey = prepare(PrepareOptions(dataset="cifar10", root=tmp_path, grayscale=True))
    assert grey.directory != prepared.directory
    assert grey.manifest["split_hashes"] == prepared.manifest["split_hashes"]
    for name in SPLITS:
        assert tuple(grey.splits[name].images.shape[1:]) == (1, 32, 32)
    rgb = written["test"][0].astype(np.float64)
    luma = np.rint(0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2])
    assert np.abs(grey.splits["test"].images[:, 0].numpy().astype(np.float64) - luma).max() <= 1
    assert grey.input_spec.channels == 1 and len(grey.mean) == 1


def test_cifar100_class_subset(tmp_path):
    written = write_cifar_batches(tmp_path, classes=100, per_batch=600)  # ~6 train images a class: val gets some
    prepared = prepare(PrepareOptions(dataset="cifar100", root=tmp_path, classes=5, seed=2))
    assert len(prepared.classes) == 5 and set(prepared.classes) <= set(written["classes"])
    assert prepared.input_spec.num_classes == 5
    original = [written["classes"].index(c) for c in prepared.classes]

    for part, splits in (("train", ("train", "val")), ("test", ("test",))):
        images, labels = written[part]
        where = _row_index(images.reshape(len(images), -1))
        kept = int(np.isin(labels, original).sum())
        assert sum(len(prepared.splits[s]) for s in splits) == kept
        for s in splits:
            split = prepared.splits[s]
            assert set(split.labels.tolist()) <= set(range(5))
            for image, label in zip(split.images.reshape(len(split), -1).numpy(), split.labels.tolist()):
                assert labels[where[image.tobytes()]] == original[label]


# ---------------------------------------------------------------------------------------------------------- flowers


def _flowers(root: Path) -> dict:
    """Classes 1..3 (0..2 once prepared) with 10 images each, images 1..30; every other class of the 102 with two
    (prepare refuses a class without images), images 31..228, one in the official train list and one in test."""
    labels = [i % 3 + 1 for i in range(30)] + [c for c in range(4, 103) for _ in range(2)]
    others = list(range(31, len(labels) + 1))
    splits = {"trnid": list(range(1, 10)) + others[::2], "valid": list(range(10, 16)),
              "tstid": list(range(16, 31)) + others[1::2]}  # fmt: skip
    return write_flowers(root, labels, splits)


def test_flowers_official_split_follows_setid(tmp_path):
    written = _flowers(tmp_path)
    prepared = prepare(PrepareOptions(dataset="flowers102", root=tmp_path, size=16))
    assert _totals(prepared) == {"train": 9 + 99, "val": 6, "test": 15 + 99}
    assert len(prepared.classes) == 102 and prepared.input_spec.num_classes == 102
    for name, key in (("train", "trnid"), ("val", "valid"), ("test", "tstid")):
        expected = np.bincount([written["labels"][n - 1] - 1 for n in written["splits"][key]], minlength=102)
        assert _per_class(prepared)[name] == expected.tolist()
        assert tuple(prepared.splits[name].images.shape[1:]) == (3, 16, 16)


def test_flowers_resplit_is_stratified_and_keeps_paths_with_labels(tmp_path):
    written = _flowers(tmp_path)
    prepared = prepare(PrepareOptions(dataset="flowers102", root=tmp_path, size=16, split=parse_split("0.5,0.2,0.3"),
                                      storage="files"))  # fmt: skip
    assert _totals(prepared) == {"train": 15 + 99, "val": 6, "test": 9 + 99}
    _assert_stratified(prepared, (0.5, 0.2, 0.3), [10, 10, 10] + [2] * 99)
    for name in SPLITS:
        split = prepared.splits[name]
        assert split.images is None and len(split.paths) == len(split.labels)
        for path, label in zip(split.paths, split.labels.tolist()):
            number = int(Path(path).stem.split("_")[1])
            assert written["labels"][number - 1] - 1 == label


# --------------------------------------------------------------------------------------------------------- catsdogs


def test_catsdogs_corrupt_file_is_skipped_and_default_split(tmp_path, caplog):
    folder = tmp_path / "kaggle"
    write_catsdogs(folder, cats=list(range(25)), dogs=list(range(25)), corrupt="cat.25.jpg", stray="notes.txt")
    prepared = prepare(PrepareOptions(dataset="catsdogs", root=tmp_path / "data", source=folder, size=16))
    skipped = {Path(s["path"]).name: s["reason"] for s in prepared.manifest["skipped"]}
    assert "cat.25.jpg" in skipped and skipped["cat.25.jpg"].strip()
    assert "notes.txt" in skipped
    assert sum(_totals(prepared).values()) == 50
    assert prepared.classes == ["cat", "dog"]
    dogs = [_per_class(prepared)[name][1] for name in SPLITS]
    assert dogs == [16, 4, 5]  # 0.64 / 0.16 / 0.20 of 25
    for name in SPLITS:
        split = prepared.splits[name]
        assert len(split.images) == len(split.labels) == prepared.manifest["counts"][name]["total"]
        assert tuple(split.images.shape[1:]) == (3, 16, 16)
    assert any("skipped" in r.message and r.levelname == "WARNING" for r in caplog.records)


def test_catsdogs_default_size_is_200(tmp_path):
    folder = tmp_path / "kaggle"
    write_catsdogs(folder, cats=list(range(5)), dogs=list(range(5)))
    prepared = prepare(PrepareOptions(dataset="catsdogs", root=tmp_path / "data", source=folder))
    assert prepared.manifest["input"] == {"channels": 3, "height": 200, "width": 200, "num_classes": 2}
    assert tuple(prepared.splits["train"].images.shape[1:]) == (3, 200, 200)


def test_catsdogs_from_zip_matches_the_folder(tmp_path):
    folder = tmp_path / "kaggle"
    write_catsdogs(folder, cats=list(range(10)), dogs=list(range(10)), corrupt="dog.10.jpg")
    archive = zip_folder(folder, tmp_path / "train.zip")
    from_folder = prepare(PrepareOptions(dataset="catsdogs", root=tmp_path / "one", source=folder, size=16))
    from_zip = prepare(PrepareOptions(dataset="catsdogs", root=tmp_path / "two", source=archive, size=16))
    assert (tmp_path / "two" / "catsdogs" / "train" / "cat.0.jpg").is_file()  # extracted once under --root
    assert _totals(from_zip) == _totals(from_folder) and sum(_totals(from_zip).values()) == 20
    assert from_zip.manifest["split_hashes"] == from_folder.manifest["split_hashes"]
    assert [Path(s["path"]).name for s in from_zip.manifest["skipped"]] == ["dog.10.jpg"]
    for name in SPLITS:
        assert torch.equal(from_zip.splits[name].labels, from_folder.splits[name].labels)
        assert torch.equal(from_zip.splits[name].images, from_folder.splits[name].images)


# ----------------------------------------------------------------------------------------------------------- folder


@pytest.fixture
def image_tree(tmp_path):
    root = tmp_path / "tree"
    write_image_folder(root, {"ant": 6, "bee": 6, "cow": 6}, size=12)
    return root


def test_folder_classes_come_from_subfolders_and_images_keep_labels(tmp_path, image_tree):
    prepared = prepare(PrepareOptions(dataset=f"folder:{image_tree}", root=tmp_path / "data", size=12))
    assert prepared.classes == ["ant", "bee", "cow"]
    assert prepared.directory.name.startswith("folder-")
    assert sum(_totals(prepared).values()) == 18
    _assert_stratified(prepared, (0.7, 0.15, 0.15), [6, 6, 6])
    for name in SPLITS:
        split = prepared.splits[name]
        assert tuple(split.images.shape[1:]) == (3, 12, 12)
        for image, label in zip(split.images, split.labels.tolist()):
            value = int(image.float().mean().round())  # each fixture image is flat: 40 * class + index
            assert value // 40 == label


def test_folder_file_index_matches_memory(tmp_path, image_tree):
    (image_tree / "bee" / "broken.jpg").write_bytes(truncated_jpeg_bytes())
    (image_tree / "cow" / "notes.txt").write_text("not an image\n")
    dataset = f"folder:{image_tree}"
    memory = prepare(PrepareOptions(dataset=dataset, root=tmp_path / "m", size=12, storage="memory"))
    files = prepare(PrepareOptions(dataset=dataset, root=tmp_path / "f", size=12, storage="files"))
    assert memory.in_memory and not files.in_memory
    assert files.manifest["storage"] == "files" and (files.directory / "index.json").is_file()
    assert files.manifest["split_hashes"] == memory.manifest["split_hashes"]
    assert files.manifest["counts"] == memory.manifest["counts"]
    assert files.input_spec == memory.input_spec
    for name in SPLITS:
        split = files.splits[name]
        assert split.images is None and split.paths is not None
        assert len(split.paths) == len(split.labels)
        assert all(Path(p).is_file() for p in split.paths)
        assert torch.equal(split.labels, memory.splits[name].labels)
        assert [Path(p).parent.name for p in split.paths] == [files.classes[lab] for lab in split.labels.tolist()]
    assert 0 < files.mean[0] < 1
    for prepared in (memory, files):
        assert sum(_totals(prepared).values()) == 18
        assert sorted(Path(s["path"]).name for s in prepared.manifest["skipped"]) == ["broken.jpg", "notes.txt"]


def test_unreadable_images_everywhere_fail_cleanly(tmp_path):
    tree = tmp_path / "tree"
    for name in ("a", "b"):
        for i in range(3):
            (tree / name).mkdir(parents=True, exist_ok=True)
            (tree / name / f"{i}.jpg").write_bytes(truncated_jpeg_bytes())
    with pytest.raises(UsageError, match="train split is empty"):
        prepare(PrepareOptions(dataset=f"folder:{tree}", root=tmp_path / "data", size=12))
    prepared = tmp_path / "data" / "prepared"
    assert not prepared.exists() or list(prepared.iterdir()) == []  # no staging folder is left


# ------------------------------------------------------------------------------------------------------------- pets


def test_pets_official_test_list_and_unlisted_images(tmp_path):
    trainval = [(f"Abyssinian_{i}", 1) for i in range(10)] + [(f"beagle_{i}", 2) for i in range(10)]
    test = [(f"Bengal_{i}", 1) for i in range(4)] + [(f"boxer_{i}", 2) for i in range(3)]
    write_pets(tmp_path, trainval, test, unlisted=("stray_1",))
    prepared = prepare(PrepareOptions(dataset="pets", root=tmp_path, size=16))
    assert prepared.classes == ["cat", "dog"]
    assert _totals(prepared) == {"train": 18, "val": 2, "test": 7}
    assert _per_class(prepared)["test"] == [4, 3]
    assert [Path(s["path"]).name for s in prepared.manifest["skipped"]] == ["stray_1.jpg"]


# ------------------------------------------------------------------------------------------------------------ cache


def test_load_or_prepare_reuses_the_cache_without_the_source(tmp_path):
    write_mnist(tmp_path, n_train=40, n_test=10)
    options = PrepareOptions(dataset="mnist", root=tmp_path)
    first = load_or_prepare(options)
    shutil.rmtree(tmp_path / "MNIST")
    second = load_or_prepare(options)
    assert second.directory == first.directory
    assert second.manifest == first.manifest  # same "created" stamp: read back, not prepared again
    for name in SPLITS:
        assert torch.equal(second.splits[name].images, first.splits[name].images)
        assert torch.equal(second.splits[name].labels, first.splits[name].labels)
    assert [p.name for p in (tmp_path / "prepared").iterdir()] == [first.directory.name]  # no staging left over
    with pytest.raises(DataMissing):  # other content options are a different cache, which needs the files
        load_or_prepare(PrepareOptions(dataset="mnist", root=tmp_path, seed=1))


def test_cache_key_ignores_root_and_download_but_not_content(tmp_path):
    base = PrepareOptions(dataset="digits", root=tmp_path)
    same = [PrepareOptions(dataset="digits", root=tmp_path, download=True),
            PrepareOptions(dataset="digits", root=tmp_path, storage="memory")]  # arrays: storage changes nothing
    assert {prepared_dir(o).name for o in same} == {prepared_dir(base).name}
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    folder = [PrepareOptions(dataset=f"folder:{tree}", root=tmp_path, storage=s) for s in ("memory", "files")]
    assert prepared_dir(folder[0]) != prepared_dir(folder[1])  # a file index is a different cache from tensors
    with pytest.raises(UsageError, match="--storage files is for image-file datasets"):
        prepare(PrepareOptions(dataset="digits", root=tmp_path, storage="files"))
    assert prepared_dir(PrepareOptions(dataset="digits", root=tmp_path / "x")).name == prepared_dir(base).name
    different = [PrepareOptions(dataset="digits", root=tmp_path, seed=1),
                 PrepareOptions(dataset="digits", root=tmp_path, size=16),
                 PrepareOptions(dataset="digits", root=tmp_path, classes=4),
                 PrepareOptions(dataset="digits", root=tmp_path, grayscale=True),
                 PrepareOptions(dataset="digits", root=tmp_path, split=(0.5, 0.25, 0.25))]  # fmt: skip
    names = {prepared_dir(o).name for o in different}
    assert len(names) == len(different) and prepared_dir(base).name not in names


# ------------------------------------------------------------------------------------------------------ bad options


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (dict(dataset="digits", size=2), "--size 2"),
        (dict(dataset="digits", classes=11), "--classes 11"),
        (dict(dataset="digits", classes=1), "--classes 1"),
        (dict(dataset="digits", val_fraction=0.0), "--val-fraction"),
        (dict(dataset="digits", storage="disk"), "disk"),
        (dict(dataset="catsdogs", classes=3), "--classes 3"),
    ],
)
def test_bad_options_raise_usage_error(tmp_path, options, fragment):
    with pytest.raises(UsageError) as info:
        prepare(PrepareOptions(root=tmp_path, **options))
    assert fragment in str(info.value)
    assert not (tmp_path / "prepared").exists() or not any((tmp_path / "prepared").iterdir())


def test_unknown_dataset_lists_the_choices(tmp_path):
    with pytest.raises(UsageError) as info:
        prepare(PrepareOptions(dataset="mnsit", root=tmp_path))
    message = str(info.value)
    assert "mnsit" in message
    for name in ("digits", "mnist", "cifar10", "cifar100", "flowers102", "catsdogs", "pets", "folder:"):
        assert name in message


def test_missing_folder_and_folder_class_limit(tmp_path, image_tree):
    missing = tmp_path / "nowhere"
    with pytest.raises(UsageError) as info:
        prepare(PrepareOptions(dataset=f"folder:{missing}", root=tmp_path))
    assert str(missing) in str(info.value)
    with pytest.raises(UsageError, match="--classes 4"):
        prepare(PrepareOptions(dataset=f"folder:{image_tree}", root=tmp_path, classes=4))


def test_source_is_only_for_catsdogs(tmp_path):
    write_mnist(tmp_path)
    with pytest.raises(UsageError, match="--source"):
        prepare(PrepareOptions(dataset="mnist", root=tmp_path, source=tmp_path))
    with pytest.raises(UsageError, match="does not exist"):
        prepare(PrepareOptions(dataset="catsdogs", root=tmp_path, source=tmp_path / "train.zip"))


# -------------------------------------------------------------------------------------------------------------- CLI


def test_cli_prepare_without_files_is_one_line_exit_2(tmp_path, capsys):
    code = main(["prepare", "mnist", "--root", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "train-images-idx3-ubyte" in lines[0] and "t10k-labels-idx1-ubyte" in lines[0]
    assert "--download" in lines[0]
    assert "Traceback" not in out + err


def test_cli_missing_folder_is_exit_2(tmp_path, capsys):
    code = main(["prepare", f"folder:{tmp_path / 'nowhere'}", "--root", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1 and "nowhere" in err
    assert "Traceback" not in out + err


def test_cli_bad_split_is_exit_2(tmp_path, capsys):
    code = main(["prepare", "digits", "--root", str(tmp_path), "--split", "0.5,0.2,0.2"])
    out, err = capsys.readouterr()
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "0.5,0.2,0.2" in err
    assert "Traceback" not in out + err


def test_cli_prepare_json_then_cached(tmp_path, capsys):
    argv = ["prepare", "digits", "--root", str(tmp_path), "--split", "64,16,20", "--classes", "4", "--json", "-q"]
    assert main(argv) == 0
    out, _ = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == 1
    first = json.loads(lines[0])
    assert Path(first["directory"]).is_dir()
    assert first["options"]["split"] == pytest.approx([0.64, 0.16, 0.20])
    assert len(first["classes"]) == 4 and first["input"]["num_classes"] == 4
    assert main(argv) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["directory"] == first["directory"] and second["created"] == first["created"]
    assert second["split_hashes"] == first["split_hashes"]
