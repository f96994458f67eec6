"""signals_held: a stop asked for inside a unit of writes is delivered after it, to the handler that was in place."""

from __future__ import annotations

import os
import signal

import pytest

from cnnbench.core.signals import signals_held


def test_ctrl_c_inside_the_block_arrives_after_it_and_the_handler_is_restored():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with signals_held():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("the rest of the block ran")
    assert done == ["the rest of the block ran"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_installed_sigterm_handler_gets_the_signal_once_even_when_the_block_fails(monkeypatch):
    calls = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    try:
        with pytest.raises(ValueError):
            with signals_held():
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGTERM)
                raise ValueError("the block's own failure still propagates")
        assert calls == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)
