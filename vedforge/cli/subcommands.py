"""``vedforge verify`` and ``vedforge convert``: run one and turn its failures into exit codes.

Kept apart from :mod:`vedforge.cli.main`, which imports Hydra for the forge command line: these
commands need none of it, and a conversion is short enough for its start-up to count.
"""

from __future__ import annotations

import sys

from vedforge.cli.messages import debug_enabled as _debug, report
from vedforge.core.errors import EXIT_INTERNAL_ERROR, EXIT_INTERRUPTED, EXIT_USER_ERROR, VedforgeError

NAMES = ("verify", "convert")


def run_subcommand(name: str, argv: list[str]) -> int:
    """Run ``vedforge verify`` or ``vedforge convert`` and translate failures into exit codes."""
    from importlib import import_module

    command = import_module(f"vedforge.cli.{name}_command").main
    try:
        return command(argv)
    except VedforgeError as exc:
        if _debug():
            raise
        report(str(exc))
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        report("interrupted. Nothing partial was published; run the same command again.")
        return EXIT_INTERRUPTED
    except Exception as exc:
        if _debug():
            raise
        report(f"{type(exc).__name__}: {exc}. This is a bug in vedforge or a library below it; rerun with "
               "VEDFORGE_DEBUG=1 for the traceback and report it.", internal=True)
        return EXIT_INTERNAL_ERROR


def main(argv: list[str]) -> None:
    """Run ``vedforge NAME ...`` from ``argv`` (NAME one of :data:`NAMES`) and exit with its code."""
    from vedforge.core.secrets import guard_console, register, tokens_in_overrides

    # Before anything prints, as for a forge's command line.
    for token in tokens_in_overrides(argv):
        register(token)
    guard_console()
    sys.exit(run_subcommand(argv[0], argv[1:]))
