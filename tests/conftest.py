"""Shared fixtures: an in-process CLI runner, a prepared copy of the bundled digits data, and small trained runs on
it (`trained_run`), each trained once per session."""

from __future__ import annotations

import json
import os
from dataclasses import astuple, dataclass
from pathlib import Path

import pytest

from cnnbench.cli import main


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> dict:
        lines = [line for line in self.out.splitlines() if line.strip()]
        assert len(lines) == 1, f"--json must print exactly one line, got: {self.out!r}"
        return json.loads(lines[0])


@pytest.fixture
def cli(capsys):
    """Run `cnnbench ARGS...` in this process and return its exit code, stdout and stderr."""

    def run(*args: str | Path) -> Result:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code=code, out=captured.out, err=captured.err)

    return run


@pytest.fixture(autouse=True, scope="session")
def quick_format_probe(tmp_path_factory):
    """The CPU format probe (autotune) with its own cache and short timings, so tests neither share the user's cache
    nor spend seconds probing every model they train."""
    from cnnbench.engine import autotune
    from cnnbench.studies import plan

    saved = os.environ.get("CNNBENCH_CACHE"), autotune.PROBE_SECONDS, plan.TIMED_SECONDS
    os.environ["CNNBENCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    autotune.PROBE_SECONDS = plan.TIMED_SECONDS = 0.01  # a study's --plan times a step or two, not half a second
    yield
    if saved[0] is None:
        os.environ.pop("CNNBENCH_CACHE", None)
    else:
        os.environ["CNNBENCH_CACHE"] = saved[0]
    autotune.PROBE_SECONDS, plan.TIMED_SECONDS = saved[1], saved[2]


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A --root shared by the whole session, so digits is prepared once per option set."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def trained_run(data_root, tmp_path_factory):
    """A factory of small runs on the bundled digits at 28x28, each trained (and evaluated) once per session:

        trained_run("mnist-722", epochs=3, lr=3e-3)                      # a completed run
        trained_run("mnist-722", epochs=2, stop_after=1, evaluate=["test"])  # interrupted after epoch 1, evaluated

    `seed`, `lr` and `batch_size` default to the train section's defaults (None: the default); `stop_after=N` (an
    epoch before the last) ends the run with Ctrl-C at the end of epoch N (`StopAfter`), so it is interrupted;
    `evaluate` lists the splits to evaluate (`evaluate_run`, best checkpoint). Equal settings are one run, trained once:
    a run and its evaluated variant share the training (the evaluated one is a copy of it, then evaluated).

    Returns the run directory. It is SHARED by every test of the session and must not be modified: a test that writes
    into a run (evaluate, resume, prune measuring its parent, damaging files) works on a copy, made with
    `tests.helpers.copy_run`. At the end of the session every shared run is checked to be as it was made; a modified
    one fails the session."""
    from cnnbench.evaluate.evaluation import evaluate_run
    from cnnbench.runs.kinds import run
    from tests.helpers import StopAfter, copy_run, digits, spec, tree_digest

    trained = tmp_path_factory.mktemp("trained")  # one folder: runs started in the same second get distinct names
    evaluated = tmp_path_factory.mktemp("evaluated")
    made: dict[tuple, Path] = {}
    digests: dict[Path, str] = {}  # each shared run as it was made

    def train(model: str, *, epochs: int, seed: int | None = None, lr: float | None = None,
              batch_size: int | None = None, stop_after: int | None = None, evaluate: tuple[str, ...] | list[str] = ()
              ) -> Path:  # fmt: skip
        given = {"seed": seed, "lr": lr, "batch_size": batch_size}
        run_spec = spec(digits(data_root), model, epochs=epochs, **{k: v for k, v in given.items() if v is not None})
        assert stop_after is None or 0 < stop_after < epochs, "stop_after: an epoch before the last"
        key = (model, astuple(run_spec.train), stop_after)
        if key not in made:
            result = run(run_spec, out=trained, callbacks=[StopAfter(stop_after)] if stop_after else [])
            expected = "completed" if stop_after is None else "interrupted"
            assert result.status == expected, f"the shared run {model} ended {result.status}, not {expected}"
            made[key] = result.run.path
            digests[made[key]] = tree_digest(made[key])
        splits = tuple(dict.fromkeys(evaluate))
        if not splits:
            return made[key]
        full = (*key, splits)
        if full not in made:
            path = copy_run(made[key], evaluated / str(len(made)))  # the training's name, in a folder of its own
            for split in splits:
                evaluate_run(path, split=split)
            made[full] = path
            digests[path] = tree_digest(path)
        return made[full]

    yield train
    changed = [str(path) for path, before in digests.items()
               if not path.is_dir() or tree_digest(path) != before]  # fmt: skip
    assert not changed, f"a test modified shared trained runs (work on a copy: tests.helpers.copy_run): {changed}"
