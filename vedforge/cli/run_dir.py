"""Refuse a Hydra run or sweep directory that is a file, in one paragraph, before Hydra
tries to create it (Hydra itself would end in its traceback)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vedforge.pipeline.artifacts import not_a_directory
from vedforge.core.errors import EXIT_USER_ERROR


def _refuse_file(path: str, setting: str) -> None:
    error = not_a_directory(Path(path).absolute(), setting)
    if error is not None:
        from vedforge.cli.messages import report

        report(str(error))
        # SystemExit, not an exception: Hydra would print an exception as a traceback.
        sys.exit(EXIT_USER_ERROR)


class RunDirCheck(Callback):
    """Checks ``hydra.run.dir`` (a forge) and ``hydra.sweep.dir`` (a sweep) when the run starts,
    and keeps it in :attr:`directories` (Hydra writes its records there)."""

    directories: list[Path] = []

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _refuse_file(str(config.hydra.run.dir), "hydra.run.dir")
        RunDirCheck.directories.append(Path(str(config.hydra.run.dir)))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _refuse_file(str(config.hydra.sweep.dir), "hydra.sweep.dir")
        RunDirCheck.directories.append(Path(str(config.hydra.sweep.dir)))
