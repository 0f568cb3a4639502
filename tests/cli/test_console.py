"""The console log fits where it goes: rich on a terminal, plain whole lines in a pipe or a file."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys

from vedforge.cli.console import PLAIN_FORMAT, ConsoleHandler

_RECORD = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\]\[vedforge\]\[(INFO|WARNING|ERROR)\] - ")


def test_a_forge_piped_into_a_file_logs_plain_unwrapped_records_with_whole_paths(tmp_path):
    out = tmp_path / ("a-directory-name-long-enough-that-an-eighty-column-console-would-wrap-it" * 2) / "model"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-m", "vedforge", f"output.dir={out}"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    assert "\x1b[" not in run.stderr  # no colour codes
    records = [line for line in lines if _RECORD.match(line)]
    assert any(line.endswith(f"Writing the weights to {out}") for line in records), lines
    assert any(line.endswith(f"-> {out}") and "Forged vit + gpt2" in line for line in records), lines
    # Every other line belongs to the plan's own block, which follows its first record line.
    plan_start = next(i for i, line in enumerate(lines) if "plan: FORGE" in line)
    block = [line for line in lines[plan_start + 1:] if not _RECORD.match(line)]
    assert all(line.startswith("  ") for line in block), block


def test_the_handler_is_rich_on_a_terminal_and_plain_elsewhere(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    from rich.logging import RichHandler

    assert isinstance(ConsoleHandler().inner, RichHandler)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    handler = ConsoleHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))  # what the job_logging config sets
    assert isinstance(handler.inner, logging.StreamHandler) and handler.inner.formatter._fmt == PLAIN_FORMAT
    record = logging.LogRecord("vedforge", logging.INFO, __file__, 1, "/a/path/" + "x" * 200, None, None)
    handler.handle(record)
    written = sys.stderr.getvalue()
    assert written.count("\n") == 1 and written.rstrip().endswith("/a/path/" + "x" * 200)
