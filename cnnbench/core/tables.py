"""The one markdown table writer for the pages cnnbench writes (an evaluation's analysis, a pruning report, a study's
report, a search's importance): cells come formatted by their caller, who knows what each number means; this only
lays them out as GitHub-flavoured markdown. (`report` renders whole DataFrames with DataFrame.to_markdown.) And
the one CSV writer for tables of dict rows (an evaluation's tables, predictions)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any


def csv_text(columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> str:
    """A header and one line per row; a row's missing columns are empty."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], *, left: int | Iterable[str] = 1) -> list[str]:
    """The table's lines: header, separator, one line per row. Columns named in `left` (or the first `left` of them)
    align left, as text reads; the others right, as numbers compare."""
    text = set(header[:left]) if isinstance(left, int) else set(left)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if h in text else "---:" for h in header) + "|"]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
