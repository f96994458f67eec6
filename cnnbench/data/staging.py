"""Writing a prepared cache: into a staging folder `.tmp-<cache>@<host>@<pid>@<ns>` beside it, renamed into place once
complete, with any OS error turned into one line saying what to do; and removing the staging folders that killed
prepares left behind."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from cnnbench.core.errors import UsageError
from cnnbench.core.processes import pid_alive
from cnnbench.core.storage import jsonable, unwritable, write_atomic
from cnnbench.data.cache import INDEX, MANIFEST, file_sha256, read_manifest
from cnnbench.data.options import PrepareOptions

STAGING_PREFIX = ".tmp-"
# A staging folder whose owner cannot be asked (another host, or a name without an owner) is left alone this long: a
# prepare only stages while it writes the cache, which takes minutes at most.
STALE_STAGING_SECONDS = 3600


def writable_cache_root(options: PrepareOptions) -> Path:
    """ROOT/prepared, once it is clear the cache can be written there (nothing is created yet: a prepare that fails
    for missing files leaves no folders behind)."""
    cache_root = Path(options.root) / "prepared"
    existing = cache_root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"cannot write the prepared cache under {cache_root}: {existing} is a file, not a folder; "
                         f"pass --root a folder")  # fmt: skip
    effective = {"effective_ids": True} if os.access in os.supports_effective_ids else {}
    if not os.access(existing, os.W_OK | os.X_OK, **effective):
        reason = os.strerror(errno.EROFS if _read_only(existing) else errno.EACCES)
        raise UsageError(f"cannot write the prepared cache under {cache_root}: {reason} ({existing}); pass --root a "
                         f"folder you can write to")  # fmt: skip
    return cache_root


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (AttributeError, OSError):  # no statvfs (Windows)
        return False


def store(cache_root: Path, final: Path, splits, storage: str, manifest: dict[str, Any]) -> None:
    """Write the cache into a staging folder and rename it into place; any OS error becomes one line saying what to do,
    and the staging folder is removed whatever happens."""
    stage = cache_root / _staging_name(final.name)
    try:
        cache_root.mkdir(parents=True, exist_ok=True)
        stage.mkdir()
        manifest["files"] = _write_cache(stage, splits, storage)
        _write_json(stage / MANIFEST, manifest)  # last: its presence marks the folder complete
        _publish(stage, final)
    except OSError as err:
        shutil.rmtree(stage, ignore_errors=True)
        raise _cannot_write(cache_root, err, _cache_bytes(splits, storage)) from err
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _write_cache(stage: Path, splits, storage: str) -> dict[str, dict[str, Any]]:
    """Write the data files; returns each one's size and SHA-256, for the manifest."""
    if storage == "memory":
        for name, (data, _) in splits.items():
            tensors = {"images": data.images.contiguous(), "labels": data.labels}
            write_atomic(stage / f"{name}.pt", lambda handle, tensors=tensors: _save_tensors(tensors, handle))
        names = [f"{name}.pt" for name in splits]
    else:
        index = {name: {"paths": data.paths, "labels": data.labels.tolist()} for name, (data, _) in splits.items()}
        _write_json(stage / INDEX, index)
        names = [INDEX]
    return {name: {"bytes": (stage / name).stat().st_size, "sha256": file_sha256(stage / name)} for name in names}


class _WriteErrorKeeper:
    """A file for torch.save that keeps the OSError of a failed write: torch reports a full disk as a RuntimeError about
    stream positions, which would hide "No space left on device" behind an internal-looking error."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self) -> None:
        self.handle.flush()


def _save_tensors(tensors: dict[str, Any], handle) -> None:
    import torch  # here, not at the top: the CLI imports cnnbench.data.prepare without torch

    keeper = _WriteErrorKeeper(handle)
    try:
        torch.save(tensors, keeper)
    except RuntimeError as err:
        if keeper.error is not None:
            raise keeper.error from err
        raise


def _write_json(path: Path, data: Any) -> None:
    text = json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n"
    write_atomic(path, lambda handle: handle.write(text.encode()))


def _publish(stage: Path, final: Path) -> None:
    """Rename the staging folder to `final`. A complete cache already there (another process finished first) is kept:
    it is equally valid. One with a damaged manifest is replaced (load_or_prepare decided to prepare it again)."""
    if final.exists():
        try:
            read_manifest(final)
        except UsageError:
            aside = final.parent / _staging_name(final.name)
            final.rename(aside)
            stage.rename(final)
            shutil.rmtree(aside, ignore_errors=True)
            return
        shutil.rmtree(stage)
        return
    try:
        stage.rename(final)
    except OSError as err:  # it appeared since the check: another process finished first
        if err.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not (final / MANIFEST).exists():
            raise
        shutil.rmtree(stage)


def _cache_bytes(splits, storage: str) -> int | None:
    if storage != "memory":
        return None
    return sum(data.images.numel() + data.labels.numel() * 8 for data, _ in splits.values())


def _human_bytes(count: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:,.1f} {unit}"
    return f"{count} bytes"


def _cannot_write(cache_root: Path, err: OSError, need: int | None) -> UsageError:
    message = unwritable(cache_root, err, elsewhere="pass --root a folder you can write to")
    if err.errno in (errno.ENOSPC, errno.EDQUOT) and need:
        message += f" (the prepared images alone take {_human_bytes(need)})"
    return UsageError(message)


# ------------------------------------------------------------------------------------------ stale staging folders


def host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "unknown"


def _staging_name(final_name: str) -> str:
    """A staging folder's name says whose it is (host and pid), so a later prepare can tell a dead one's leftovers
    from a live one's work in progress."""
    return f"{STAGING_PREFIX}{final_name}@{host()}@{os.getpid()}@{time.time_ns()}"


def remove_stale_staging(cache_root: Path) -> None:
    """Remove the staging folders that prepares killed while writing left under `cache_root`."""
    try:
        leftovers = [path for path in cache_root.iterdir() if path.name.startswith(STAGING_PREFIX)]
    except OSError:
        return
    for path in leftovers:
        if path.is_dir() and not path.is_symlink() and _stale(path):
            shutil.rmtree(path, ignore_errors=True)


def _stale(path: Path) -> bool:
    """Whether a staging folder's owner is gone: a pid of this host that no longer runs, or, where the owner cannot be
    asked (another host sharing the folder, a name from before owners were recorded), an hour without it finishing."""
    owner = path.name[len(STAGING_PREFIX) :].split("@")
    if len(owner) == 4 and owner[2].isdigit():
        if owner[1] == host():
            return not pid_alive(int(owner[2]))
        if owner[3].isdigit():
            return time.time() - int(owner[3]) / 1e9 > STALE_STAGING_SECONDS
    try:
        return time.time() - path.stat().st_mtime > STALE_STAGING_SECONDS
    except OSError:
        return False

