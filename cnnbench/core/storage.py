"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename over the target.

A reader (or a crash) therefore sees either the old file or the new one, never half of it. The file gets the mode any
newly created file would (0666 less the umask), not mkstemp's private 0600: results folders are shared with a group,
served by web servers and copied into CI artifacts.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def cache_folder() -> Path:
    """Where cnnbench keeps what it learns about a machine (the format probe's answers, compiled kernels):
    `~/.cache/cnnbench`, or `$CNNBENCH_CACHE`."""
    return Path(os.environ.get("CNNBENCH_CACHE", Path.home() / ".cache" / "cnnbench"))


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename is None:  # a write to the open file names none: say which
            error.filename = str(path)
        raise


def ensure_writable_folder(folder: Path) -> Path:
    """Make `folder` (and its parents) and prove a file can be created there, so that a run fails before its data is
    prepared and its format probed, not after. Raises the OSError (the CLI turns it into one line), after removing
    the folders it made: a failed command leaves nothing behind."""
    folder = Path(folder)
    made = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError:
        for path in made:  # deepest first; only what this call made, and only while empty
            with contextlib.suppress(OSError):
                path.rmdir()
        raise
    return folder


def _umask() -> int:
    """The process's umask (reading it means setting it: it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def jsonable(obj: Any) -> Any:
    """A copy with NaN/inf as None, numpy values as Python ones and paths as strings, for strict JSON.

    Strict JSON has no NaN; other tools reading the files (jq, browsers) reject Python's bare `NaN` token.
    """
    import numpy as np

    if isinstance(obj, dict):
        return {str(key): jsonable(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(value) for value in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json_atomic(path: Path, data: Any) -> None:
    text = json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n"
    write_atomic(path, lambda handle: handle.write(text.encode()))


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda handle: handle.write(text.encode()))


# --- places that cannot be written: one line naming the path, the OS's reason and what to do ---

UNWRITABLE_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.ENOSPC,
                     errno.EDQUOT, errno.ENAMETOOLONG}  # fmt: skip


@contextmanager
def unwritable_as_usage_error(path: Path, *, elsewhere: str) -> Iterator[None]:
    """Turn the OS refusing to write `path` (read-only, no permission, a file where a folder should be, a full disk)
    into a one-line UsageError; `elsewhere` says what the user can do instead, e.g. "give another --out"."""
    try:
        yield
    except OSError as error:
        if error.errno not in UNWRITABLE_ERRNOS:
            raise
        raise _usage_error(unwritable(path, error, elsewhere=elsewhere)) from None


def unwritable(path: Path, error: OSError, *, elsewhere: str) -> str:
    """The one-line message for an OSError met while writing `path`: the path, the OS's reason and what to do."""
    path = Path(path)
    mount = _mount_point(path)
    reason = error.strerror or os.strerror(error.errno)
    if error.errno == errno.ENOSPC:
        return f"cannot write {path}: {reason}; free space on {mount} and run again"
    if error.errno == errno.EDQUOT:
        return f"cannot write {path}: {reason}; free space within your quota on {mount} and run again"
    if error.errno == errno.EROFS:
        return f"cannot write {path}: {reason} ({mount} is mounted read-only); {elsewhere}"
    if error.errno == errno.ENAMETOOLONG:
        longest = max(Path(error.filename or path).parts, key=len)
        return (f"cannot write {path}: {reason} (a name of {len(longest.encode())} bytes, {longest[:24]}...; file "
                f"systems allow about 255); use shorter names, or {elsewhere}")  # fmt: skip
    if error.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        in_the_way = _in_the_way(Path(error.filename) if error.filename else path, error.errno)
        if in_the_way:
            return f"cannot write {path}: {in_the_way}; move it away or {elsewhere}"
    return f"cannot write {path}: {reason}; {elsewhere}"


def _in_the_way(target: Path, code: int) -> str | None:
    """What stands where the write needed a folder (or a file): the nearest existing one of `target` and its parents."""
    for candidate in (target, *target.parents):
        if candidate.exists():
            if code == errno.EISDIR and candidate.is_dir():
                return f"{candidate} is a folder, not a file"
            return None if candidate.is_dir() else f"{candidate} is a file, not a folder"
    return None


def _mount_point(path: Path) -> Path:
    """The mount holding `path`: the longest mount point above it in the system's mount table (a bind mount of one
    folder is on the same device as its parent, so walking up to the first device change would name / instead)."""
    existing = Path(os.path.realpath(path))
    while not os.path.lexists(existing) and existing != existing.parent:  # lexists: False, not an error, for a
        existing = existing.parent  # name too long
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as table:
            points = [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[1])  # \040: a space
                      for line in table if len(line.split()) > 1]
    except OSError:  # not Linux: the first device change above the path
        points = []
    above = [Path(p) for p in points if existing == Path(p) or Path(p) in existing.parents]
    if above:
        return max(above, key=lambda p: len(p.parts))
    while not os.path.ismount(existing) and existing != existing.parent:
        existing = existing.parent
    return existing


def _usage_error(message: str):
    from cnnbench.core.errors import UsageError  # imported here: storage is imported by the CLI before anything else

    return UsageError(message)
