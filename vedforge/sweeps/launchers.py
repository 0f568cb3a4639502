"""Which Hydra launcher plugins a command line asks for, and the extra that installs each.

Without its plugin, ``hydra/launcher=NAME`` fails in Hydra with a list of the launchers that are
installed; the CLI says instead which extra to install.
"""

from __future__ import annotations

import importlib.util
from typing import Iterable, Optional

#: launcher option -> (modules it needs, vedforge extra that installs them)
LAUNCHER_EXTRAS: dict[str, tuple[tuple[str, ...], str]] = {
    "joblib": (("hydra_plugins.hydra_joblib_launcher",), "joblib"),
    "submitit_local": (("hydra_plugins.hydra_submitit_launcher",), "submitit"),
    "submitit_slurm": (("hydra_plugins.hydra_submitit_launcher",), "submitit"),
    "ray": (("hydra_plugins.hydra_ray_launcher", "ray"), "ray"),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing, or the module is blocked
        return False


def missing_launcher(argv: Iterable[str]) -> Optional[str]:
    """The message for a ``hydra/launcher=NAME`` override whose plugin is not installed, else None."""
    for arg in argv:
        group, _, name = arg.lstrip("+").partition("=")
        if group != "hydra/launcher" or name not in LAUNCHER_EXTRAS:
            continue
        modules, extra = LAUNCHER_EXTRAS[name]
        absent = [module for module in modules if not _installed(module)]
        if absent:
            return (f"The launcher in '{arg}' is not installed ({', '.join(absent)} cannot be imported). Install it "
                    f"with: pip install 'vedforge[{extra}]'.")
    return None
