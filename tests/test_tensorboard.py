"""`--tensorboard` (issue 23, 4): a run's event files hold every epoch's scalars once, a resumed run included, the
model graph and its hyper-parameters; each search trial is a TensorBoard run of its own; without the package, one
line before any work."""

from __future__ import annotations

import json

from tests.helpers import StopAfter, digits, spec

NO_PROBE = ("--precision", "fp32", "--no-channels-last", "--threads", "2")


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return accumulator


def test_a_resumed_run_has_each_epochs_scalars_once_with_its_graph_and_hyperparameters(data_root, tmp_path):
    from cnnbench.runs.kinds import resume_run, run

    run_spec = spec(digits(data_root), "mnist-722", epochs=3, precision="fp32", channels_last=False, threads=2,
                    tensorboard=True)  # fmt: skip
    stopped = run(run_spec, out=tmp_path, callbacks=[StopAfter(2)])
    assert stopped.status == "interrupted"
    resumed = resume_run(stopped.run.path)
    assert resumed.status == "completed"
    events = _events(stopped.run.path / "tb")
    tags = events.Tags()["scalars"]
    assert {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "train/lr", "train/images_per_s"} <= set(tags)
    metrics = resumed.run.metrics()
    # stopped after epoch 2 and resumed from it: every epoch once, with the values metrics.csv has
    val = events.Scalars("loss/val")
    assert [e.step for e in val] == [1, 2, 3]
    assert [round(e.value, 5) for e in val] == [round(row["val_loss"], 5) for row in metrics]
    assert events.Tags()["graph"]  # the model's graph, once
    assert "best/val_acc" in tags  # the hyper-parameters' figures, at the end


def test_each_search_trial_is_a_tensorboard_run_of_its_own(cli, data_root, tmp_path):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"train.lr": {"float": [1e-3, 3e-2], "log": True}}))
    result = cli("tune", "--space", space, "--study", "tb", "--folder", tmp_path / "study", "--n-trials", "2",
                 "--model", "mnist-722", "--dataset", "digits", "--size", "28", "--root", data_root, "--epochs", "1",
                 *NO_PROBE, "--tensorboard", "-q")  # fmt: skip
    assert result.code == 0, result.err
    boards = sorted((tmp_path / "study").rglob("tb"))
    assert len(boards) == 2
    assert all(_events(board).Scalars("loss/val")[0].step == 1 for board in boards)


def test_without_the_package_it_is_one_line_before_any_work(cli, data_root, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    result = cli("train", "--model", "mnist-722", "--dataset", "digits", "--size", "28", "--root", data_root,
                 "--epochs", "1", "--tensorboard", "--out", tmp_path / "runs", "-q")  # fmt: skip
    assert result.code == 2
    assert result.err.strip() == ("cnnbench: error: --tensorboard needs the tensorboard package: pip install "
                                  "'cnnbench[tensorboard]'")
    assert not (tmp_path / "runs").exists()
