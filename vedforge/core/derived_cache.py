"""What vedforge derives from transformers' classes, kept on disk per configuration.

A forge reads tensor layouts and initialisers off transformers' own classes (traced Flax
modules, PyTorch models on the meta device). That is exact, but it costs the imports of jax and
flax or torch, which for a forge of pretrained parts are most of its wall time and memory. The
result depends only on the configuration and the library versions, so it is computed once and
kept here, as JSON; the next forge of the same configuration reads it and imports neither.

The key is the SHA-256 of the kind of derivation, its format, the installed versions of
transformers, flax, jax and torch (read from the package metadata, nothing imported) and the
configuration's own JSON. A file that is missing, unreadable or of another format is a miss: the
derivation runs again and rewrites it. Files are written whole or not at all (a temporary file
renamed into place), so concurrent forges of a sweep never read half a file.

The folder is ``$VEDFORGE_CACHE`` when set, else ``$XDG_CACHE_HOME/vedforge`` (``~/.cache/vedforge``).
``VEDFORGE_CACHE=off`` turns the cache off: every forge derives afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

T = TypeVar("T")
OFF = ("off", "0", "false", "no")
_PACKAGES = ("transformers", "flax", "jax", "torch")


def cache_dir() -> Optional[Path]:
    """The cache folder, or None when ``VEDFORGE_CACHE`` turns the cache off."""
    chosen = os.environ.get("VEDFORGE_CACHE")
    if chosen is not None:
        return None if chosen.strip().lower() in OFF else Path(chosen).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vedforge"


def _version(package: str) -> Optional[str]:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def derivation_key(kind: str, fmt: int, inputs: Any) -> str:
    """The key of derivation ``kind`` (format ``fmt``) of ``inputs`` (JSON-serialisable) under the
    installed library versions."""
    versions = {name: _version(name) for name in _PACKAGES}
    text = json.dumps({"kind": kind, "format": fmt, "versions": versions, "inputs": inputs},
                      sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _path(kind: str, key: str) -> Optional[Path]:
    root = cache_dir()
    return None if root is None else root / "derived" / kind / f"{key}.json"


def lookup(kind: str, key: str) -> Optional[Any]:
    """The stored value of derivation ``kind`` under ``key``, or None."""
    path = _path(kind, key)
    if path is None:
        return None
    try:
        return json.loads(path.read_text())["value"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store(kind: str, key: str, value: Any) -> None:
    """Keep ``value`` (JSON-serialisable) for ``kind`` under ``key``. A cache that cannot be
    written (a read-only home) costs only the next derivation, so failures are ignored."""
    path = _path(kind, key)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
            json.dump({"kind": kind, "value": value}, f, separators=(",", ":"))
        os.replace(f.name, path)
    except OSError:
        try:
            os.unlink(f.name)  # type: ignore[possibly-undefined]
        except (OSError, NameError):
            pass


def derived(kind: str, fmt: int, inputs: Any, compute: Callable[[], T], *,
            encode: Callable[[T], Any], decode: Callable[[Any], T]) -> T:
    """``compute()``, or its stored result for the same ``inputs`` and library versions.

    ``encode`` turns the result into JSON-serialisable data and ``decode`` back; a stored value
    that ``decode`` rejects is a miss.
    """
    key = derivation_key(kind, fmt, inputs)
    stored = lookup(kind, key)
    if stored is not None:
        try:
            return decode(stored)
        except (ValueError, KeyError, TypeError, IndexError):
            pass
    result = compute()
    store(kind, key, encode(result))
    return result
