"""Keep a hub token given in the recipe out of every file a run leaves behind.

Hydra records the command line (``.hydra/overrides.yaml``), the composed config and, in a
sweep, ``multirun.yaml``, before the job starts; a token given as ``hub.token=...`` would
sit in all of them, and in the artifact's copy. vedforge's own records (manifest, model
card) never hold it. Prefer the HF_TOKEN environment variable, which is never recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

REDACTED = "<redacted>"
_RECORDS = (".hydra", "multirun.yaml")


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
    if not secret:
        return
    for directory in directories:
        if directory is None or not directory.is_dir():
            continue
        for path in _record_files(directory):
            try:
                text = path.read_text()
            except (OSError, UnicodeDecodeError):
                continue
            if secret in text:
                path.write_text(text.replace(secret, REDACTED))
