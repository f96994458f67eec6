"""`export` and `predict` (issue 23): every format matches PyTorch on the run's test images and carries what a program
without cnnbench needs; predictions on image files agree with `evaluate`; bad input is one line."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from cnnbench.runs.rundir import RunDir
from tests.fixtures_formats import truncated_jpeg_bytes
from tests.helpers import copy_run

NO_PROBE = ("--precision", "fp32", "--no-channels-last", "--threads", "2")


@pytest.fixture(scope="module")
def scratch(trained_run):
    """A trained and evaluated digits run (its evaluation fitted a temperature on the validation split)."""
    return trained_run("mnist-722", epochs=3, lr=3e-3, evaluate=["test"])


def _test_split(run):
    from cnnbench.evaluate.evaluation import checked_split

    opened = RunDir(run)
    _, prepared = checked_split(opened, opened.read_config(), "test")
    return prepared.splits["test"], prepared.classes


def _by_hand(run, pixels: np.ndarray) -> np.ndarray:
    """The run's logits as a program without cnnbench's preprocessing code computes them: (x / 255 - mean) / std."""
    config = json.loads((run / "config.json").read_text())
    mean = np.array(config["normalization"]["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.array(config["normalization"]["std"], dtype=np.float32).reshape(1, -1, 1, 1)
    model = RunDir(run).load_model("best").eval()
    with torch.no_grad():
        return model(torch.from_numpy((pixels / 255.0 - mean) / std)).numpy()


@pytest.mark.parametrize("fmt, file", [("onnx", "model.onnx"), ("pt2", "model.pt2"),
                                       ("torchscript", "model.torchscript.pt")])  # fmt: skip
def test_every_format_matches_pytorch_and_takes_raw_pixels_with_its_metadata_inside(cli, scratch, fmt, file, tmp_path):
    result = cli("export", scratch, "--format", fmt, "--out", tmp_path, "--samples", "64", "--repeats", "2", "--json",
                 "-q")  # fmt: skip
    assert result.code == 0, result.err
    parity = json.loads((tmp_path / "parity.json").read_text())[fmt]
    assert parity["passed"] and parity["top1_agreement"] == 1.0 and parity["images"] == 64
    assert parity["max_abs_diff"] <= parity["tolerance"] and parity["exported_ms_b64"] > 0
    metadata = json.loads((tmp_path / "model.json").read_text())
    assert metadata["classes"] == [str(i) for i in range(10)] and metadata["files"] == {fmt: file}
    assert metadata["input"]["channels"] == 1 and metadata["input"]["height"] == 28
    evaluation = json.loads((scratch / "eval" / "test.json").read_text())
    assert metadata["temperature"] == pytest.approx(evaluation["calibration"]["temperature_scaling"]["temperature"])

    from cnnbench.export.exporting import FORMATS

    runner, inside = FORMATS[fmt].load(tmp_path / file)  # the file alone, without model.json
    assert {k: v for k, v in metadata.items() if k != "files"} == json.loads(inside)
    split, _ = _test_split(scratch)
    pixels = split.images[:3].numpy().astype(np.float32)  # three images: the batch size is not fixed at export
    logits = runner(pixels)
    assert np.allclose(logits, _by_hand(scratch, pixels), atol=1e-4)


def test_a_finetuned_backbone_and_a_structured_pruned_run_export_with_parity(cli, trained_run, data_root, tmp_path):
    tuned = cli("finetune", "--backbone", "resnet18", "--weights", "none", "--freeze", "all", "--dataset", "digits",
                "--size", "32", "--root", data_root, "--epochs", "1", *NO_PROBE, "--out", tmp_path / "runs", "--json",
                "-q")  # fmt: skip
    assert tuned.code == 0, tuned.err
    parent = copy_run(trained_run("mnist-722", epochs=2), tmp_path / "parent")
    pruned = cli("prune", parent, "--method", "structured", "--amount", "0.5", "--finetune-epochs", "1", "--repeats",
                 "1", *NO_PROBE, "--out", tmp_path / "pruned", "--json", "-q")  # fmt: skip
    assert pruned.code == 0, pruned.err
    for run in (tuned.json()["run_dir"], pruned.json()["runs"][0]):
        result = cli("export", run, "--samples", "32", "--repeats", "1", "--json", "-q")
        assert result.code == 0, result.err
        assert result.json()["parity"]["passed"] and result.json()["parity"]["top1_agreement"] == 1.0
    narrowed = json.loads(next((tmp_path / "pruned").glob("*/export/model.json")).read_text())
    assert narrowed["kind"] == "prune"


def test_a_parity_failure_exits_1_and_is_recorded(cli, scratch, tmp_path, monkeypatch):
    from dataclasses import replace

    from cnnbench.export import exporting

    real = exporting.FORMATS["pt2"]

    def off_by_one(path):
        run, metadata = real.load(path)
        return (lambda pixels: run(pixels) + 1.0), metadata  # a wrong graph

    monkeypatch.setitem(exporting.FORMATS, "pt2", replace(real, load=off_by_one))
    result = cli("export", scratch, "--format", "pt2", "--out", tmp_path, "--samples", "16", "--repeats", "1", "-q")
    assert result.code == 1
    assert "differ from PyTorch's by 1.00e+00" in result.err and len(result.err.strip().splitlines()) == 1
    assert json.loads((tmp_path / "parity.json").read_text())["pt2"]["passed"] is False
    as_json = cli("export", scratch, "--format", "pt2", "--out", tmp_path, "--samples", "16", "--repeats", "1", "-q",
                  "--json")  # fmt: skip
    assert as_json.code == 1 and as_json.json()["parity"]["passed"] is False  # still exactly one JSON object
    assert "differ from PyTorch's" in as_json.err


def test_predict_on_image_files_agrees_with_evaluate_and_lists_a_damaged_file(cli, scratch, tmp_path, monkeypatch):
    split, classes = _test_split(scratch)
    folder = tmp_path / "photos"
    truth = {}
    for i, (image, label) in enumerate(zip(split.images.numpy(), split.labels.numpy())):
        path = folder / f"{i % 4}" / f"{i:04d}.png"  # nested: folders are searched recursively
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0]).save(path)
        truth[str(path)] = classes[label]
    (folder / "broken.jpg").write_bytes(truncated_jpeg_bytes())
    (folder / "notes.txt").write_text("not an image, and not a picture format: never read")
    out = tmp_path / "predictions.csv"
    from cnnbench.runs import resources

    real_prepared = resources.prepared

    def no_data(*args, **kwargs):
        raise AssertionError("predict read the run's dataset; its manifest holds all it needs")

    monkeypatch.setattr(resources, "prepared", no_data)
    result = cli("predict", scratch, folder, "--top-k", "3", "--out", out, "--json", "-q")
    monkeypatch.setattr(resources, "prepared", real_prepared)  # export's parity check reads the test split
    assert result.code == 0, result.err
    document = result.json()
    rows = {row["path"]: row for row in document["predictions"]}
    assert set(rows) == set(truth)
    accuracy = np.mean([rows[path]["label"] == label for path, label in truth.items()])
    evaluated = json.loads((scratch / "eval" / "test.json").read_text())
    assert accuracy == pytest.approx(evaluated["accuracy"])  # the same pixels, the same model: the same answers
    assert [s["path"] for s in document["skipped"]] == [str(folder / "broken.jpg")]
    top = next(iter(rows.values()))["top"]
    assert len(top) == 3 and top[0]["probability"] >= top[1]["probability"] and "probability_scaled" in top[0]
    with open(out, newline="") as handle:
        written = list(csv.DictReader(handle))
    assert len(written) == len(truth) + 1
    assert next(r for r in written if r["path"].endswith("broken.jpg"))["error"]
    assert "probability_1_scaled" in written[0]

    exported = cli("export", scratch, "--format", "onnx", "--out", tmp_path / "onnx", "--samples", "16", "--repeats",
                   "1", "-q")  # fmt: skip
    assert exported.code == 0, exported.err
    again = cli("predict", tmp_path / "onnx" / "model.onnx", folder, "--json", "-q").json()
    assert {r["path"]: r["label"] for r in again["predictions"]} == {p: r["label"] for p, r in rows.items()}


@pytest.mark.parametrize("args, message", [
    (["export", "{missing}"], "is not a run directory"),
    (["export", "{run}", "--format", "tflite"], "bad --format 'tflite': choose from onnx, torchscript, pt2"),
    (["export", "{run}", "--checkpoint", "middle"], "bad --checkpoint 'middle'"),
    (["export", "{run}", "--out", "{file}/sub"], "cannot write"),
    (["predict", "{run}", "{empty}"], "no image files in"),
    (["predict", "{run}", "{missing}"], "does not exist; give image files or folders"),
    (["predict", "{garbage}", "{empty}"], "no image files in"),
    (["predict", "{notes}", "{photo}"], "is neither a run directory nor an exported model"),
    (["predict", "{garbage}", "{photo}"], "cannot be read as an exported model"),
    (["predict", "{run}", "{photo}", "--top-k", "0"], "bad --top-k 0"),
])  # fmt: skip
def test_bad_input_is_one_line_exit_2(cli, scratch, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("a file, not a folder")
    (tmp_path / "model.onnx").write_bytes(b"\x00garbage")
    (tmp_path / "notes.txt").write_text("not a model")
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "photo.png")
    places = {"run": scratch, "missing": tmp_path / "nowhere", "empty": tmp_path / "empty", "file": tmp_path / "file",
              "garbage": tmp_path / "model.onnx", "notes": tmp_path / "notes.txt", "photo": tmp_path / "photo.png"}
    result = cli(*(a.format(**places) for a in args), "-q")
    assert result.code == 2, (result.code, result.err)
    assert message in result.err and len(result.err.strip().splitlines()) == 1, result.err
    assert not (scratch / "export").exists()  # the shared run is never written to


def test_onnx_without_the_export_extra_names_it_before_any_work(cli, scratch, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    result = cli("export", scratch, "--out", tmp_path / "out", "-q")
    assert result.code == 2
    assert "--format onnx needs onnxruntime: pip install 'cnnbench[export]'" in result.err
    assert not (tmp_path / "out").exists()
