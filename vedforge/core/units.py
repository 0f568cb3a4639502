"""Sizes in bytes: parsed from a recipe (``2GB``, ``500MiB``) and shown to a person (``1.23 GB``)."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Optional

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str | int) -> int:
    """Parse ``"10GB"``, ``"500MiB"`` or a byte count; raise ValueError otherwise."""
    if isinstance(text, int):
        if text <= 0:
            raise ValueError(text)
        return text
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(text)
    # Decimal, not float: "4.1GB" must be 4100000000 bytes, not one short.
    value = Decimal(match.group(1)) * _UNITS[(match.group(2) or "B").upper()]
    if value < 1:
        raise ValueError(text)
    return int(value)


def human_bytes(count: Optional[int]) -> str:
    """``1.23 GB``, ``456 kB``... (decimal units, as the hub shows sizes)."""
    if count is None:
        return "unknown"
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.2f} {unit}"
    return f"{count} B"
