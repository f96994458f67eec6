"""The one markdown table writer for the pages cnnbench writes (an evaluation's analysis, a pruning report, a study's
report, a search's importance): cells come formatted by their caller, who knows what each number means; this only
lays them out as GitHub-flavoured markdown. (`report` renders whole DataFrames with DataFrame.to_markdown.)"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], *, left: int | Iterable[str] = 1) -> list[str]:
    """The table's lines: header, separator, one line per row. Columns named in `left` (or the first `left` of them)
    align left, as text reads; the others right, as numbers compare."""
    text = set(header[:left]) if isinstance(left, int) else set(left)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if h in text else "---:" for h in header) + "|"]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
