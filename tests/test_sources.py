"""Readers of real on-disk dataset formats, and image decoding, on tiny files written into tmp_path."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnbench.data.catalog import DATASETS, get_dataset
from cnnbench.data.images import CorruptImage, ImageFileDataset, decode_image, decode_many, verify_many
from cnnbench.data.datasets import (
    read_catsdogs,
    read_cifar10,
    read_cifar100,
    read_digits,
    read_flowers102,
    read_folder,
    read_mnist,
    read_pets,
)
from cnnbench.core.errors import DataMissing, UsageError
from tests.fixtures_formats import (
    nest_zip,
    truncated_jpeg_bytes,
    write_catsdogs,
    write_cifar_batches,
    write_flowers,
    write_idx,
    write_image_folder,
    write_jpeg,
    write_mnist,
    write_pets,
    zip_folder,
)

# ------------------------------------------------------------------------------------------------------------ digits


def test_digits_scaled_to_uint8_with_one_train_part():
    from sklearn.datasets import load_digits

    data = read_digits()
    train = data.parts["train"]
    assert list(data.parts) == ["train"]
    assert data.classes == [str(d) for d in range(10)]
    assert train.images.shape == (1797, 1, 8, 8) and train.images.dtype == torch.uint8
    assert train.labels.dtype == np.int64
    raw = load_digits().images[0]
    expected = np.rint(raw * 255 / 16).astype(np.uint8)
    assert np.array_equal(train.images[0, 0].numpy(), expected)
    assert train.images.max().item() == 255


# ------------------------------------------------------------------------------------------------------------- MNIST


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_round_trips_pixels_and_labels(tmp_path, gz):
    written = write_mnist(tmp_path, n_train=6, n_test=4, gz=gz)
    data = read_mnist(tmp_path)
    assert data.classes == [str(d) for d in range(10)]
    assert set(data.parts) == {"train", "test"}
    for part, (images, labels) in written.items():
        got = data.parts[part]
        assert got.images.shape == (len(labels), 1, 28, 28) and got.images.dtype == torch.uint8
        assert np.array_equal(got.images[:, 0].numpy(), images)
        assert got.labels.dtype == np.int64 and got.labels.tolist() == labels.tolist()
    assert data.location == str(tmp_path / "MNIST" / "raw")


def test_mnist_missing_names_expected_directory(tmp_path):
    with pytest.raises(DataMissing) as err:
        read_mnist(tmp_path)
    message = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in message and "--download" in message
    assert "train-images-idx3-ubyte" in message and "\n" not in message


def test_mnist_truncated_idx_is_a_usage_error(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(UsageError, match="train-images-idx3-ubyte"):
        read_mnist(tmp_path)


def test_write_idx_header_is_big_endian(tmp_path):
    path = write_idx(tmp_path / "x", np.zeros((2, 300), dtype=np.uint8))
    assert path.read_bytes()[:12] == bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 1, 44])


# ------------------------------------------------------------------------------------------------------------- CIFAR


def test_cifar10_pickles_keep_channel_order(tmp_path):
    written = write_cifar_batches(tmp_path, classes=10, per_batch=3)
    data = read_cifar10(tmp_path)
    assert data.classes == written["classes"]
    train = data.parts["train"]
    assert train.images.shape == (15, 3, 32, 32) and train.images.dtype == torch.uint8
    assert np.array_equal(train.images.numpy(), written["train"][0])
    assert train.labels.tolist() == written["train"][1].tolist()
    assert len(data.parts["test"].labels) == 3


def test_cifar_row_layout_is_red_plane_first(tmp_path):
    """A row of 1024 reds, 1024 greens, 1024 blues must become pixel (0,0) = (r, g, b), not interleaved."""
    import pickle

    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_batches(tmp_path, classes=10, per_batch=1)
    row = np.concatenate([np.full(1024, 10), np.full(1024, 20), np.full(1024, 30)]).astype(np.uint8)
    row[1] = 99  # red channel, row 0, column 1
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": row.reshape(1, -1), b"labels": [7]}, f)
    image = read_cifar10(tmp_path).parts["test"].images[0]
    assert image[:, 0, 0].tolist() == [10, 20, 30]
    assert image[0, 0, 1].item() == 99 and image[1, 0, 1].item() == 20


def test_cifar100_fine_labels_and_names(tmp_path):
    written = write_cifar_batches(tmp_path, classes=100, per_batch=4)
    data = read_cifar100(tmp_path)
    assert len(data.classes) == 100 and data.classes[57] == "class57"
    assert data.parts["train"].labels.tolist() == written["train"][1].tolist()
    assert np.array_equal(data.parts["test"].images.numpy(), written["test"][0])


def test_cifar_missing_batch_is_named(tmp_path):
    write_cifar_batches(tmp_path, classes=10)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataMissing, match="data_batch_3") as err:
        read_cifar10(tmp_path)
    assert str(tmp_path / "cifar-10-batches-py") in str(err.value)


# ----------------------------------------------------------------------------------------------------------- flowers


def test_flowers_one_based_labels_and_official_splits(tmp_path):
    labels = [1, 2, 3, 1, 2, 3, 102]
    write_flowers(tmp_path, labels, {"trnid": [1, 2, 3], "valid": [4, 5], "tstid": [6, 7]})
    data = read_flowers102(tmp_path)
    assert len(data.classes) == 102
    assert data.classes[0] == "pink primrose"  # torchvision's names for label 1
    assert data.parts["train"].labels.tolist() == [0, 1, 2]
    assert data.parts["val"].labels.tolist() == [0, 1]
    assert data.parts["test"].labels.tolist() == [2, 101]
    assert [Path(p).name for p in data.parts["val"].paths] == ["image_00004.jpg", "image_00005.jpg"]
    assert data.skipped == []


def test_flowers_listed_but_missing_image_is_skipped(tmp_path):
    write_flowers(tmp_path, [1, 2, 3], {"trnid": [1, 2], "valid": [3], "tstid": [3]})
    (tmp_path / "flowers-102" / "jpg" / "image_00002.jpg").unlink()
    data = read_flowers102(tmp_path)
    assert data.parts["train"].labels.tolist() == [0]
    assert [Path(s["path"]).name for s in data.skipped] == ["image_00002.jpg"]


def test_flowers_missing_names_directory(tmp_path):
    with pytest.raises(DataMissing, match="flowers-102") as err:
        read_flowers102(tmp_path)
    assert "setid.mat" in str(err.value)


# -------------------------------------------------------------------------------------------------------------- pets


def test_pets_species_mapping_and_parts(tmp_path):
    write_pets(
        tmp_path,
        trainval=[("Abyssinian_1", 1), ("beagle_1", 2), ("Bengal_2", 1)],
        test=[("pug_3", 2), ("Persian_4", 1)],
        unlisted=("stray_9",),
    )
    data = read_pets(tmp_path)
    assert data.classes == ["cat", "dog"]
    assert data.parts["train"].labels.tolist() == [0, 1, 0]
    assert data.parts["test"].labels.tolist() == [1, 0]
    assert [Path(p).stem for p in data.parts["test"].paths] == ["pug_3", "Persian_4"]
    assert [Path(s["path"]).name for s in data.skipped] == ["stray_9.jpg"]


def test_pets_missing_names_directory(tmp_path):
    with pytest.raises(DataMissing) as err:
        read_pets(tmp_path)
    assert str(tmp_path / "oxford-iiit-pet") in str(err.value)


# ---------------------------------------------------------------------------------------------------------- catsdogs


def _check_catsdogs(data, corrupt_name: str):
    """Cats first then dogs, by numeric id (10 after 2); the corrupt jpg is kept (decoding reports it)."""
    train = data.parts["train"]
    names = [Path(p).name for p in train.paths]
    assert names == ["cat.0.jpg", "cat.2.jpg", "cat.10.jpg", "cat.11.jpg", "dog.1.jpg", "dog.3.jpg"]
    assert train.labels.tolist() == [0, 0, 0, 0, 1, 1]
    assert [Path(s["path"]).name for s in data.skipped] == ["readme.txt"]
    assert data.classes == ["cat", "dog"]
    return names.index(corrupt_name)


def _write_kaggle(folder: Path) -> None:
    write_catsdogs(folder, cats=[10, 0, 2], dogs=[3, 1], corrupt="cat.11.jpg", stray="readme.txt")


@pytest.mark.parametrize("subfolder", [False, True])
def test_catsdogs_from_folder(tmp_path, subfolder):
    source = tmp_path / "kaggle"
    _write_kaggle(source / "train" if subfolder else source)
    data = read_catsdogs(tmp_path / "data", source=source)
    corrupt_index = _check_catsdogs(data, "cat.11.jpg")
    images, kept, skipped = decode_many(data.parts["train"].paths, size=8, channels=3, workers=2)
    assert kept == [i for i in range(6) if i != corrupt_index]
    assert images.shape == (5, 3, 8, 8)
    assert [Path(s["path"]).name for s in skipped] == ["cat.11.jpg"]


@pytest.mark.parametrize("nested", [False, True])
def test_catsdogs_from_zip_extracts_once(tmp_path, nested):
    staging = tmp_path / "files"
    _write_kaggle(staging)
    archive = zip_folder(staging, tmp_path / "train.zip")
    if nested:
        archive = nest_zip(archive, tmp_path / "dogs-vs-cats.zip")
    root = tmp_path / "data"
    data = read_catsdogs(root, source=archive)
    _check_catsdogs(data, "cat.11.jpg")
    assert data.location == str(root / "catsdogs" / "train")
    assert [p.name for p in (root / "catsdogs").iterdir()] == ["train"]  # no staging folder or inner zip left
    # Later runs read the extracted copy without --source.
    again = read_catsdogs(root, source=None)
    assert again.parts["train"].paths == data.parts["train"].paths


def test_catsdogs_missing_says_pass_source(tmp_path):
    with pytest.raises(DataMissing) as err:
        read_catsdogs(tmp_path, source=None)
    message = str(err.value)
    assert "--source" in message and str(tmp_path / "catsdogs" / "train") in message


def test_catsdogs_zip_without_images_is_usage_error(tmp_path):
    import zipfile

    archive = tmp_path / "other.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("notes.txt", "hello")
    with pytest.raises(UsageError, match="other.zip"):
        read_catsdogs(tmp_path / "data", source=archive)
    assert not (tmp_path / "data" / "catsdogs" / "train").exists()


# ------------------------------------------------------------------------------------------------------------ folder


def test_folder_tree_classes_and_counts(tmp_path):
    write_image_folder(tmp_path / "tree", {"b_ship": 2, "a_plane": 3, "c_car": 1})
    (tmp_path / "tree" / "c_car" / "notes.txt").write_text("x")
    data = read_folder(tmp_path / "tree")
    assert data.classes == ["a_plane", "b_ship", "c_car"]
    assert data.parts["train"].labels.tolist() == [0, 0, 0, 1, 1, 2]
    assert [Path(s["path"]).name for s in data.skipped] == ["notes.txt"]


def test_folder_files_keep_os_walks_order(tmp_path):
    """The order the members had when os.walk listed them, so trees prepared before keep their split hashes."""
    import os

    tree = tmp_path / "tree"
    for relative in ("a/z.png", "a/B.png", "a/sub/2.png", "a/sub/10.png", "a/Sub/x.png", "a/sub/deeper/0.png",
                     "a/b.png", "b/only.png"):  # fmt: skip
        write_jpeg(tree / relative, seed=len(relative))
    walked = []
    for class_dir in sorted(p for p in tree.iterdir() if p.is_dir()):
        for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
            dirnames.sort()
            walked += [os.path.join(dirpath, name) for name in sorted(filenames)]
    assert read_folder(tree).parts["train"].paths == walked


def test_folder_missing_or_flat_is_usage_error(tmp_path):
    with pytest.raises(UsageError, match="nowhere"):
        read_folder(tmp_path / "nowhere")
    write_jpeg(tmp_path / "flat" / "a.jpg", seed=1)
    with pytest.raises(UsageError, match="flat"):
        read_folder(tmp_path / "flat")


# ---------------------------------------------------------------------------------------------- the dataset registry


def test_every_dataset_reads_through_its_entry(tmp_path):
    from cnnbench.data.prepare import PrepareOptions

    write_mnist(tmp_path)
    write_image_folder(tmp_path / "tree", {"ant": 2, "bee": 3})
    for name, expected in (("digits", read_digits()), ("mnist", read_mnist(tmp_path)),
                           (f"folder:{tmp_path / 'tree'}", read_folder(tmp_path / "tree"))):  # fmt: skip
        raw = get_dataset(name).read(PrepareOptions(dataset=name, root=tmp_path))
        assert raw.classes == expected.classes and raw.location == expected.location
        assert {part: p.labels.tolist() for part, p in raw.parts.items()} == {
            part: p.labels.tolist() for part, p in expected.parts.items()
        }


def test_a_folder_is_a_parametrised_entry_made_concrete_by_its_path(tmp_path):
    write_image_folder(tmp_path / "tree", {"ant": 1, "bee": 1, "cow": 1})
    entry = get_dataset(f"folder:{tmp_path / 'tree'}")
    assert entry.name == f"folder:{tmp_path / 'tree'}" and entry.num_classes == 3 and entry.photos
    assert entry.parameter is None and entry.cache_name == "folder"
    assert DATASETS.get("folder").usage == "folder:PATH"
    with pytest.raises(UsageError, match=r"dataset 'folder' needs its PATH: folder:PATH"):
        get_dataset("folder")
    with pytest.raises(UsageError, match="does not exist"):
        get_dataset(f"folder:{tmp_path / 'nowhere'}")
    with pytest.raises(UsageError, match=r"unknown dataset 'mnsit' \(did you mean mnist\?\).*pets, folder:PATH"):
        get_dataset("mnsit")


# Cache folders prepared before datasets became registry entries: the same options must find them.
CACHES_BEFORE_THE_REGISTRY = [
    ({"dataset": "digits"}, "digits-d5a6b83b2db0"),
    ({"dataset": "mnist", "seed": 3, "size": 28}, "mnist-af4c46e8dabc"),
    ({"dataset": "cifar100", "classes": 5}, "cifar100-26e849bafeef"),
    ({"dataset": "flowers102", "storage": "files"}, "flowers102-7d9c51a14a72"),
    ({"dataset": "catsdogs", "split": (0.6, 0.2, 0.2), "grayscale": True}, "catsdogs-5fd0d9170031"),
]


@pytest.mark.parametrize(("options", "folder"), CACHES_BEFORE_THE_REGISTRY)
def test_prepared_cache_names_are_unchanged(tmp_path, options, folder):
    from cnnbench.data.prepare import PrepareOptions, prepared_dir

    assert prepared_dir(PrepareOptions(root=tmp_path, **options)) == tmp_path / "prepared" / folder


def test_a_folder_datasets_cache_name_is_its_path_and_contents_in_any_spelling(tmp_path, monkeypatch):
    from cnnbench.data.prepare import PrepareOptions, prepared_dir

    write_image_folder(tmp_path / "tree", {"ant": 1, "bee": 1})
    monkeypatch.chdir(tmp_path)
    # The key as it was computed before the registry (the tree's absolute path and the storage), plus a digest of the
    # tree's files, so that a tree changed since it was prepared is prepared again.
    key = {"dataset": f"folder:{(tmp_path / 'tree').resolve()}", "split": None, "val_fraction": 0.1, "seed": 0,
           "classes": None, "grayscale": False, "size": 12, "source": None, "storage": "auto"}  # fmt: skip
    content_key = PrepareOptions(dataset=f"folder:{tmp_path / 'tree'}", root=tmp_path, size=12).content_key()
    assert content_key == {**key, "files": content_key["files"]} and len(content_key["files"]) == 64
    expected = "folder-" + hashlib.sha256(json.dumps(content_key, sort_keys=True).encode()).hexdigest()[:12]
    for spelling in (str(tmp_path / "tree"), "tree", "./tree/"):
        assert prepared_dir(PrepareOptions(dataset=f"folder:{spelling}", root=tmp_path, size=12)).name == expected


# ------------------------------------------------------------------------------------------------------------ images


def test_decode_image_resizes_and_converts(tmp_path):
    path = tmp_path / "red.png"
    Image.fromarray(np.full((10, 20, 3), (200, 0, 0), dtype=np.uint8)).save(path)
    rgb = decode_image(str(path), size=6, channels=3)
    assert rgb.shape == (3, 6, 6) and rgb.dtype == torch.uint8
    assert rgb[:, 3, 3].tolist() == [200, 0, 0]
    grey = decode_image(str(path), size=6, channels=1)
    assert grey.shape == (1, 6, 6) and grey[0, 0, 0].item() == 60  # PIL's L = 0.299 * R


@pytest.mark.parametrize("content", [b"", b"garbage bytes, not an image", truncated_jpeg_bytes()])
def test_decode_image_raises_corrupt_image(tmp_path, content):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(CorruptImage) as err:
        decode_image(str(path), size=8, channels=3)
    assert err.value.path == str(path) and err.value.reason
    assert not isinstance(err.value, UsageError)


def test_decode_many_keeps_good_files_in_order(tmp_path):
    paths = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((4, 4), 50 * i, dtype=np.uint8)).save(path)
        paths.append(str(path))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(truncated_jpeg_bytes())
    paths.insert(2, str(bad))
    calls = []
    images, kept, skipped = decode_many(paths, size=4, channels=1, workers=3, progress=calls.append)
    assert kept == [0, 1, 3, 4, 5]
    assert images[:, 0, 0, 0].tolist() == [0, 50, 100, 150, 200]
    assert skipped == [{"path": str(bad), "reason": skipped[0]["reason"], "kind": "truncated"}]
    assert "truncated" in skipped[0]["reason"]
    assert calls and calls[-1] == len(paths)


def test_verify_many_catches_truncated_and_garbage(tmp_path):
    good = write_jpeg(tmp_path / "good.jpg", seed=1)
    truncated = tmp_path / "trunc.jpg"
    truncated.write_bytes(truncated_jpeg_bytes())
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG nonsense")
    kept, skipped = verify_many([str(truncated), str(good), str(garbage)], workers=2)
    assert kept == [1]
    assert [s["path"] for s in skipped] == [str(truncated), str(garbage)]


def test_image_file_dataset_items(tmp_path):
    paths = [str(write_jpeg(tmp_path / f"{i}.jpg", seed=i, size=20)) for i in range(3)]
    dataset = ImageFileDataset(paths, [2, 0, 1], size=12, channels=3)
    assert len(dataset) == 3
    image, label = dataset[0]
    assert image.shape == (3, 12, 12) and image.dtype == torch.uint8 and label == 2
    batch, labels = next(iter(torch.utils.data.DataLoader(dataset, batch_size=3)))
    assert batch.shape == (3, 3, 12, 12) and labels.tolist() == [2, 0, 1]


def test_a_failed_download_names_the_files_to_place_by_hand(tmp_path, monkeypatch):
    import torchvision.datasets

    from cnnbench.data.datasets import read_mnist
    from cnnbench.core.errors import DataMissing

    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(DataMissing) as caught:
        read_mnist(tmp_path, download=True)
    message = str(caught.value)
    assert "download into" in message and "Name or service not known" in message
    assert "train-images-idx3-ubyte" in message and str(tmp_path / "MNIST" / "raw") in message
