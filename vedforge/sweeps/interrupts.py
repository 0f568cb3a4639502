"""Ctrl-C in a sweep: held while the sweep starts, and never lost once it runs.

A sweep interrupted at any moment writes a summary with a row per pair of the sweep; it can
only do so once it knows them. So from the start of the command line until the sweep has
recorded its pairs (:class:`vedforge.sweeps.summary.SweepSummary`), a first Ctrl-C is noted and
takes effect then, as a ``KeyboardInterrupt``; a second one takes effect at once.

From then on, Ctrl-C raises ``KeyboardInterrupt`` as usual, and is also remembered: Python
swallows an exception raised in a garbage-collector callback or a ``__del__`` (jax runs one
while it traces), and a library may catch it. :func:`check`, called between the sweep's jobs
and when it ends, raises it again, so the sweep still stops.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

_previous: Any = None
_pending = False
_interrupted = False


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def hold() -> None:
    """Note Ctrl-C instead of raising it, until :func:`release`. Does nothing outside the main
    thread or where SIGINT is not Python's default (ignored in a process started in the
    background, or handled by the program that embeds vedforge)."""
    global _previous, _pending, _interrupted
    if _previous is not None or not _in_main_thread():
        return
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return

    def note(signum: int, frame: Any) -> None:
        global _pending
        if _pending:  # a second Ctrl-C: stop now
            release()
        _pending = True

    _previous, _pending, _interrupted = signal.default_int_handler, False, False
    signal.signal(signal.SIGINT, note)


def _remembered(signum: int, frame: Any) -> None:
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def release() -> None:
    """Let Ctrl-C raise ``KeyboardInterrupt`` again (and remember it, for :func:`check`); raise it
    now if one came while it was held."""
    global _previous, _pending, _interrupted
    if _previous is None or not _in_main_thread():
        return
    signal.signal(signal.SIGINT, _remembered)
    _previous, pending, _pending = None, _pending, False
    if pending:
        _interrupted = True
        raise KeyboardInterrupt


def requested() -> bool:
    """True once Ctrl-C has been pressed since :func:`hold`."""
    return _interrupted


def check() -> None:
    """Raise ``KeyboardInterrupt`` if Ctrl-C was pressed since :func:`hold`, even when the first
    one was swallowed on its way."""
    if _interrupted:
        raise KeyboardInterrupt
