"""Asking the operating system about a process on this machine: whether it still runs, and since when.

Whoever leaves a mark for others (a search trial's worker, a staging folder's owner) records its pid; whoever finds
the mark asks here whether that process is gone (SIGKILL, a crash) before taking over what it left.
"""

from __future__ import annotations

import os
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (one of another user's counts: it runs, it just may not be
    signalled). No signal is sent: signal 0 only checks that the pid exists."""
    if pid <= 0:  # 0 and negative pids name process groups, which os.kill would find "alive"
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it runs, as another user
        return True
    return True


def process_started(pid: int) -> float:
    """When process `pid` started (wall clock, from /proc), so a recycled pid is not taken for a dead process that
    once had it; 0.0 where that cannot be read (no /proc, the process gone)."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))  # fmt: skip
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return 0.0
