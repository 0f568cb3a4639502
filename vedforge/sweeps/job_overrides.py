"""The jobs of a sweep, as Hydra's basic sweeper expands them and its launcher composes them: shared
by ``vedforge plan -m`` and the sweep itself (its summary, and the pairs it refuses)."""

from __future__ import annotations

import os
from typing import Any, Optional

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


def compose_job(loader: Any, master: Any, job: list[str]) -> tuple[str, Any]:
    """One job of the sweep composed as the launcher composes it: its pair name and its config, with
    ``hydra.runtime.output_dir`` set to ``<sweep dir>/<pair>`` as Hydra sets it when the job runs.
    That config is left set as the current HydraConfig, so ``${hydra:...}`` in the recipe
    (``output.dir`` by default) resolves against it."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict, read_write

    config = loader.load_sweep_config(master, list(job))
    with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
        config.hydra.runtime.output_dir = "."  # resolved below, once the subdir is known
    HydraConfig.instance().set_config(config)
    pair = str(OmegaConf.select(config, "hydra.sweep.subdir"))
    output_dir = os.path.join(str(OmegaConf.select(config, "hydra.sweep.dir")), pair)
    with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
        config.hydra.runtime.output_dir = os.path.abspath(output_dir)
    HydraConfig.instance().set_config(config)
    return pair, config


class SharedOutputs:
    """The first pair of a sweep (in the sweep's order) to name an output directory owns it; a
    later pair naming the same directory is refused, whatever the outcome of the first, so the
    plan and the sweep (in any launcher, in any order of completion) refuse the same pairs."""

    def __init__(self) -> None:
        self._owners: dict[str, str] = {}

    def claim(self, pair: str, output_dir: str) -> Optional[str]:
        """None when ``pair`` may write to ``output_dir``; else why it may not."""
        owner = self._owners.setdefault(os.path.realpath(output_dir), pair)
        if owner == pair:
            return None
        return (
            f"output.dir='{output_dir}' is also the output directory of the pair {owner}, which comes earlier in the "
            f"sweep, so the pair {pair} is not forged: two pairs of a sweep cannot share one output directory. Give "
            "each pair its own output.dir, or leave output.dir unset so that each pair writes to <sweep dir>/<pair>."
        )
