"""Finding a dataset's files under --root: fetching them through torchvision when --download asks, and otherwise the
one-line refusal that names the files to place there by hand."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cnnbench.core.errors import DataMissing


def run_download(name: str, where: Path, fetch: Callable[[], object], needed: list[str] | None = None) -> None:
    """Run a torchvision download, turning its many failure types into one-line DataMissing errors (naming the files
    to place by hand when the caller knows them)."""
    try:
        fetch()
    except Exception as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        files = f" ({', '.join(needed)})" if needed else ""
        raise DataMissing(
            f"{name}: download into {where} failed ({reason}); check the network, or place the files{files} there"
        ) from err


def require_files(name: str, where: Path, missing: Callable[[], list[str]], fetch: Callable[[], object], *,
                   download: bool, fetch_into: Path | None = None) -> None:
    """The dataset's files, fetched first when some are missing and --download was given; else a one-line error
    naming what is missing (`missing()` lists absent or empty files)."""
    absent = missing()
    if absent and download:
        run_download(name, fetch_into or where, fetch, absent)
    still_missing = missing()
    if still_missing:
        raise missing_files_error(name, where, still_missing)


def missing_files_error(name: str, where: Path, needed: list[str]) -> DataMissing:
    """The refusal naming the files to fetch with --download or to place under `where` by hand."""
    return DataMissing(
        f"{name}: files missing or empty under {where} (need {', '.join(needed)}); pass --download, or place the "
        "files there"
    )


def nonempty_file(path: Path) -> bool:
    """Whether `path` is a file with at least one byte (an interrupted download leaves empty ones behind)."""
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:
        return False


def holds_nonempty(folder: Path, pattern: str) -> bool:
    """Whether `folder` has at least one non-empty file matching `pattern` (stops at the first)."""
    try:
        return any(nonempty_file(path) for path in folder.glob(pattern))
    except OSError:
        return False
