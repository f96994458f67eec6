"""`cnnbench export`: a run's model as an ONNX or TorchScript file, with its metadata inside and beside it, checked
against PyTorch on the run's own test images every time.

Files, in `<run>/export/` unless told otherwise, each written atomically:
- model.onnx (ONNX, through `torch.onnx.export`'s dynamo exporter; the metadata as the model's `cnnbench` metadata
  property), model.pt2 (`torch.export`, PyTorch's successor to TorchScript, for torch.export.load and AOTInductor) or
  model.torchscript.pt (`torch.jit.trace`, for LibTorch users; deprecated by PyTorch 2.14). The metadata is the
  extra file `cnnbench.json` in the last two. The batch dimension is dynamic in all three.
- model.json: the same metadata (input, preprocessing, classes, outputs, fitted temperature) and the files exported.
- parity.json: per format, the exported model against the PyTorch model on a sample of the test split: the largest
  absolute difference of the logits, top-1 agreement, and latency at batch 1 and 64 of both, measured in alternation.
  A difference beyond the tolerance fails the export (`passed: false`, exit code 1 in the CLI).

The exporters are as torch ships them; ONNX needs the `export` extra (onnx, onnxscript, onnxruntime), checked before
any work. Everything runs on the CPU, where exported models are usually served and where the two compare.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnbench.core.errors import UsageError
from cnnbench.core.storage import (
    ensure_writable_folder,
    jsonable,
    unwritable_as_usage_error,
    write_atomic,
    write_json_atomic,
)
from cnnbench.evaluate.evaluation import split_images
from cnnbench.export.deployable import INPUT_NAME, OUTPUT_NAMES, Deployable, RunModel, open_run_model

logger = logging.getLogger(__name__)

METADATA_FILE = "model.json"
PARITY_FILE = "parity.json"
METADATA_KEY = "cnnbench"  # the ONNX metadata property; TorchScript's extra file is METADATA_KEY + ".json"
PARITY_SAMPLES = 256  # test images compared at most (a seeded sample of a larger split)
LATENCY_BATCHES = (1, 64)
# The exported model's logits may differ from PyTorch's by float32 reordering (ONNX Runtime fuses and reorders
# convolutions): up to this share of the logits' own scale. A wrong graph is off by far more.
RELATIVE_TOLERANCE = 1e-3

Runner = Callable[[np.ndarray], np.ndarray]  # float32 pixels -> logits


@dataclass(frozen=True)
class Format:
    name: str
    file: str
    needs: tuple[str, ...]  # importable modules, from the `export` extra
    save: Callable[[Deployable, torch.Tensor, Path, dict[str, Any]], None]
    # the file read once: its runner and the metadata inside it (JSON text, or None when it holds none)
    load: Callable[[Path], tuple[Runner, str | None]]


# --- ONNX -------------------------------------------------------------------------------------------------------------


def _save_onnx(model: Deployable, example: torch.Tensor, path: Path, metadata: dict[str, Any]) -> None:
    import onnx

    program = torch.onnx.export(model, (example,), dynamo=True, input_names=[INPUT_NAME],
                                output_names=list(OUTPUT_NAMES), dynamic_shapes=({0: torch.export.Dim("batch")},),
                                verbose=False)  # fmt: skip
    proto = program.model_proto
    entry = onnx.StringStringEntryProto(key=METADATA_KEY, value=json.dumps(jsonable(metadata)))
    proto.metadata_props.append(entry)
    proto.doc_string = f"cnnbench export of {metadata['run']} ({metadata['checkpoint']} checkpoint)"
    onnx.checker.check_model(proto)
    write_atomic(path, lambda handle: handle.write(proto.SerializeToString()))


def _load_onnx(path: Path) -> tuple[Runner, str | None]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the threads PyTorch has, so that the latencies compare
    options.log_severity_level = 3  # errors only: its warnings about unused initializers are not the user's
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    return (lambda pixels: session.run([OUTPUT_NAMES[0]], {INPUT_NAME: pixels})[0]), metadata


def _torch_runner(module: torch.nn.Module) -> Runner:
    def run(pixels: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(pixels))[0].numpy()

    return run


# --- TorchScript ------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_torchscript():
    """PyTorch 2.14 deprecates TorchScript in favour of torch.export (the pt2 format) with a FutureWarning on every
    call; the help says so once, instead of two warnings per export."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        # the one Python branch traced, on the logits' width (one sigmoid logit or many), is fixed per model
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def _save_torchscript(model: Deployable, example: torch.Tensor, path: Path, metadata: dict[str, Any]) -> None:
    with _quiet_torchscript(), torch.no_grad():
        traced = torch.jit.trace(model, example, check_trace=False)  # checked below, on real images, by parity
    extra = {f"{METADATA_KEY}.json": json.dumps(jsonable(metadata))}
    with _quiet_torchscript():
        write_atomic(path, lambda handle: torch.jit.save(traced, handle, _extra_files=extra))


