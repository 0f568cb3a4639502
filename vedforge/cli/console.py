"""The console half of a run's log: rich on a terminal, plain whole lines anywhere else.

rich formats for the width of a console; writing to a pipe, a file, a CI log or a Ray worker's
log it assumes 80 columns, wraps long lines and breaks paths mid-word, so they cannot be copied.
Off a terminal the records are written as Hydra's default logging writes them: one line each
(a message of several lines, such as the plan, keeps its own lines), never wrapped.
"""

from __future__ import annotations

import logging
import sys

PLAIN_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


class ConsoleHandler(logging.Handler):
    """A logging handler for stderr: :class:`rich.logging.RichHandler` when stderr is a terminal,
    else a plain :class:`logging.StreamHandler` with :data:`PLAIN_FORMAT`.

    Hydra's ``job_logging`` config names it, so a single forge, every sweep job and the jobs of
    joblib, submitit and Ray workers decide the same way, each for its own stderr.
    """

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.rich = sys.stderr.isatty()
        if self.rich:
            from rich.logging import RichHandler

            self.inner: logging.Handler = RichHandler(show_path=False, rich_tracebacks=False)
        else:
            self.inner = logging.StreamHandler(sys.stderr)
            self.inner.setFormatter(logging.Formatter(PLAIN_FORMAT))

    def setFormatter(self, fmt: logging.Formatter | None) -> None:  # noqa: N802  (logging's name)
        super().setFormatter(fmt)
        # The configured formatter (the bare message) suits rich, which adds time and level itself.
        if self.rich:
            self.inner.setFormatter(fmt)

    def emit(self, record: logging.LogRecord) -> None:
        self.inner.emit(record)

    def flush(self) -> None:
        self.inner.flush()
