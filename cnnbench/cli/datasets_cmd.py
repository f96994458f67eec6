from __future__ import annotations

from pathlib import Path

from rich.table import Table

from cnnbench.cli.common import JsonFlag, RootOption, cells, emit_json, stdout


def datasets(root: RootOption = Path("data"), json_output: JsonFlag = False) -> None:
    """List the datasets `prepare` can read: shape, classes, size, and where their files go under --root."""
    from cnnbench.data.catalog import DATASETS, FOLDER_SIZE

    rows = []
    for name in DATASETS:
        entry = DATASETS.get(name)
        location = entry.files if entry.name == "digits" else str(root / entry.files)
        present = entry.name == "digits" or (root / entry.files).exists()
        rows.append({"name": entry.name, "description": entry.description, "classes": entry.num_classes,
                     "shape": [entry.channels, entry.size, entry.size], "images": entry.images,
                     "files": location, "present": present, "download": entry.download,
                     "splits": list(entry.official_parts)})  # fmt: skip
    folder_note = f"folder:PATH  any class-per-subfolder image tree (resized to {FOLDER_SIZE}x{FOLDER_SIZE} unless --size)"
    if json_output:
        emit_json({"datasets": rows, "also": folder_note})
        return
    table = Table(title=None, show_lines=False)
    for column in ("name", "classes", "image", "images", "own splits", "files", "here", "--download"):
        table.add_column(column)
    for row in rows:
        c, h, w = row["shape"]
        table.add_row(*cells(row["name"], str(row["classes"]), f"{c}x{h}x{w}", f"{row['images']:,}", "/".join(row["splits"]),
                      row["files"], "yes" if row["present"] else "no", "yes" if row["download"] else "no"))
    console = stdout()
    console.print(table)
    console.print(folder_note, markup=False)
