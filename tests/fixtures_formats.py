"""Writers of tiny datasets in each dataset's real on-disk format, for tests that must not download anything.

Each writer puts files exactly where torchvision (or Kaggle) would and returns what it wrote, so tests can assert
that readers recover the same labels, counts and pixels.
"""

from __future__ import annotations

import gzip
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat


def jpeg_bytes(seed: int, size: int = 16) -> bytes:
    """A small noisy RGB JPEG (noise keeps the entropy-coded data long enough to truncate meaningfully)."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def truncated_jpeg_bytes(seed: int = 999) -> bytes:
    """A JPEG cut short: opens (header intact) but fails to decode."""
    data = jpeg_bytes(seed, size=32)
    return data[: int(len(data) * 0.6)]


def write_jpeg(path: Path, seed: int, size: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(seed, size))
    return path


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file (gzip-compressed when the name ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    data = header + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def write_mnist(root: Path, n_train: int = 6, n_test: int = 4, gz: bool = False, seed: int = 0) -> dict:
    """MNIST's four IDX files under root/MNIST/raw; returns {"train"/"test": (images (N,28,28), labels (N,))}."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    suffix = ".gz" if gz else ""
    written = {}
    for part, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
        written[part] = (images, labels)
    return written


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def write_cifar_batches(root: Path, classes: int = 10, per_batch: int = 3, seed: int = 0) -> dict:
    """CIFAR-10 (classes=10) or CIFAR-100 (classes=100) pickles in torchvision's layout.

    CIFAR-10 batches use bytes keys, like the real Python-2 pickles read with encoding="bytes"; CIFAR-100 uses str
    keys, so both key kinds are exercised. Labels are random, but the train labels name every class at least once
    when there are enough images (prepare refuses a class with no train image). Returns {"train"/"test":
    (images (N,3,32,32), labels), "classes": names}.
    """
    rng = np.random.default_rng(seed)
    ten = classes == 10
    folder = root / ("cifar-10-batches-py" if ten else "cifar-100-python")
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"class{i}" for i in range(classes)]
    train_files = [f"data_batch_{i}" for i in range(1, 6)] if ten else ["train"]
    label_key = "labels" if ten else "fine_labels"
    n_train = per_batch * len(train_files)
    every_class = rng.integers(0, classes, n_train)
    every_class[rng.choice(n_train, min(classes, n_train), replace=False)] = np.arange(min(classes, n_train))

    def batch(n: int, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, classes, n) if labels is None else labels
        entry = {"data": images.reshape(n, -1), label_key: labels.tolist()}
        return images, labels, {k.encode() if ten else k: v for k, v in entry.items()}

    train_images, train_labels = [], []
    for number, name in enumerate(train_files):
        images, labels, entry = batch(per_batch, every_class[number * per_batch : (number + 1) * per_batch])
        _dump(folder / name, entry)
        train_images.append(images)
        train_labels.append(labels)
    test_images, test_labels, entry = batch(per_batch)
    _dump(folder / ("test_batch" if ten else "test"), entry)
    meta_key = "label_names" if ten else "fine_label_names"
    _dump(folder / ("batches.meta" if ten else "meta"), {meta_key.encode() if ten else meta_key: names})
    return {
        "train": (np.concatenate(train_images), np.concatenate(train_labels)),
        "test": (test_images, test_labels),
        "classes": names,
    }


def write_flowers(root: Path, labels: list[int], splits: dict[str, list[int]]) -> dict:
    """Flowers-102 under root/flowers-102: one JPEG per entry of `labels` (1-based class ids, image i+1 has labels[i]).

    `splits` maps "trnid"/"valid"/"tstid" to 1-based image numbers. Returns {"labels", "splits"} as written.
    """
    base = root / "flowers-102"
    for number in range(1, len(labels) + 1):
        write_jpeg(base / "jpg" / f"image_{number:05d}.jpg", seed=number)
    savemat(base / "imagelabels.mat", {"labels": np.asarray(labels, dtype=np.uint8).reshape(1, -1)})
    savemat(base / "setid.mat", {k: np.asarray(v, dtype=np.uint16).reshape(1, -1) for k, v in splits.items()})
    return {"labels": labels, "splits": splits}


def write_pets(
    root: Path, trainval: list[tuple[str, int]], test: list[tuple[str, int]], unlisted: tuple[str, ...] = ()
) -> dict:
    """Oxford-IIIT Pet under root/oxford-iiit-pet: (image id, species 1=cat/2=dog) per listed image, plus images named
    in no list. Annotation files start with '#' comment lines like the real ones. Returns the lists as written."""
    base = root / "oxford-iiit-pet"
    (base / "annotations").mkdir(parents=True, exist_ok=True)
    seed = 0
    for list_name, entries in (("trainval.txt", trainval), ("test.txt", test)):
        lines = ["#Image CLASS-ID SPECIES BREED ID", "#ID: 1:37 Class ids", "#SPECIES: 1:Cat 2:Dog"]
        for image_id, species in entries:
            seed += 1
            write_jpeg(base / "images" / f"{image_id}.jpg", seed=seed)
            lines.append(f"{image_id} {seed} {species} {seed}")
        (base / "annotations" / list_name).write_text("\n".join(lines) + "\n")
    for image_id in unlisted:
        seed += 1
        write_jpeg(base / "images" / f"{image_id}.jpg", seed=seed)
    return {"trainval": trainval, "test": test, "unlisted": list(unlisted)}


def write_catsdogs(
    folder: Path, cats: list[int], dogs: list[int], corrupt: str | None = None, stray: str | None = None
) -> dict:
    """Kaggle-style cat.<n>.jpg / dog.<n>.jpg files in `folder`, plus an optional truncated JPEG named `corrupt` and
    an optional non-matching file named `stray`. Returns {"cats", "dogs", "corrupt", "stray"}."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, ids in (("cat", cats), ("dog", dogs)):
        for n in ids:
            write_jpeg(folder / f"{name}.{n}.jpg", seed=n + (0 if name == "cat" else 1000))
    if corrupt is not None:
        (folder / corrupt).write_bytes(truncated_jpeg_bytes())
    if stray is not None:
        (folder / stray).write_text("not an image\n")
    return {"cats": cats, "dogs": dogs, "corrupt": corrupt, "stray": stray}


def zip_folder(folder: Path, archive: Path, prefix: str = "train") -> Path:
    """Zip every file of `folder` as `prefix/<name>`, the way Kaggle's train.zip stores train/cat.0.jpg."""
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, f"{prefix}/{path.name}")
    return archive


def nest_zip(inner: Path, archive: Path) -> Path:
    """The competition's dogs-vs-cats.zip: train.zip inside, beside test1.zip and sampleSubmission.csv."""
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(inner, "train.zip")
        zf.writestr("sampleSubmission.csv", "id,label\n1,0\n")
        zf.writestr("test1.zip", b"PK\x05\x06" + b"\x00" * 18)  # an empty zip: the unlabeled test set is not read
    return archive


def write_image_folder(root: Path, counts: dict[str, int], size: int = 8) -> dict[str, int]:
    """ImageFolder tree: root/<class>/<i>.png with counts[class] images each. Returns `counts`."""
    for class_index, (name, count) in enumerate(counts.items()):
        for i in range(count):
            path = root / name / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((size, size, 3), 40 * class_index + i, dtype=np.uint8)).save(path)
    return counts
