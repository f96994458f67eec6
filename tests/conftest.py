"""Shared fixtures: an in-process CLI runner and a prepared copy of the bundled digits data."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
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

    saved = os.environ.get("CNNBENCH_CACHE"), autotune.PROBE_SECONDS
    os.environ["CNNBENCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    autotune.PROBE_SECONDS = 0.01
    yield
    if saved[0] is None:
        os.environ.pop("CNNBENCH_CACHE", None)
    else:
        os.environ["CNNBENCH_CACHE"] = saved[0]
    autotune.PROBE_SECONDS = saved[1]


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A --root shared by the whole session, so digits is prepared once per option set."""
    return tmp_path_factory.mktemp("data")
