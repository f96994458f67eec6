"""One writer per run directory: an advisory lock that the operating system releases when its holder exits or dies.

Two processes training into the same run (a `--resume` started while the run still trains, a study re-run in a
second terminal) would interleave metrics rows and overwrite each other's checkpoints. Every process that writes a
run's training files holds `RUN/.lock` (fcntl.flock) from before its first write to its last; a second writer is
refused at once, told who holds it. A killed holder's lock is gone with its process, so a resume is never blocked by
a dead run. Readers (`evaluate`, `report`) take no lock: every file but metrics.csv is replaced atomically, and
metrics.csv readers skip an unfinished last line.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from cnnbench.core.errors import UsageError

LOCK_NAME = ".lock"


class RunLock:
    def __init__(self, run_path: Path) -> None:
        self.path = Path(run_path) / LOCK_NAME
        self.handle = None

    def acquire(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # not POSIX: no advisory locks; runs are not protected against a second writer
            return self
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = _describe(handle.read())
            handle.close()
            raise UsageError(f"{self.path.parent} is being written by {holder}; wait for it to finish or stop it "
                             f"(its lock goes when it exits), then run again") from None  # fmt: skip
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime(
            "%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(["cnnbench", *sys.argv[1:]])[:300]}) + "\n")  # fmt: skip
        handle.flush()
        self.handle = handle
        return self

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()  # closing the file releases the flock
            self.handle = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _describe(text: str) -> str:
    try:
        holder = json.loads(text)
        return f"process {holder['pid']} on {holder['host']} since {holder['since']} ({holder['command']})"
    except (ValueError, KeyError, TypeError):
        return "another process"
