from __future__ import annotations

from pathlib import Path

from rich.table import Table

from cnnbench.cli.common import JsonFlag, RootOption, cells, emit_json, stdout


def datasets(root: RootOption = Path("data"), json_output: JsonFlag = False) -> None:
    """List the datasets `prepare` can read: shape, classes, size, and where their files go under --root."""
    from cnnbench.data.catalog import DATASETS

    entries = [DATASETS.get(name) for name in DATASETS]
    rows = [{"name": entry.name, "description": entry.description, "classes": entry.num_classes,
             "shape": [entry.channels, entry.size, entry.size], "images": entry.images,
             "files": entry.location(root), "present": entry.present(root), "download": entry.download,
             "splits": list(entry.official_parts)}
            for entry in entries if entry.parameter is None]  # fmt: skip
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
                             "/".join(row["splits"]), row["files"], "yes" if row["present"] else "no",
                             "yes" if row["download"] else "no"))  # fmt: skip
    console = stdout()
    console.print(table)
    console.print(families, markup=False)
