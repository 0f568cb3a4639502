"""The ``vedforge`` command: Hydra composes the recipe, the runner forges it.

Exit codes: 0 success, 2 a problem with the recipe, inputs or environment (the message
says what to change), 3 an internal error. Set VEDFORGE_DEBUG=1 to see tracebacks.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

from vedforge.errors import EXIT_INTERNAL_ERROR, EXIT_USER_ERROR, VedforgeError

# Hydra exits with 1 on any composition error (unknown option, misspelt key, wrong type).
_HYDRA_ERROR_EXIT = 1


def _debug() -> bool:
    return os.environ.get("VEDFORGE_DEBUG", "") not in ("", "0", "false")


def report(message: str, *, internal: bool = False) -> None:
    """Print an error as one wrapped paragraph on stderr."""
    prefix = "vedforge: internal error: " if internal else "vedforge: error: "
    print(textwrap.fill(prefix + message, width=100, break_long_words=False, break_on_hyphens=False), file=sys.stderr)


def run_task(cfg) -> None:
    """Hydra's task function: forge one recipe and translate failures into exit codes."""
    from hydra.core.hydra_config import HydraConfig

    from vedforge.runner import forge

    hydra_cfg = HydraConfig.get()
    records = Path(hydra_cfg.runtime.output_dir) / hydra_cfg.output_subdir if hydra_cfg.output_subdir else None
    try:
        forge(cfg, hydra_records=records)
    except VedforgeError as exc:
        if _debug():
            raise
        report(str(exc))
        sys.exit(EXIT_USER_ERROR)
    except Exception as exc:
        if _debug():
            raise
        report(
            f"{type(exc).__name__}: {exc}. This is a bug in vedforge or a library below it; "
            "rerun with VEDFORGE_DEBUG=1 for the traceback and report it.",
            internal=True,
        )
        sys.exit(EXIT_INTERNAL_ERROR)


def main() -> None:
    """Entry point of ``vedforge`` and ``python -m vedforge``."""
    import hydra

    from vedforge.resources import config_dir
    from vedforge.schema import register_schema

    register_schema()
    app = hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")(run_task)
    try:
        app()
    except SystemExit as exc:
        if exc.code == _HYDRA_ERROR_EXIT:
            sys.exit(EXIT_USER_ERROR)
        raise
