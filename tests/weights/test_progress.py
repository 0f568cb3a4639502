"""Progress of the weights written, in bytes: a rich bar on a terminal, plain log lines elsewhere."""

from __future__ import annotations

import logging

import numpy as np

from vedforge.weights import progress
from vedforge.weights.writer import write_flax_checkpoint


def _state() -> dict:
    rng = np.random.default_rng(0)
    return {("a", "kernel"): rng.standard_normal((64, 32)).astype(np.float32),
            ("b", "embedding"): rng.standard_normal((3 << 18,)).astype(np.float32)}


def test_plain_lines_count_every_byte_written_when_stderr_is_not_a_terminal(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(progress, "_LOG_EVERY_S", 0.0)
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    seen = []
    real = progress._PlainBytes.advance

    def counting(self, count):
        seen.append(count)
        real(self, count)

    monkeypatch.setattr(progress._PlainBytes, "advance", counting)
    with caplog.at_level(logging.INFO, logger="vedforge"), progress.byte_progress("Writing", 1234):
        (written,) = write_flax_checkpoint(tmp_path, _state(), 1 << 30)
    assert sum(seen) == written.stat().st_size
    assert any(r.getMessage().startswith("Writing: ") for r in caplog.records)
    progress.advance(10)  # outside a progress block: counted nowhere, no error


def test_a_terminal_gets_a_rich_bar_that_reaches_the_total(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    bars = []
    real_init = progress._RichBytes.__init__

    def keep(self, description, total):
        real_init(self, description, total)
        bars.append(self)

    monkeypatch.setattr(progress._RichBytes, "__init__", keep)
    with progress.byte_progress("Writing", 1):
        (written,) = write_flax_checkpoint(tmp_path, _state(), 1 << 30)
    (bar,) = bars
    assert bar.progress.tasks[0].completed == written.stat().st_size
