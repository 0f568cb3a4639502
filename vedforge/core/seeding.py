"""Seeds derived from the recipe's seed by name, so a value never depends on visiting order."""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, label: str) -> int:
    """A 31-bit seed for ``label`` under the recipe ``seed`` (stable across processes and hash seeds)."""
    digest = hashlib.sha256(f"{seed}\x00{label}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
