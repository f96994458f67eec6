"""Holding Ctrl-C and SIGTERM while a unit of records is written, so a stop lands between units, never inside one.

An epoch ends with three writes (its metrics row, the best checkpoint, the last checkpoint) and the summary reports
`epochs_completed` from the trainer's counter. A signal that arrives between them used to leave a summary saying
"2 epochs" over a last.pt of epoch 1 and a metrics.csv of one row, so `--resume --epochs 3` trained two more. Held,
the signal waits for the epoch's writes (well under a second for every model in the zoo) and is then delivered
exactly as it would have been: the handler that was installed runs (KeyboardInterrupt for Ctrl-C, the CLI's
Terminated for SIGTERM), or the default action where none was.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

HELD = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def signals_held(signums: tuple[int, ...] = HELD) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM are noted instead of handled; the first one noted is delivered to the
    handler that was in place once the block ends (also when it ends with an exception). Handlers can only be set from
    the main thread: elsewhere the block runs with nothing held."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[tuple[int, object]] = []
    previous = {signum: signal.getsignal(signum) for signum in signums}

    def note(signum: int, frame: object) -> None:
        caught.append((signum, frame))

    for signum in signums:
        signal.signal(signum, note)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        if caught:
            signum, frame = caught[0]
            handler = previous[signum]
            if callable(handler):
                handler(signum, frame)
            elif handler in (signal.SIG_DFL, None):
                signal.raise_signal(signum)
