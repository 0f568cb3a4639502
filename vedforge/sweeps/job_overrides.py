"""The jobs of a sweep, as Hydra's basic sweeper expands them: shared by ``vedforge plan -m`` and the sweep's summary."""

from __future__ import annotations

from typing import Any

from vedforge.core.errors import VedforgeError


def sweep_job_overrides(master: Any, overrides: list[str]) -> list[list[str]]:
    """Each job's overrides, as Hydra's basic sweeper expands the command line and the recipe's
    ``hydra.sweeper.params``."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    target = str(master.hydra.sweeper.get("_target_", ""))
    if not target.endswith("BasicSweeper"):
        raise VedforgeError(
            f"vedforge plan -m expands sweeps of Hydra's basic sweeper only; this recipe uses hydra/sweeper "
            f"'{target}'. Plan its pairs one by one without -m."
        )
    params = master.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()] + list(overrides)
    parsed = OverridesParser.create().parse_overrides(arguments)
    batches = BasicSweeper.split_arguments(parsed, None)
    return [job for batch in batches for job in batch]
