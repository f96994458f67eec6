from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from cnnbench.cli.common import JsonFlag, cells, emit_json, stdout
from cnnbench.cli.options import data_values, with_options


@with_options("datasets")
def datasets(ctx: typer.Context, json_output: JsonFlag = False, **options: Any) -> None:
    """List the datasets `prepare` can read: shape, classes, size, and where their files go under --root."""
    root = data_values(ctx, "datasets")["root"]
    from cnnbench.data.catalog import DATASETS

    entries = [DATASETS.get(name) for name in DATASETS]
    rows = [_row(entry, root) for entry in entries if entry.parameter is None]
    # Parametrised entries (folder:PATH) are families of datasets: one line each, not a row of counts.
    families = "\n".join(f"{entry.usage}  {entry.description}" for entry in entries if entry.parameter is not None)
    if json_output:
        emit_json({"datasets": rows, "also": families})
        return
    table = Table(title=None, show_lines=False)
    for column in ("name", "classes", "image", "images", "own splits", "files", "here", "--download"):
        table.add_column(column)
    for row in rows:
        c, h, w = row["shape"]
        table.add_row(*cells(row["name"], str(row["classes"]), f"{c}x{h}x{w}", f"{row['images']:,}",
                             "/".join(row["splits"]), row["files"], _here(row),
                             "yes" if row["download"] else "no"))  # fmt: skip
    console = stdout()
    console.print(table)
    console.print(families, markup=False)


def _row(entry, root: Path) -> dict:
    # Present means complete: every file the reader needs is there and not empty (an interrupted download leaves
    # empty folders and files behind); "missing" names what is not.
    missing = entry.missing(root)
    return {"name": entry.name, "description": entry.description, "classes": entry.num_classes,
            "shape": [entry.channels, entry.size, entry.size], "images": entry.images, "files": entry.location(root),
            "present": not missing, "missing": missing, "download": entry.download,
            "splits": list(entry.official_parts)}  # fmt: skip


def _here(row: dict) -> str:
    """yes; no; or incomplete when the dataset's folder is there without all its files (--json names them)."""
    if row["present"]:
        return "yes"
    if Path(row["files"]).exists():
        return f"incomplete ({len(row['missing'])} missing or empty)"
    return "no"
