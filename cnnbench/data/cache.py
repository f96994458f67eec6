"""The prepared cache as read back: where a prepare's folder is (`prepared_dir`, keyed by the options' content), what
it holds (`Prepared`, `SplitData`), and `load_prepared`, which checks every file against the manifest so that a damaged
cache is refused (`DamagedCache`) rather than trained on."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnbench.core.errors import UsageError
from cnnbench.data.catalog import InputSpec, get_dataset
from cnnbench.data.options import PrepareOptions

SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"
INDEX = "index.json"
_MANIFEST_KEYS = ("dataset", "classes", "input", "storage", "counts", "split_hashes", "skipped", "normalization")


@dataclass
class SplitData:
    labels: Any  # torch.int64 tensor (N,)
    images: Any = None  # torch.uint8 tensor (N, C, H, W) when held in memory
    paths: list[str] | None = None  # image files when streamed from disk

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Prepared:
    directory: Path
    manifest: dict[str, Any]
    splits: dict[str, SplitData] = field(repr=False)

    @property
    def input_spec(self):
        return InputSpec(**self.manifest["input"])

    @property
    def classes(self) -> list[str]:
        return self.manifest["classes"]

    @property
    def in_memory(self) -> bool:
        return self.manifest["storage"] == "memory"

    @property
    def mean(self) -> list[float]:
        return self.manifest["normalization"]["mean"]

    @property
    def std(self) -> list[float]:
        return self.manifest["normalization"]["std"]


def prepared_dir(options: PrepareOptions, *, files: str | None = None) -> Path:
    entry = get_dataset(options.dataset)
    digest = hashlib.sha256(json.dumps(options.content_key(files), sort_keys=True).encode()).hexdigest()[:12]
    return Path(options.root) / "prepared" / f"{entry.cache_name}-{digest}"


class DamagedCache(UsageError):
    """A file of a prepared cache that is missing, truncated, or not what was written: never used."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"prepared cache file {path} is damaged ({problem}); delete {self.path.parent} and prepare "
                         f"again")  # fmt: skip


def read_manifest(directory: Path) -> dict[str, Any]:
    """A cache folder's manifest, checked for the entries every reader of it needs."""
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise DamagedCache(path, "missing") from None
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror}") from err
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError both are
        raise DamagedCache(path, f"not JSON: {_one_line(err)}") from err
    if not isinstance(manifest, dict):
        raise DamagedCache(path, "not a JSON object")
    absent = [key for key in _MANIFEST_KEYS if key not in manifest]
    if absent:
        raise DamagedCache(path, f"no {', '.join(absent)} entry")
    malformed = _malformed_entries(manifest)
    if malformed:
        raise DamagedCache(path, f"malformed {', '.join(malformed)} entry")
    return manifest


def _malformed_entries(manifest: dict[str, Any]) -> list[str]:
    """The manifest entries that readers use and that do not have the shape prepare writes."""
    shape, counts, files = manifest["input"], manifest["counts"], manifest.get("files", {})
    sound = {
        "storage": manifest["storage"] in ("memory", "files"),
        "input": isinstance(shape, dict)
        and all(isinstance(shape.get(k), int) for k in ("channels", "height", "width", "num_classes")),
        "counts": isinstance(counts, dict)
        and all(isinstance(counts.get(name), dict) and isinstance(counts[name].get("total"), int) for name in SPLITS),
        "classes": isinstance(manifest["classes"], list)
        and isinstance(shape, dict) and len(manifest["classes"]) == shape.get("num_classes"),
        "files": isinstance(files, dict)
        and all(isinstance(f, dict) and isinstance(f.get("bytes"), int) and isinstance(f.get("sha256"), str)
                for f in files.values()),
    }  # fmt: skip
    return [name for name, ok in sound.items() if not ok]


def load_prepared(directory: Path) -> Prepared:
    """Read a prepared cache, checking every file against the manifest: a damaged file raises DamagedCache."""
    import torch  # here, not at the top: the CLI imports cnnbench.data.prepare without torch

    directory = Path(directory)
    manifest = read_manifest(directory)
    written = manifest.get("files", {})  # size and SHA-256 of each file (caches from before them: not checked)
    splits: dict[str, SplitData] = {}
    if manifest["storage"] == "memory":
        for name in SPLITS:
            path = directory / f"{name}.pt"
            _check_written(path, written.get(path.name))
            try:
                tensors = torch.load(path, weights_only=True)
                splits[name] = SplitData(labels=tensors["labels"], images=tensors["images"])
            except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError... for a damaged file
                raise DamagedCache(path, f"it does not load: {_one_line(err)}") from err
            _check_split(path, splits[name], manifest, name)
    else:
        path = directory / INDEX
        _check_written(path, written.get(INDEX))
        try:
            index = json.loads(path.read_text())
            for name in SPLITS:
                paths, labels = index[name]["paths"], index[name]["labels"]
                if not all(isinstance(p, str) for p in paths):
                    raise TypeError("a path that is not a string")
                splits[name] = SplitData(labels=torch.tensor(labels, dtype=torch.int64), paths=paths)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
            raise DamagedCache(path, f"not a file index: {_one_line(err)}") from err
        for name in SPLITS:
            _check_split(path, splits[name], manifest, name)
    return Prepared(directory=directory, manifest=manifest, splits=splits)


def _check_written(path: Path, written: dict | None) -> None:
    """`path` exists and, when the manifest recorded them, has the size and SHA-256 it was written with.

    torch.load reads a tensor file with a flipped byte without complaint (it checks no CRC), so the digest is what
    keeps a damaged file from being trained on; hashing costs about what reading the file costs.
    """
    try:
        size = path.stat().st_size
    except OSError:
        raise DamagedCache(path, "missing") from None
    if written is None:
        return
    if size != written["bytes"]:
        raise DamagedCache(path, f"{size:,} bytes where {written['bytes']:,} were written")
    if file_sha256(path) != written["sha256"]:
        raise DamagedCache(path, "its contents differ from those written (SHA-256 mismatch)")


def _check_split(path: Path, split: SplitData, manifest: dict[str, Any], name: str) -> None:
    """The split holds what the manifest says: its count, labels within the classes and (in memory) the image shape."""
    import torch  # here, not at the top: the CLI imports cnnbench.data.prepare without torch

    shape = manifest["input"]
    expected = manifest["counts"][name]["total"]
    labels = split.labels
    problem = None
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.ndim != 1:
        problem = "its labels are not a 1-D int64 tensor"
    elif len(labels) != expected:
        problem = f"{len(labels):,} {name} labels where the manifest counts {expected:,}"
    elif len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= shape["num_classes"]):
        problem = f"{name} labels outside 0..{shape['num_classes'] - 1}"
    elif split.images is not None:
        images = split.images
        wanted = (expected, shape["channels"], shape["height"], shape["width"])
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or tuple(images.shape) != wanted:
            problem = f"its {name} images are not uint8 of shape {wanted}"
    elif split.paths is None or len(split.paths) != expected:
        problem = f"the {name} paths do not match the {expected:,} labels"
    if problem is not None:
        raise DamagedCache(path, problem)


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:200]}" if text else type(err).__name__
