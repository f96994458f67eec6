"""The CPU format probe's memory: `~/.cache/cnnbench/autotune.json` (`$CNNBENCH_CACHE` moves the folder), one entry
per configuration digest.

Apart from the measurement (autotune.py) because two jobs write it: the probe adds entries, and a run that breaks
its promise marks one stale (autotune_promise.py). Every change reads the file afresh and replaces it atomically, since
other processes (a study's runs, a search's workers) share the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cnnbench.core.storage import cache_folder, write_json_atomic

PROBE_VERSION = 6  # part of the cache key: raise it when the engine's speed or the probe changes (4: machine, rounds;
# 5: the narrow channels_last BatchNorm, which moves the balance between the formats; 6: the channels_last max-pool)


def cache_path() -> Path:
    return cache_folder() / "autotune.json"


def cached_entry(digest: str) -> dict[str, Any] | None:
    return read_cache().get(digest)


def read_cache() -> dict[str, Any]:
    try:
        cache = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def update_cache(change: Callable[[dict[str, Any]], None]) -> bool:
    """Read the cache afresh (another process may have added entries since), apply `change`, drop entries an older
    probe made (keyed without the machine, they can never match again) and write it; False when it cannot be written
    (a read-only home only costs a probe next time)."""
    cache = {digest: entry for digest, entry in read_cache().items()
             if isinstance(entry, dict) and entry.get("key", {}).get("probe") == PROBE_VERSION}  # fmt: skip
    change(cache)
    try:
        write_json_atomic(cache_path(), cache)
    except OSError:
        return False
    return True