def _load_torchscript(path: Path) -> tuple[Runner, str | None]:
    extra = {f"{METADATA_KEY}.json": ""}
    with _quiet_torchscript():
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra).eval()
    return _torch_runner(module), extra[f"{METADATA_KEY}.json"] or None


# --- torch.export (pt2) ---------------------------------------------------------------------------------------------


def _save_pt2(model: Deployable, example: torch.Tensor, path: Path, metadata: dict[str, Any]) -> None:
    program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    extra = {f"{METADATA_KEY}.json": json.dumps(jsonable(metadata))}
    write_atomic(path, lambda handle: torch.export.save(program, handle, extra_files=extra))


def _load_pt2(path: Path) -> tuple[Runner, str | None]:
    extra = {f"{METADATA_KEY}.json": ""}
    module = torch.export.load(str(path), extra_files=extra).module()
    return _torch_runner(module), extra[f"{METADATA_KEY}.json"] or None


FORMATS = {
    "onnx": Format("onnx", "model.onnx", ("onnx", "onnxscript", "onnxruntime"), _save_onnx, _load_onnx),
    "torchscript": Format("torchscript", "model.torchscript.pt", (), _save_torchscript, _load_torchscript),
    "pt2": Format("pt2", "model.pt2", (), _save_pt2, _load_pt2),
}


def export_format(name: str) -> Format:
    """The format called `name`, its libraries checked: a missing one is a one-line error naming the extra."""
    if name not in FORMATS:
        raise UsageError(f"bad --format {name!r}: choose from {', '.join(FORMATS)}")
    chosen = FORMATS[name]
    missing = [module for module in chosen.needs if importlib.util.find_spec(module) is None]
    if missing:
        raise UsageError(f"--format {name} needs {', '.join(missing)}: pip install 'cnnbench[export]'")
    return chosen


# --- the export -------------------------------------------------------------------------------------------------------


def export_run(path: Path, *, fmt: str = "onnx", checkpoint: str = "best", out: Path | None = None,
               root: Path | None = None, samples: int = PARITY_SAMPLES, repeats: int = 20) -> dict[str, Any]:  # fmt: skip
    """Export the run at `path` as `fmt` into `out` (default `<run>/export`), check it against PyTorch and write
    model.json and parity.json. Returns {"file", "metadata", "parity"}; parity["passed"] says whether it held."""
    chosen = export_format(fmt)
    if samples < 1:
        raise UsageError(f"bad --samples {samples}: expected a number of test images, at least 1")
    if repeats < 1:
        raise UsageError(f"bad --repeats {repeats}: expected at least 1")
    opened = open_run_model(path, checkpoint=checkpoint, root=root)
    folder = Path(out) if out is not None else opened.run.path / "export"
    pixels, split = _sample(opened, samples)
    file = folder / chosen.file
    with unwritable_as_usage_error(folder, elsewhere="give --out a writable folder"):
        ensure_writable_folder(folder)
        logger.info(f"exporting {opened.run.name} ({checkpoint} checkpoint) as {fmt}: {file}")
        chosen.save(opened.model, torch.from_numpy(pixels[: min(2, len(pixels))]), file, opened.metadata)
        parity = {"format": fmt, "file": file.name, "split": split,
                  **check_parity(opened.model, chosen.load(file)[0], pixels, repeats=repeats)}  # fmt: skip
        _record(folder, fmt, file, opened.metadata, parity)
    return {"file": file, "metadata": opened.metadata, "parity": parity}


def _sample(opened: RunModel, samples: int) -> tuple[np.ndarray, str]:
    """float32 pixels of a seeded sample of the test split (the validation split where the test split is empty)."""
    prepared = opened.prepared
    split = next((name for name in ("test", "val", "train") if len(prepared.splits[name])), None)
    if split is None:
        raise UsageError(f"{opened.run.name}'s data has no images to check the export on")
    count = len(prepared.splits[split])
    chosen = np.sort(np.random.default_rng(0).permutation(count)[: min(samples, count)])
    images, _ = split_images(prepared, split, chosen)
    if len(images) == 0:
        raise UsageError(f"none of the sampled {split} images of {opened.run.name} decode any more; prepare its data "
                         f"again")  # fmt: skip
    return np.ascontiguousarray(images, dtype=np.float32), split


