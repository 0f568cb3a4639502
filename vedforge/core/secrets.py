"""Keep a hub token given in the recipe out of every file a run leaves behind, and out of
everything a command prints.

Hydra records the command line (``.hydra/overrides.yaml``), the composed config and, in a
sweep, ``multirun.yaml``, before the job starts; a token given as ``hub.token=...`` would
sit in all of them, and in the artifact's copy. :func:`redact` rewrites those files. Hydra
also prints the command line (a sweep's ``#0 : ... hub.token=...`` line, ``--cfg``, its
error messages), so :func:`guard_console` makes every log record and every write to
stdout and stderr of the process pass through :func:`scrub`. vedforge's own records
(manifest, model card) never hold the token. Prefer the HF_TOKEN environment variable,
which is never recorded.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any, Iterable, Optional

REDACTED = "<redacted>"
_RECORDS = (".hydra", "multirun.yaml")
# What Hugging Face issues: "hf_" and 34 letters and digits. Anything of that shape is scrubbed
# from the console even when vedforge was not told it is a token (a recipe file's hub.token).
_HF_TOKEN_SHAPE = re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")
_TOKEN_OVERRIDE = re.compile(r"\+{0,2}hub\.token=(.*)", re.DOTALL)
# A sweep's choice(a,b), range(...), glob(...) around the values.
_SWEEP_FUNCTION = re.compile(r"\s*\w+\((.*)\)\s*", re.DOTALL)
_NOT_A_TOKEN = ("", "null", "None", "~")

_secrets: set[str] = set()


def register(secret: Any) -> None:
    """Scrub ``secret`` from everything this process prints from now on (None is no secret)."""
    text = "" if secret is None else str(secret)
    if text not in _NOT_A_TOKEN:
        _secrets.add(text)


def tokens_in_overrides(argv: Iterable[str]) -> list[str]:
    """Every value ``hub.token`` is given on a command line: as written, unquoted, and each
    value of a sweep over it (``hub.token=a,b``, ``hub.token=choice(a,b)``)."""
    found = []
    for arg in argv:
        match = _TOKEN_OVERRIDE.fullmatch(arg)
        if match is None:
            continue
        value = match.group(1)
        inner = _SWEEP_FUNCTION.fullmatch(value)
        found += [value, value.strip().strip("'\"")]
        found += [v.strip().strip("'\"") for v in (inner.group(1) if inner else value).split(",")]
    return [v for v in dict.fromkeys(found) if v not in _NOT_A_TOKEN]


def scrub(text: str) -> str:
    """``text`` with every registered secret, and anything shaped like a hub token, replaced by
    ``<redacted>``."""
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return _HF_TOKEN_SHAPE.sub(REDACTED, text) if "hf_" in text else text


class _ScrubbingStream:
    """A text stream that passes every write through :func:`scrub`; everything else is the
    wrapped stream's (``isatty``, ``fileno``, ``encoding``...)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(scrub(text) if isinstance(text, str) else text)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _scrubbing_factory(make_record: Any) -> Any:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: logging reports it when it is emitted
            return record
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            clean = scrub(text)
            if clean != text:
                record.exc_text = clean
        return record

    factory.vedforge_scrubs = True  # type: ignore[attr-defined]
    return factory


def guard_console() -> None:
    """Scrub every log record this process creates (whatever handlers a logging configuration
    installs later: Hydra's, a sweep job's, rich's), and everything written to ``sys.stdout``
    and ``sys.stderr`` (``print``, tracebacks, handlers created from now on). Idempotent."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _ScrubbingStream):
            setattr(sys, name, _ScrubbingStream(stream))
    make_record = logging.getLogRecordFactory()
    if not getattr(make_record, "vedforge_scrubs", False):
        logging.setLogRecordFactory(_scrubbing_factory(make_record))


def _record_files(directory: Path) -> Iterable[Path]:
    for name in _RECORDS:
        path = directory / name
        if path.is_dir():
            yield from (p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            yield path
    yield from directory.glob("*.log")


def redact(directories: Iterable[Optional[Path]], secret: Optional[str]) -> None:
    """Replace ``secret`` with ``<redacted>`` in Hydra's records and logs in ``directories``."""
    if secret:
        _redact(directories, [secret])


def redact_registered(directories: Iterable[Optional[Path]]) -> None:
    """Replace every secret :func:`register` was given in Hydra's records and logs in
    ``directories``: for the records of a run whose job never started (a sweep whose jobs do not
    compose), which no job redacted."""
    _redact(directories, sorted(_secrets, key=len, reverse=True))


def _redact(directories: Iterable[Optional[Path]], secrets: list[str]) -> None:
    for directory in directories:
        if directory is None or not directory.is_dir():
            continue
        for path in _record_files(directory):
            try:
                text = path.read_text()
            except (OSError, UnicodeDecodeError):
                continue
            redacted = text
            for secret in secrets:
                redacted = redacted.replace(secret, REDACTED)
            if redacted != text:
                path.write_text(redacted)
