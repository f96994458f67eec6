"""Examples that cannot rot: every `cnnbench ...` command in README.md (and docs/, where it exists) parses against the
CLI as it is now. The command and every option must exist, and an option's value must be of the kind it takes (a
number where a number goes, one of the choices where there are choices), without running anything. Placeholders
(`<run>`, `RUN_DIR`, `N`, `...`) stand for any value."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from cnnbench.cli import app

ROOT = Path(__file__).resolve().parents[1]
GLOBAL_FLAGS = {"--debug"}  # taken by cnnbench.cli.main before the command line reaches click
PLACEHOLDER = re.compile(r"^(\.\.\.|.*<[^>]*>.*|[A-Z][A-Z0-9_]*(=.*)?|.*\bN\b.*)$")


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]


def examples() -> list[tuple[str, str, bool]]:
    """(where, command line, whether it is a whole command) for each `cnnbench` command: code-block lines (with their
    `\\` continuations), whole, and inline code spans, which may name an option without its value ("`cnnbench train
    --resume` continues it"); trailing comments removed."""
    found = []
    for path in documents():
        lines = path.read_text(encoding="utf-8").splitlines()
        in_block, number = False, 0
        while number < len(lines):
            line, where = lines[number], f"{path.relative_to(ROOT)}:{number + 1}"
            number += 1
            if line.lstrip().startswith("```"):
                in_block = not in_block
                continue
            if in_block and line.strip().startswith("cnnbench "):
                text = line.strip()
                while text.endswith("\\") and number < len(lines):
                    text = text[:-1] + " " + lines[number].strip()
                    number += 1
                found.append((where, _without_comment(text), True))
            elif not in_block:
                found += [(where, span, False) for span in re.findall(r"`(cnnbench [^`]+)`", line)]
    return found


def _without_comment(text: str) -> str:
    return re.sub(r"\s+#\s.*$", "", text).strip()


def _commands():
    """The click group behind the Typer app (Typer vendors its own click: its classes are known by what they hold)."""
    return typer.main.get_command(app)


def problems(line: str, whole: bool = True) -> list[str]:
    """What in `line` does not match the CLI: an unknown command or option, a value of the wrong kind, a missing
    value (at the end of a `whole` command). Square brackets (a synopsis's optional parts) are read past."""
    try:
        tokens = [t.strip("[]") for t in shlex.split(line)[1:] if t.strip("[]")]
    except ValueError as error:
        return [f"cannot be split into words: {error}"]
    group = _commands()
    tokens = [t for t in tokens if t not in GLOBAL_FLAGS]
    if not tokens or tokens[0].startswith("-"):
        return [] if not tokens or tokens[0] in ("--help", "--version") else [f"no command before {tokens[0]}"]
    name, rest = tokens[0], tokens[1:]
    if PLACEHOLDER.match(name):
        return []
    command = group.commands.get(name)
    if command is None:
        return [f"no command {name!r} (commands: {', '.join(sorted(group.commands))})"]
    options = {opt: param for param in command.params if getattr(param, "param_type_name", "") == "option"
               for opt in (*param.opts, *param.secondary_opts)}  # fmt: skip
    context = command.make_context(name, [], resilient_parsing=True)  # what converting a value needs; parses nothing
    found, index = [], 0
    while index < len(rest):
        token = rest[index]
        index += 1
        if not token.startswith("-") or token == "-" or PLACEHOLDER.match(token):
            continue  # an argument, or a placeholder
        flag, has_value, value = token.partition("=")
        param = options.get(flag)
        if param is None:
            found.append(f"{name}: no option {flag}")
            continue
        if param.is_flag and not has_value:
            continue
        if not has_value:
            if index >= len(rest):
                if whole:
                    found.append(f"{name} {flag}: no value after it")
                continue
            value = rest[index]
            index += 1
        if not PLACEHOLDER.match(value):
            try:
                param.process_value(context, [value] if param.multiple else value)  # its own conversion and checks
            except Exception as error:  # click's BadParameter, from Typer's vendored copy
                found.append(f"{name} {flag} {value!r}: {getattr(error, 'message', error)}")
    return found


@pytest.mark.parametrize("where, line, whole", examples())
def test_every_documented_command_parses_against_the_cli(where, line, whole):
    found = problems(line, whole)
    assert not found, f"{where}: `{line}`: {'; '.join(found)}"


def test_the_checker_catches_what_rots():
    assert problems("cnnbench train --model mnist-722 --epochs 3") == []
    assert problems("cnnbench train --epochz 3") == ["train: no option --epochz"]
    assert "train --epochs 'three'" in problems("cnnbench train --epochs three")[0]
    assert problems("cnnbench trian --epochs 3")[0].startswith("no command 'trian'")
    assert problems("cnnbench train --resume results/runs/<run> --epochs N") == []
    assert problems("cnnbench train --resume") and not problems("cnnbench train --resume", whole=False)
    assert problems("cnnbench study s1 --set train.lr=1e-3 --seeds two")[0].startswith("study --seeds 'two'")
    assert len(examples()) > 50, "the README's examples were found"


def test_the_command_reference_is_what_the_cli_says_now(tmp_path):
    import subprocess
    import sys

    fresh = tmp_path / "cli.md"
    subprocess.run([sys.executable, "-m", "typer", "cnnbench.cli", "utils", "docs", "--name", "cnnbench", "--output",
                    str(fresh)], check=True, capture_output=True, cwd=ROOT)  # fmt: skip
    committed = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert fresh.read_text(encoding="utf-8") == committed, "docs/cli.md is out of date: run `make docs`"
