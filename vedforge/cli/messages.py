"""How every vedforge command reports a problem: one wrapped paragraph on stderr."""

from __future__ import annotations

import os
import sys
import textwrap


def debug_enabled() -> bool:
    """VEDFORGE_DEBUG=1: let exceptions through with their tracebacks."""
    return os.environ.get("VEDFORGE_DEBUG", "") not in ("", "0", "false")


def report(message: str, *, internal: bool = False) -> None:
    """Print an error as one wrapped paragraph on stderr."""
    prefix = "vedforge: internal error: " if internal else "vedforge: error: "
    print(textwrap.fill(prefix + message, width=100, break_long_words=False, break_on_hyphens=False), file=sys.stderr)
