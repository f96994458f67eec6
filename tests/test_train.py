"""Training end to end on the bundled digits: accuracy, the run directory, resume, interruption, budgets."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from cnnbench.runs.rundir import RunDir
from cnnbench.runs.kinds import resume_run
from cnnbench.runs.kinds import run as run_spec
from tests.helpers import DIGITS28, StopAfter, digits, spec


def test_short_training_on_digits_clears_an_accuracy_floor(cli, data_root, tmp_path):
    result = cli("train", "--model", "mnist-7498", *DIGITS28, "--root", data_root, "--epochs", "12",
                 "--batch-size", "64", "--lr", "3e-3", "--out", tmp_path, "--json", "--quiet")  # fmt: skip
    assert result.code == 0, result.err
    summary = result.json()
    assert summary["status"] == "completed" and summary["epochs_completed"] == 12
    # 1,078 training images; an S1 model reaches ~97% val accuracy here in 12 epochs. 0.90 leaves room for noise.
    assert summary["best"]["val_acc"] >= 0.90
    run = Path(summary["run_dir"])
    assert {p.name for p in run.iterdir()} >= {"config.json", "metrics.csv", "checkpoints", "summary.json"}

    evaluated = cli("evaluate", run, "--split", "test", "--json")
    assert evaluated.code == 0, evaluated.err
    test = evaluated.json()
    assert test["n"] == RunDir(run).config()["prepared"]["counts"]["test"] == 359  # 20% of 1,797, per class
    assert test["accuracy"] >= 0.90
    assert test["top5_accuracy"] >= test["accuracy"]
    assert json.loads((run / "eval" / "test.json").read_text())["accuracy"] == test["accuracy"]
    confusion = list(csv.reader((run / "eval" / "test_confusion.csv").open()))
    assert len(confusion) == 11 and sum(int(confusion[i][i]) for i in range(1, 11)) == round(test["accuracy"] * 359)


def test_run_directory_records_everything_needed_to_rebuild(data_root, tmp_path):
    result = run_spec(spec(digits(data_root), "mnist-722", epochs=2, seed=3), out=tmp_path)
    run = result.run
    config = run.config()
    assert config["model"] == {"name": "mnist-722", "family": "zoo", "options": {},
                               "input": {"channels": 1, "height": 28, "width": 28, "num_classes": 10}}  # fmt: skip
    assert config["schema"] == 3 and config["spec"]["model"]["name"] == "mnist-722"
    assert json.loads((run.path / "summary.json").read_text())["schema"] == 3
    assert config["spec"]["train"]["seed"] == 3 and config["spec"]["data"]["size"] == 28
    assert config["train"]["seed"] == 3 and config["params"]["trainable"] == 722
    where = "cuda" if torch.cuda.is_available() else "cpu"  # the device `auto` picks, recorded
    assert config["versions"]["torch"] and config["device"]["type"] == where
    assert run.name.endswith("-mnist-722-digits-s3")
    rows = list(csv.DictReader(run.metrics_path.open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert set(rows[0]) == {"epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds", "images_per_s"}
    last = torch.load(run.checkpoint_path("last"), weights_only=True)  # plain tensors and values only
    assert last["epoch"] == 2 and "optimizer" in last and "rng" in last
    assert result.summary["params"]["macs"] == 7106



def test_resume_after_interruption_matches_an_uninterrupted_run(data_root, tmp_path):
    # Dropout, augmentation and a schedule all draw on or depend on saved state: each must resume exactly.
    config = spec(digits(data_root), "mnist-7498", epochs=4, batch_size=128, augment="flip,rotate=10",
                  schedule="cosine", warmup_epochs=1, seed=7)  # fmt: skip
    straight = run_spec(config, out=tmp_path / "a")
    stopped = run_spec(config, out=tmp_path / "b", callbacks=[StopAfter(2)])
    assert stopped.status == "interrupted" and stopped.summary["epochs_completed"] == 2
    assert stopped.run.status() == "interrupted"
    resumed = resume_run(stopped.run.path)
    assert resumed.run.path == stopped.run.path and resumed.status == "completed"
    a = straight.run.load_checkpoint("last")["model"]
    b = resumed.run.load_checkpoint("last")["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [r["val_loss"] for r in straight.run.metrics()] == [r["val_loss"] for r in resumed.run.metrics()]


def test_ctrl_c_from_the_cli_marks_the_run_interrupted_and_says_how_to_resume(cli, data_root, tmp_path, monkeypatch):
    from cnnbench.engine import Trainer

    original = Trainer.train_epoch

    def interrupted_second_epoch(self, progress):
        if self.epoch == 1:
            raise KeyboardInterrupt
        return original(self, progress)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted_second_epoch)
    result = cli("train", "--model", "mnist-722", *DIGITS28, "--root", data_root, "--epochs", "3", "--out", tmp_path)
    assert result.code == 130
    assert "cnnbench train --resume" in result.err
    run = next(tmp_path.iterdir())
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(Trainer, "train_epoch", original)
    resumed = cli("train", "--resume", run, "--json", "--quiet")
    assert resumed.code == 0 and resumed.json()["epochs_completed"] == 3


def test_max_params_refuses_before_training_and_creates_no_run(cli, data_root, tmp_path):
    result = cli("train", "--model", "cifar-simple", *DIGITS28, "--root", data_root, "--max-params", "7500",
                 "--out", tmp_path / "runs")  # fmt: skip
    assert result.code == 1
    assert "over the budget of 7,500" in result.err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_early_stopping_stops_and_keeps_the_best_epoch(data_root, tmp_path):
    # lr 0.5 with SGD diverges quickly after the first epochs, so validation loss stops improving.
    config = spec(digits(data_root), "mnist-722", epochs=40, optimizer="sgd", lr=2.0, patience=2, seed=1)
    result = run_spec(config, out=tmp_path)
    summary = result.summary
    assert summary["stopped_early"] is True
    assert summary["epochs_completed"] == summary["best_epoch"] + 2
    best = result.run.load_checkpoint("best")
    assert best["epoch"] == summary["best_epoch"]


def test_resume_refuses_a_finished_run_without_more_epochs(cli, data_root, tmp_path):
    finished = run_spec(spec(digits(data_root), "mnist-722", epochs=1), out=tmp_path).run.path
    result = cli("train", "--resume", finished)
    assert result.code == 2 and "already completed 1 epochs" in result.err
    assert cli("train", "--resume", finished, "--lr", "0.1").code == 2


def test_binary_task_trains_with_a_sigmoid_output(cli, tmp_path):
    from tests.fixtures_formats import write_image_folder

    tree = tmp_path / "tree"
    write_image_folder(tree, {"cat": 12, "dog": 12}, size=20)
    result = cli("train", "--model", "catsdogs-base", "--dataset", f"folder:{tree}", "--size", "16",
                 "--root", tmp_path / "data", "--epochs", "2", "--batch-size", "8", "--out", tmp_path / "runs",
                 "--augment", "s4", "--json", "--quiet")  # fmt: skip
    assert result.code == 0, result.err
    run = Path(result.json()["run_dir"])
    # convs 896 + 18,496 + 73,856; 16 -> 8 -> 4 -> 2 leaves 2*2*128 = 512 features; Dense 256: 131,328; Dense 1: 257
    assert RunDir(run).config()["params"]["trainable"] == 224_833
    evaluated = cli("evaluate", run, "--split", "val", "--json")
    assert evaluated.code == 0, evaluated.err
    assert evaluated.json()["num_classes"] == 2 and evaluated.json()["roc_auc"] is not None


def test_a_file_index_dataset_streams_through_dataloader_workers(cli, tmp_path):
    from tests.fixtures_formats import write_image_folder

    tree = tmp_path / "tree"
    write_image_folder(tree, {"a": 10, "b": 10, "c": 10}, size=12)
    result = cli("train", "--model", "fit:3000", "--dataset", f"folder:{tree}", "--size", "12", "--storage", "files",
                 "--root", tmp_path / "data", "--epochs", "2", "--batch-size", "8", "--workers", "1",
                 "--out", tmp_path / "runs", "--json", "--quiet")  # fmt: skip
    assert result.code == 0, result.err
    run = Path(result.json()["run_dir"])
    assert RunDir(run).config()["data"]["storage"] == "files"
    assert len(RunDir(run).metrics()) == 2
    evaluated = cli("evaluate", run, "--split", "test", "--json")
    assert evaluated.code == 0, evaluated.err
    assert evaluated.json()["n"] == 6  # 15% of 10 images in each of 3 classes, decoded from disk while evaluating
