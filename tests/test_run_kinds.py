"""Run kinds behind one door: every kind is a registry entry, what a caller passes reaches every phase of a run, and a
resumed run gets its kind's parts exactly once."""

from __future__ import annotations

import pytest

from cnnbench.core.errors import UsageError
from cnnbench.data.prepare import PrepareOptions
from cnnbench.engine import Callback
from cnnbench.engine.sparsity import SparseFineTune
from cnnbench.prune.sweep import PruneOptions, prune_run, resume_pruned
from cnnbench.runs.kinds import KINDS, resume_run, run
from tests.helpers import StopAfter, digits, finetune_spec, spec


class Seen(Callback):
    """Records the trainer parts of every fit it joins (one entry per run phase)."""

    def __init__(self) -> None:
        self.fits: list[list[str]] = []

    def on_fit_start(self, trainer) -> None:
        self.fits.append([type(part).__name__ for part in trainer.callbacks])


def test_the_kinds_are_registered_and_an_unknown_one_is_refused_with_the_choices():
    assert KINDS.names() == ["train", "finetune", "prune"]
    with pytest.raises(UsageError, match="unknown run kind 'scratch'.*choose from: train, finetune, prune"):
        run(spec(digits("data"), "mnist-722"), kind="scratch")


def test_a_two_phase_finetune_gives_the_callers_callbacks_and_records_to_both_phases(data_root, tmp_path):
    """A search trial that fine-tunes with --head-epochs: its trial pruner and trial record were lost in the head
    phase when finetune called itself without them."""
    seen = Seen()
    data = PrepareOptions(dataset="digits", root=data_root, size=32)
    finetune = finetune_spec(data, backbone="squeezenet1_1", weights="none", freeze="last:1", epochs=1, head_epochs=1,
                             batch_size=128)  # fmt: skip
    result = run(finetune, out=tmp_path, callbacks=[seen], extra={"trial": {"number": 7}})
    assert result.status == "completed"
    assert len(seen.fits) == 2 and all("Seen" in parts for parts in seen.fits)
    phases = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(phases) == 2
    from cnnbench.runs.rundir import RunDir

    assert [RunDir(p).config()["trial"] for p in phases] == [{"number": 7}, {"number": 7}]


def test_a_resumed_magnitude_pruned_run_keeps_its_masks_with_one_callback(data_root, tmp_path):
    """The prune kind restores SparseFineTune on resume; the sweep's resume added a second one beside it."""
    parent = run(spec(digits(data_root), "mnist-722", epochs=1, batch_size=128), out=tmp_path / "parent").run
    options = PruneOptions(method="magnitude", amounts=(0.5,), finetune_epochs=2)
    stopped = prune_run(parent.path, options, out=tmp_path / "pruned", callbacks=[StopAfter(1)], measure=False).runs[0]
    assert stopped.status == "interrupted"
    made: list[SparseFineTune] = []
    original = SparseFineTune.on_fit_start

    def counting(self, trainer):
        made.append(self)
        return original(self, trainer)

    SparseFineTune.on_fit_start = counting
    try:
        resumed = resume_pruned(stopped.run.path, measure=False).runs[0]
    finally:
        SparseFineTune.on_fit_start = original
    assert resumed.status == "completed" and len(made) == 1


def test_resume_through_the_door_restores_the_kind_of_the_run(data_root, tmp_path):
    """`train --resume` of a pruned run: the door reads the kind from config.json and puts the masks back."""
    parent = run(spec(digits(data_root), "mnist-722", epochs=1, batch_size=128), out=tmp_path / "parent").run
    options = PruneOptions(method="magnitude", amounts=(0.5,), finetune_epochs=2)
    stopped = prune_run(parent.path, options, out=tmp_path / "pruned", callbacks=[StopAfter(1)], measure=False).runs[0]
    seen = Seen()
    assert resume_run(stopped.run.path, callbacks=[seen]).status == "completed"
    assert seen.fits[0].count("SparseFineTune") == 1