def check_parity(model: Deployable, exported: Runner, pixels: np.ndarray, *, repeats: int) -> dict[str, Any]:
    """The exported model against PyTorch on the same pixels: logits' largest absolute difference, top-1 agreement,
    and the median latency of each at batch 1 and 64 (warmed up, then `repeats` rounds in alternation, so that a
    burst of other work on the machine hits both alike)."""
    with torch.inference_mode():
        expected = np.concatenate([model(torch.from_numpy(pixels[i:i + 64]))[0].numpy()
                                   for i in range(0, len(pixels), 64)])  # fmt: skip
    got = np.concatenate([exported(pixels[i:i + 64]) for i in range(0, len(pixels), 64)])
    difference = float(np.abs(got.astype(np.float64) - expected).max())
    tolerance = RELATIVE_TOLERANCE * max(1.0, float(np.abs(expected).max()))
    agreement = float(np.mean(_top1(got) == _top1(expected)))
    result = {"images": len(pixels), "max_abs_diff": difference, "tolerance": tolerance, "top1_agreement": agreement,
              "passed": bool(difference <= tolerance), "threads": torch.get_num_threads()}  # fmt: skip
    for batch in LATENCY_BATCHES:
        batch_pixels = np.ascontiguousarray(np.resize(pixels, (batch, *pixels.shape[1:])))  # repeats rows if few
        eager, other = _latencies(model, exported, batch_pixels, repeats)
        result[f"pytorch_ms_b{batch}"], result[f"exported_ms_b{batch}"] = eager, other
    return result


def _top1(logits: np.ndarray) -> np.ndarray:
    return (logits[:, 0] > 0).astype(np.int64) if logits.shape[1] == 1 else logits.argmax(axis=1)


def _latencies(model: Deployable, exported: Runner, pixels: np.ndarray, repeats: int) -> tuple[float, float]:
    tensor = torch.from_numpy(pixels)

    def eager() -> None:
        with torch.inference_mode():
            model(tensor)

    times: dict[str, list[float]] = {"eager": [], "exported": []}
    runners = {"eager": eager, "exported": lambda: exported(pixels)}
    for _ in range(2):  # warm-up: first calls allocate and pick kernels
        for run in runners.values():
            run()
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1e3)
    return statistics.median(times["eager"]), statistics.median(times["exported"])


def _record(folder: Path, fmt: str, file: Path, metadata: dict[str, Any], parity: dict[str, Any]) -> None:
    """model.json and parity.json, keeping what an export of another format wrote there (if it describes the same
    run and checkpoint: an export of something else starts them afresh)."""
    described = _json_object(folder / METADATA_FILE)
    same = described is not None and all(described.get(k) == metadata[k] for k in ("run", "checkpoint"))
    files = dict(described.get("files") or {}) if same else {}
    files[fmt] = file.name
    write_json_atomic(folder / METADATA_FILE, {**metadata, "files": files})
    checks = (_json_object(folder / PARITY_FILE) if same else None) or {}
    write_json_atomic(folder / PARITY_FILE, {**checks, fmt: parity})


def _json_object(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None when it is missing or not one (damaged: it is written afresh)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def open_exported(path: Path, fmt: str) -> tuple[Runner, dict[str, Any]]:
    """An exported model file read once: its runner and its metadata (inside the file, else the model.json beside
    it). A UsageError when the file is not a model of `fmt` or carries no metadata."""
    path = Path(path)
    load = export_format(fmt).load  # its libraries first: a missing extra is named, not taken for a damaged file
    try:
        runner, found = load(path)
    except Exception as error:  # onnxruntime and torch each fail in their own ways on a damaged or foreign file
        raise UsageError(f"{path} cannot be read as an exported model ({type(error).__name__}); export the run "
                         f"again") from None  # fmt: skip
    if found is not None:
        return runner, json.loads(found)
    beside = _json_object(path.parent / METADATA_FILE)
    if beside is None:
        raise UsageError(f"{path} holds no cnnbench metadata and has no {METADATA_FILE} beside it; export it with "
                         f"`cnnbench export`")  # fmt: skip
    return runner, beside
