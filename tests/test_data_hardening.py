"""Data sets read right or refused: folder caches keyed by their files, every image mode, links, classes left empty,
skipped files counted, staging leftovers, complete-only presence, damaged caches and unwritable places."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnbench.data.images import ImageFileDataset, decode_image, decode_many, to_8bit, verify_many
from cnnbench.data.prepare import SPLITS, DamagedCache, PrepareOptions, load_or_prepare, prepare, prepared_dir
from cnnbench.core.errors import DataMissing, UsageError
from tests.fixtures_formats import (
    truncated_jpeg_bytes,
    write_catsdogs,
    write_flowers,
    write_image_folder,
    write_mnist,
    write_pets,
    zip_folder,
)


def _one_line_error(result, code: int = 2) -> str:
    """The CLI failed the way users are promised: the exit code, one line on stderr, no traceback."""
    assert result.code == code, (result.code, result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnbench: error: "), result.err
    assert "Traceback" not in result.out + result.err
    return lines[0]


def _total(prepared) -> int:
    return sum(prepared.manifest["counts"][name]["total"] for name in SPLITS)


def _png(path: Path, value: int, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(path)
    return path


# ------------------------------------------------------------------------------- 1. caches keyed by folder contents


def test_a_folder_changed_since_it_was_prepared_is_prepared_again(tmp_path):
    tree = tmp_path / "tree"
    write_image_folder(tree, {"ant": 5, "bee": 5}, size=8)
    options = PrepareOptions(dataset=f"folder:{tree}", root=tmp_path / "data", size=8)
    first = load_or_prepare(options)
    assert _total(first) == 10
    again = load_or_prepare(options)  # nothing changed: the same cache, read back rather than prepared again
    assert again.directory == first.directory and again.manifest["created"] == first.manifest["created"]

    _png(tree / "ant" / "extra.png", 7)
    added = load_or_prepare(options)
    assert added.directory != first.directory and _total(added) == 11

    replaced = tree / "bee" / "0.png"
    _png(replaced, 250)
    later = replaced.stat().st_mtime + 5
    os.utime(replaced, (later, later))
    changed = load_or_prepare(options)
    assert changed.directory not in (first.directory, added.directory) and _total(changed) == 11
    pixels = {int(image.float().mean().round()) for split in changed.splits.values() for image in split.images}
    assert 250 in pixels  # the new content, not the cached old one

    (tree / "ant" / "extra.png").unlink()
    removed = load_or_prepare(options)
    assert _total(removed) == 10 and removed.directory not in (added.directory, changed.directory)


def test_catsdogs_given_as_a_folder_is_keyed_by_its_files(tmp_path):
    folder = tmp_path / "kaggle"
    write_catsdogs(folder, cats=list(range(5)), dogs=list(range(5)))
    options = PrepareOptions(dataset="catsdogs", root=tmp_path / "data", source=folder, size=8)
    first = load_or_prepare(options)
    _png(folder / "dog.99.jpg", 30)
    second = load_or_prepare(options)
    assert second.directory != first.directory and _total(second) == _total(first) + 1

    # An archive is keyed by the folder it is extracted to, once extracted: the second prepare finds the first's cache.
    archive = zip_folder(folder, tmp_path / "train.zip")
    from_zip = PrepareOptions(dataset="catsdogs", root=tmp_path / "other", source=archive, size=8)
    extracted = load_or_prepare(from_zip)
    assert load_or_prepare(from_zip).manifest["created"] == extracted.manifest["created"]
    assert prepared_dir(from_zip) == extracted.directory


# ----------------------------------------------------------------------------------- 2. every mode, one conversion


def _saved(tmp_path: Path, name: str, image: Image.Image, **save) -> str:
    path = tmp_path / name
    image.save(path, **save)
    return str(path)


def _decoded(path: str, channels: int = 3) -> np.ndarray:
    """The image as both decoding paths give it (prepare's decode_many, training's ImageFileDataset), checked equal."""
    with Image.open(path) as img:
        size = img.size[0]
    images, kept, skipped = decode_many([path], size=size, channels=channels, workers=1)
    assert kept == [0] and skipped == [], skipped
    streamed, _ = ImageFileDataset([path], [0], size=size, channels=channels)[0]
    assert torch.equal(images[0], streamed) and torch.equal(streamed, decode_image(path, size, channels))
    assert verify_many([path])[0] == [0]
    return images[0].permute(1, 2, 0).numpy()


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    levels = np.array([[0, 257 * 100, 32768, 65535]], dtype=np.uint16)
    little = _saved(tmp_path, "g16.png", Image.fromarray(levels))
    big = _saved(tmp_path, "g16b.tif", Image.frombytes("I;16B", (4, 1), levels.astype(">u2").tobytes()))
    pgm = tmp_path / "g16.pgm"  # Pillow opens 16-bit PGM as mode I
    pgm.write_bytes(b"P5 4 1 65535\n" + levels.astype(">u2").tobytes())
    for path, mode in ((little, "I;16"), (big, "I;16B"), (str(pgm), "I")):
        with Image.open(path) as img:
            assert img.mode == mode
        assert _decoded(path, channels=1)[0, :, 0].tolist() == [0, 100, 128, 255], path
        assert _decoded(path, channels=3)[0, 3].tolist() == [255, 255, 255]


def test_wide_integer_and_float_images_use_their_range(tmp_path):
    wide = _saved(tmp_path, "i32.tif", Image.fromarray(np.array([[-1000, 0, 1000, 3000]], dtype=np.int32)))
    assert _decoded(wide, channels=1)[0, :, 0].tolist() == [0, 64, 128, 255]  # its own min..max
    unit = _saved(tmp_path, "unit.tif", Image.fromarray(np.array([[0.0, 0.5, 1.0, np.nan]], dtype=np.float32)))
    assert _decoded(unit, channels=1)[0, :, 0].tolist() == [0, 128, 255, 0]  # 0..1 floats; NaN is 0
    eight = _saved(tmp_path, "eight.tif", Image.fromarray(np.array([[0.0, 10.0, 200.0, 255.0]], dtype=np.float32)))
    assert _decoded(eight, channels=1)[0, :, 0].tolist() == [0, 10, 200, 255]
    other = _saved(tmp_path, "other.tif", Image.fromarray(np.array([[-2.0, 0.0, 2.0, 6.0]], dtype=np.float32)))
    assert _decoded(other, channels=1)[0, :, 0].tolist() == [0, 64, 128, 255]


def test_palette_alpha_cmyk_and_bilevel_images(tmp_path):
    palette = Image.new("P", (2, 2))
    palette.putpalette([10, 20, 30, 200, 100, 50])
    palette.putpixel((1, 0), 1)
    plain = _saved(tmp_path, "p.png", palette)
    assert _decoded(plain)[0, :2].tolist() == [[10, 20, 30], [200, 100, 50]]  # the palette's colours
    palette.info["transparency"] = 0
    clear = _saved(tmp_path, "pt.png", palette)
    with Image.open(clear) as img:
        assert img.mode == "P" and "transparency" in img.info
    assert _decoded(clear)[0, :2].tolist() == [[0, 0, 0], [200, 100, 50]]  # the transparent entry over black

    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (200, 100, 50, 128)
    rgba[0, 1] = (90, 180, 250, 0)  # transparent: its colour is garbage, and must not leak into the data
    rgba[1, :] = (1, 2, 3, 255)
    assert _decoded(_saved(tmp_path, "rgba.png", Image.fromarray(rgba, "RGBA"))).tolist() == [
        [[100, 50, 25], [0, 0, 0]], [[1, 2, 3], [1, 2, 3]]]  # fmt: skip
    grey_alpha = np.zeros((2, 2, 2), dtype=np.uint8)
    grey_alpha[..., 0], grey_alpha[..., 1] = 200, 128
    assert _decoded(_saved(tmp_path, "la.png", Image.fromarray(grey_alpha, "LA")), channels=1)[0, 0, 0] == 100

    cmyk = _saved(tmp_path, "cmyk.tif", Image.new("CMYK", (2, 2), (128, 0, 0, 128)))
    assert _decoded(cmyk)[0, 0].tolist() == [63, 127, 127]  # (255 - C) (255 - K) / 255
    bilevel = Image.new("1", (2, 2))
    bilevel.putpixel((1, 0), 1)
    assert _decoded(_saved(tmp_path, "one.png", bilevel), channels=1)[0, :, 0].tolist() == [0, 255]


def test_premultiplied_and_lab_modes_convert_in_memory():
    premultiplied = Image.new("RGBA", (1, 1), (200, 100, 50, 128)).convert("RGBa")
    assert to_8bit(premultiplied, "RGB").getpixel((0, 0)) == (100, 50, 25)
    white = Image.new("LAB", (1, 1), (255, 128, 128))
    assert all(value >= 250 for value in to_8bit(white, "RGB").getpixel((0, 0)))


def test_prepare_stores_the_converted_pixels(tmp_path):
    tree = tmp_path / "tree"
    for i in range(3):
        (tree / "deep").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4), 257 * 100, dtype=np.uint16)).save(tree / "deep" / f"{i}.png")
        _png(tree / "flat" / f"{i}.png", 0, size=4)
    prepared = prepare(PrepareOptions(dataset=f"folder:{tree}", root=tmp_path / "data", size=4, grayscale=True,
                                      split=(0.34, 0.33, 0.33)))  # fmt: skip
    for split in prepared.splits.values():
        for image, label in zip(split.images, split.labels.tolist()):
            assert int(image.max()) == (100 if prepared.classes[label] == "deep" else 0)  # Pillow alone clips to 255


# --------------------------------------------------------------------------------------------------------- 3. links


def test_links_never_count_a_file_twice(tmp_path):
    tree = tmp_path / "tree"
    for i in range(4):
        _png(tree / "a" / f"{i}.png", 10 + i)
        _png(tree / "b" / f"{i}.png", 100 + i)
    outside = _png(tmp_path / "elsewhere" / "shared.png", 200)
    os.symlink(tree / "a" / "0.png", tree / "a" / "same.png")  # a symlink to a file in the tree
    os.link(tree / "a" / "1.png", tree / "b" / "hard.png")  # a hard link into another class
    os.symlink(tree / "b" / "0.png", tree / "a" / "0link.png")  # read first, but the real name wins: class b
    os.symlink(tree / "a", tree / "b" / "again")  # a linked folder already read
    os.symlink(tree / "a", tree / "a" / "loop")  # a cycle
    os.symlink(outside, tree / "a" / "out.png")  # a file outside the tree: read once
    os.symlink(outside, tree / "b" / "out.png")
    prepared = prepare(PrepareOptions(dataset=f"folder:{tree}", root=tmp_path / "data", size=8))

    assert _total(prepared) == 9  # 8 files and the one outside
    assert prepared.manifest["skipped_by_reason"] == {"duplicate link": 6}  # same, hard, 0link, again, loop, b/out
    kept = {}
    for split in prepared.splits.values():
        for image, label in zip(split.images, split.labels.tolist()):
            value = int(image.float().mean().round())
            assert value not in kept, f"the image {value} is read twice"
            kept[value] = prepared.classes[label]
    assert kept[100] == "b" and kept[11] == "a" and kept[200] == "a"


def test_a_class_folder_that_only_links_to_another_is_refused(tmp_path):
    tree = tmp_path / "tree"
    for i in range(3):
        _png(tree / "b" / f"{i}.png", i)
    os.symlink(tree / "b", tree / "a")
    _png(tree / "c" / "0.png", 9)
    with pytest.raises(UsageError, match=r"class folder .*/a holds only links to images that are read under another"):
        prepare(PrepareOptions(dataset=f"folder:{tree}", root=tmp_path / "data", size=8))


# ------------------------------------------------------------------------------- 4. classes a model cannot learn


def test_a_tree_with_one_class_folder_is_refused(cli, tmp_path):
    write_image_folder(tmp_path / "tree", {"only": 4})
    line = _one_line_error(cli("prepare", f"folder:{tmp_path / 'tree'}", "--root", tmp_path / "data", "-q"))
    assert "one class folder (only)" in line and "at least two" in line


def test_a_class_left_empty_by_unreadable_files_is_refused_naming_it(cli, tmp_path):
    tree = tmp_path / "tree"
    write_image_folder(tree, {"ant": 4, "bee": 4})
    (tree / "cow").mkdir()
    for i in range(2):
        (tree / "cow" / f"{i}.jpg").write_bytes(truncated_jpeg_bytes())
    line = _one_line_error(cli("prepare", f"folder:{tree}", "--root", tmp_path / "data", "--size", "8", "-q"))
    assert f"class 'cow' ({tree / 'cow'})" in line and "2 truncated" in line and "no readable images" in line
    assert not list((tmp_path / "data" / "prepared").glob("*"))


def test_a_fixed_class_list_with_a_class_missing_is_refused(tmp_path):
    write_pets(tmp_path, trainval=[(f"Abyssinian_{i}", 1) for i in range(6)], test=[("Bengal_9", 1)])
    with pytest.raises(UsageError, match=r"pets: class 'dog' has no readable images .*--download"):
        prepare(PrepareOptions(dataset="pets", root=tmp_path, size=8))


def test_a_class_too_small_for_the_splits(tmp_path, caplog):
    tree = tmp_path / "tree"
    write_image_folder(tree, {"ant": 10, "bee": 10, "rare": 1})
    prepared = prepare(PrepareOptions(dataset=f"folder:{tree}", root=tmp_path / "data", size=8))
    assert prepared.manifest["counts"]["train"]["per_class"][2] == 1  # learned from its one image...
    assert any("'rare' (none in val or test)" in r.message and r.levelname == "WARNING" for r in caplog.records)  # ...and the user told it is not measured
    with pytest.raises(UsageError, match=r"class 'rare' has no image in the train split \(0 in train, 1 in val"):
        prepare(PrepareOptions(dataset=f"folder:{tree}", root=tmp_path / "data", size=8, split=(0.4, 0.3, 0.3)))


# -------------------------------------------------------------------------------------- 5. skipped files, by reason


def test_skipped_files_are_counted_by_reason(cli, tmp_path):
    tree = tmp_path / "tree"
    write_image_folder(tree, {"ant": 4, "bee": 4})
    (tree / "ant" / "broken.jpg").write_bytes(truncated_jpeg_bytes())
    (tree / "ant" / "garbage.png").write_bytes(b"not a png at all")
    (tree / "bee" / "notes.txt").write_text("x")
    (tree / "bee" / ".DS_Store").write_bytes(b"\0")
    os.symlink(tree / "bee" / "nowhere.png", tree / "bee" / "dangling.png")
    os.symlink(tree / "bee" / "0.png", tree / "bee" / "dup.png")
    result = cli("prepare", f"folder:{tree}", "--root", tmp_path / "data", "--size", "8", "--json")
    assert result.code == 0, result.err
    manifest = result.json()
    expected = {"not an image": 3, "duplicate link": 1, "truncated": 1, "unreadable": 1}
    assert manifest["skipped_by_reason"] == expected
    assert sum(expected.values()) == len(manifest["skipped"])
    assert {s["kind"] for s in manifest["skipped"]} == set(expected)
    assert "warning: skipped 6 file(s): 3 not an image, 1 duplicate link, 1 truncated, 1 unreadable" in result.err
    on_disk = json.loads((Path(manifest["directory"]) / "manifest.json").read_text())
    assert on_disk["skipped_by_reason"] == expected


# ------------------------------------------------------------------------------------ 6. staging folders left over


def test_stale_staging_folders_are_removed_and_live_ones_kept(tmp_path):
    from cnnbench.data.staging import host as _host

    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    now, hours_ago = time.time_ns(), time.time_ns() - 2 * 3600 * 10**9
    cache_root = tmp_path / "prepared"
    names = {
        "dead": f".tmp-digits-x@{_host()}@{finished.pid}@{now}",
        "live": f".tmp-digits-x@{_host()}@{os.getpid()}@{hours_ago}",
        "remote recent": f".tmp-digits-x@another-host@12@{now}",
        "remote old": f".tmp-digits-x@another-host@12@{hours_ago}",
        "unowned old": ".tmp-digits-x-123",
        "unowned recent": ".tmp-digits-x-456",
    }
    for name in names.values():
        (cache_root / name).mkdir(parents=True)
        (cache_root / name / "train.pt").write_bytes(b"partial")
    old = time.time() - 2 * 3600
    os.utime(cache_root / names["unowned old"], (old, old))
    prepare(PrepareOptions(dataset="digits", root=tmp_path))
    left = {path.name for path in cache_root.iterdir() if path.name.startswith(".tmp-")}
    assert left == {names["live"], names["remote recent"], names["unowned recent"]}


# ----------------------------------------------------------------------------------- 7. present only when complete


def _present(cli, root: Path) -> dict[str, bool]:
    result = cli("datasets", "--root", root, "--json")
    assert result.code == 0, result.err
    return {row["name"]: row["present"] for row in result.json()["datasets"]}


def test_datasets_says_present_only_when_the_files_are_complete(cli, tmp_path):
    for folder in ("MNIST/raw", "cifar-10-batches-py", "flowers-102/jpg", "oxford-iiit-pet/images", "catsdogs/train"):
        (tmp_path / folder).mkdir(parents=True)  # what an interrupted download leaves
    (tmp_path / "oxford-iiit-pet" / "annotations").mkdir()
    (tmp_path / "oxford-iiit-pet" / "annotations" / "trainval.txt").write_text("")
    write_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").write_bytes(b"")
    present = _present(cli, tmp_path)
    assert present == {"digits": True, "mnist": False, "cifar10": False, "cifar100": False, "flowers102": False,
                       "catsdogs": False, "pets": False, "shapes": True,
                       "shapes-small": True, "shapes-other": True}  # fmt: skip
    row = next(r for r in cli("datasets", "--root", tmp_path, "--json").json()["datasets"] if r["name"] == "mnist")
    assert row["missing"] == ["t10k-labels-idx1-ubyte"]
    assert "incomplete" in cli("datasets", "--root", tmp_path).out

    write_mnist(tmp_path)
    write_flowers(tmp_path, [1, 2], {"trnid": [1], "valid": [2], "tstid": [2]})
    write_pets(tmp_path, trainval=[("Abyssinian_1", 1)], test=[("beagle_2", 2)])
    write_catsdogs(tmp_path / "catsdogs" / "train", cats=[0], dogs=[0])
    present = _present(cli, tmp_path)
    assert all(present[name] for name in ("mnist", "flowers102", "pets", "catsdogs")) and not present["cifar10"]


def test_an_empty_file_counts_as_missing_when_preparing(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"")
    with pytest.raises(DataMissing, match=r"missing or empty .*\(need train-images-idx3-ubyte\)"):
        prepare(PrepareOptions(dataset="mnist", root=tmp_path))


# -------------------------------------------------------------------------------------------- 8. a damaged cache


@pytest.fixture
def digits_cache(tmp_path):
    options = PrepareOptions(dataset="digits", root=tmp_path)
    return options, load_or_prepare(options)


@pytest.mark.parametrize(("name", "damage"), [("train.pt", "truncated"), ("val.pt", "truncated"),
                                              ("test.pt", "truncated"), ("val.pt", "flipped"), ("test.pt", "deleted")])
def test_a_damaged_tensor_file_is_never_used(cli, digits_cache, name, damage):
    options, prepared = digits_cache
    path = prepared.directory / name
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flipped":  # same size, loads without complaint: only the recorded digest catches it
        data[len(data) - 4096] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        path.unlink()
    with pytest.raises(DamagedCache) as info:
        load_or_prepare(options)
    assert str(path) in str(info.value) and f"delete {prepared.directory} and prepare again" in str(info.value)
    line = _one_line_error(cli("prepare", "digits", "--root", options.root, "-q"))
    assert f"{name} is damaged" in line


@pytest.mark.parametrize("content", ["{not json", '{"storage": "memory"}', "[1, 2]", ""])
def test_a_damaged_manifest_means_prepare_again(digits_cache, content, caplog):
    options, prepared = digits_cache
    (prepared.directory / "manifest.json").write_text(content)
    again = load_or_prepare(options)
    assert again.directory == prepared.directory
    assert again.manifest["split_hashes"] == prepared.manifest["split_hashes"]
    assert torch.equal(again.splits["train"].images, prepared.splits["train"].images)
    assert any("manifest.json is damaged" in line and "preparing again" in line for line in caplog.messages)
    assert [p.name for p in prepared.directory.parent.iterdir()] == [prepared.directory.name]  # nothing left aside


def test_a_damaged_manifest_without_the_source_files_says_both(tmp_path):
    write_mnist(tmp_path, n_train=20, n_test=10)
    options = PrepareOptions(dataset="mnist", root=tmp_path)
    prepared = load_or_prepare(options)
    shutil.rmtree(tmp_path / "MNIST")
    (prepared.directory / "manifest.json").write_text("{")
    with pytest.raises(DataMissing, match=r"manifest.json is damaged .* cannot be prepared again: mnist: files"):
        load_or_prepare(options)


def test_a_damaged_file_index_is_refused(cli, tmp_path):
    tree = tmp_path / "tree"
    write_image_folder(tree, {"ant": 4, "bee": 4})
    args = ("prepare", f"folder:{tree}", "--root", tmp_path / "data", "--size", "8", "--storage", "files")
    assert cli(*args).code == 0
    index = next((tmp_path / "data" / "prepared").glob("folder-*/index.json"))
    index.write_text(index.read_text()[:-40])
    line = _one_line_error(cli(*args, "-q"))
    assert f"{index} is damaged" in line and f"delete {index.parent} and prepare again" in line


# ------------------------------------------------------------------------------------------ 9. unwritable places


def test_a_root_that_is_a_file_is_refused_before_reading(cli, tmp_path):
    not_a_folder = tmp_path / "data.txt"
    not_a_folder.write_text("x")
    line = _one_line_error(cli("prepare", "digits", "--root", not_a_folder, "-q"))
    assert f"cannot write the prepared cache under {not_a_folder / 'prepared'}" in line and "is a file" in line


def test_a_read_only_root_is_refused(cli, tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    if os.geteuid() != 0:
        root.chmod(0o555)  # root ignores permission bits: then the OS's answer is simulated below
    else:
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) == root and mode & os.W_OK
                            else real_access(path, mode, **kw))  # fmt: skip
    try:
        line = _one_line_error(cli("prepare", "digits", "--root", root, "-q"))
    finally:
        root.chmod(0o755)
    assert f"cannot write the prepared cache under {root / 'prepared'}: Permission denied" in line
    assert "pass --root a folder you can write to" in line


@pytest.mark.parametrize(("code", "words"), [(errno.ENOSPC, "No space left on device; free space on /"),
                                             (errno.EROFS, "pass --root a folder you can write to"),
                                             (errno.EDQUOT, "free space within your quota")])  # fmt: skip
def test_the_cache_write_failing_is_one_line_and_leaves_nothing(cli, tmp_path, monkeypatch, code, words):
    import cnnbench.data.staging as staging

    def fail(path, write):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(staging, "write_atomic", fail)
    line = _one_line_error(cli("prepare", "digits", "--root", tmp_path, "-q"))
    assert f"cannot write {tmp_path / 'prepared'}: {os.strerror(code)}" in line
    assert words in line
    assert list((tmp_path / "prepared").iterdir()) == []  # the staging folder is removed


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare to mount a tmpfs")
@pytest.mark.parametrize(("mount", "words"), [("ro", "Read-only file system"), ("size=4k", "No space left")])
def test_a_real_read_only_or_full_filesystem(tmp_path, mount, words):
    """The same on a real tmpfs, mounted in a private namespace (skipped where unprivileged namespaces are off): torch
    reports a full disk as a RuntimeError about stream positions, which only a real full disk shows."""
    tree, root = tmp_path / "tree", tmp_path / "mnt"
    write_image_folder(tree, {"ant": 2, "bee": 2}, size=4)
    root.mkdir()
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs tmpfs {root}"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {probe.stderr.decode().strip()}")
    prepare_there = f"{sys.executable} -m cnnbench prepare folder:{tree} --size 4 --split 0.5,0,0.5 -q --root {root}"
    script = f"mount -t tmpfs -o {mount} tmpfs {root} && exec {prepare_there}"
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in result.stderr, result.stderr
