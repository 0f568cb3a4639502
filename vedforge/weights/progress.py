"""Progress a person can watch: bytes read and written by a forge, pairs done in a sweep.

On a terminal, a rich progress bar (bytes, rate, time left); otherwise a few plain log lines,
so a log file or CI output stays readable. Downloads keep huggingface_hub's own bars.
The weights writer calls :func:`advance` for every chunk it writes; with no bar active
that costs one global lookup.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator, Optional

log = logging.getLogger("vedforge")

# Plain log lines: at most one per this many seconds, and one at the end.
_LOG_EVERY_S = 5.0


class _PlainBytes:
    """Log lines for a non-terminal stderr."""

    def __init__(self, description: str, total: int):
        self.description, self.total, self.done = description, total, 0
        self.started = self.last = time.perf_counter()

    def advance(self, count: int) -> None:
        self.done += count
        now = time.perf_counter()
        if now - self.last >= _LOG_EVERY_S:
            self.last = now
            log.info("%s: %s of %s", self.description, _size(self.done), _size(self.total))

    def close(self) -> None:
        elapsed = time.perf_counter() - self.started
        if elapsed >= _LOG_EVERY_S:
            log.info("%s: %s in %.1f s", self.description, _size(self.done), elapsed)


class _RichBytes:
    """A rich progress bar on stderr."""

    def __init__(self, description: str, total: int):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                                 transient=True)
        self.progress.start()
        self.task = self.progress.add_task(description, total=total)

    def advance(self, count: int) -> None:
        self.progress.advance(self.task, count)

    def close(self) -> None:
        self.progress.stop()


_active: Optional[Any] = None


def _size(count: int) -> str:
    from vedforge.core.units import human_bytes

    return human_bytes(count)


def advance(count: int) -> None:
    """Count ``count`` more bytes done in the active progress, if any."""
    if _active is not None:
        _active.advance(count)


@contextmanager
def byte_progress(description: str, total: int) -> Iterator[None]:
    """Show progress of ``total`` bytes while the block runs (:func:`advance` counts them)."""
    global _active
    bar = _RichBytes(description, total) if sys.stderr.isatty() else _PlainBytes(description, total)
    previous, _active = _active, bar
    try:
        yield
    finally:
        _active = previous
        bar.close()


def log_sweep_progress(done: int, planned: Optional[int], counts: dict[str, int]) -> None:
    """One line per finished pair of a sweep: pairs done of pairs planned."""
    of = f" of {planned}" if planned else ""
    log.info("Sweep: %d%s pairs done (%s)", done, of, ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
