"""Log lines: info and warnings on stderr from every command, --quiet keeping only the warnings, and cnnbench used as
a library printing nothing until its caller configures logging."""

from __future__ import annotations

import subprocess
import sys

from tests.fixtures_formats import write_image_folder


def test_quiet_drops_info_lines_and_keeps_warnings(cli, tmp_path):
    tree = tmp_path / "tree"
    write_image_folder(tree, {"ant": 10, "bee": 10, "rare": 1})  # 'rare' cannot be in val and test: a warning
    loud = cli("prepare", f"folder:{tree}", "--root", tmp_path / "a", "--size", "8")
    assert loud.code == 0, loud.err
    assert "reading 21 images (into memory)" in loud.err
    assert "warning: 1 class(es) have no image in a split they are measured on: 'rare'" in loud.err
    quiet = cli("prepare", f"folder:{tree}", "--root", tmp_path / "b", "--size", "8", "-q")
    assert quiet.code == 0, quiet.err
    assert quiet.err.splitlines() == [line for line in loud.err.splitlines() if line.startswith("warning:")]
    assert quiet.out == loud.out.replace(str(tmp_path / "a"), str(tmp_path / "b"))  # results unchanged on stdout


def test_a_library_caller_sees_no_log_lines_unless_it_asks(tmp_path):
    tree = tmp_path / "tree"
    write_image_folder(tree, {"ant": 10, "bee": 10, "rare": 1})
    code = ("import logging, sys\n"
            "from pathlib import Path\n"
            "from cnnbench.data.prepare import PrepareOptions, prepare\n"
            "options = PrepareOptions(dataset='folder:' + sys.argv[1], root=Path(sys.argv[2]), size=8)\n"
            "prepare(options)\n"
            "logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s %(message)s')\n"
            "prepare(options)\n")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code, str(tree), str(tmp_path / "data")], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()  # only the second prepare, after basicConfig, says anything
    assert lines and all(line.startswith(("INFO cnnbench.", "WARNING cnnbench.")) for line in lines), lines
    assert any(line.startswith("WARNING cnnbench.data.prepare 1 class(es)") for line in lines)
