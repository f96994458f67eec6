from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from cnnbench.cli.common import JsonFlag, QuietFlag, cells, configure_logging, emit_json, stdout
from cnnbench.cli.options import data_values, with_options


@with_options("prepare")
def prepare(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="A name from `cnnbench datasets`, or folder:PATH.")],
    quiet: QuietFlag = False,
    json_output: JsonFlag = False,
    **options: Any,  # the data options (cnnbench/spec/run.py OPTIONS), read with `values`
) -> None:
    """Read a dataset's files, split them (stratified, seeded) and write the prepared cache under ROOT/prepared/."""
    from cnnbench.data.prepare import PrepareOptions, load_or_prepare

    configure_logging(quiet)
    prepared = load_or_prepare(PrepareOptions(dataset=dataset, **data_values(ctx, "prepare")))
    manifest = prepared.manifest
    if json_output:
        emit_json({"directory": str(prepared.directory), **manifest})
        return
    shape = manifest["input"]
    table = Table(show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row(*cells("dataset", manifest["dataset"]))
    table.add_row(*cells("prepared cache", str(prepared.directory)))
    table.add_row(*cells("source", manifest["source"]))
    table.add_row(*cells("images", f"{shape['channels']}x{shape['height']}x{shape['width']}, {manifest['storage']}"))
    table.add_row(*cells("classes", f"{len(manifest['classes'])}: {', '.join(manifest['classes'][:12])}"
                  + (" ..." if len(manifest["classes"]) > 12 else "")))  # fmt: skip
    for name, counts in manifest["counts"].items():
        table.add_row(*cells(name, f"{counts['total']:,}  (hash {manifest['split_hashes'][name][:12]})"))
    by_reason = manifest.get("skipped_by_reason") or {}  # caches prepared before it was recorded have the list only
    reasons = ", ".join(f"{count} {kind}" for kind, count in by_reason.items())
    table.add_row(*cells("skipped files", f"{len(manifest['skipped'])}" + (f" ({reasons})" if reasons else "")))
    stdout().print(table)
