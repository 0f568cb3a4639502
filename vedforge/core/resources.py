"""Where the configuration tree, the checked-in recipes and the embedded assets live.

In a source checkout (editable install or ``python -m vedforge`` from the repo) ``conf/``
and ``recipes/`` sit at the top level beside the package; a wheel carries them inside the
package as ``vedforge/conf`` and ``vedforge/recipes``, so a non-editable install works
from any directory.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # vedforge/


def _locate(name: str) -> Path:
    for candidate in (_PACKAGE_DIR / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"vedforge's '{name}' directory is missing from the installation at {_PACKAGE_DIR}")


def config_dir() -> Path:
    """The directory holding ``config.yaml`` and the config groups."""
    return _locate("conf")


def recipes_dir() -> Path:
    """The directory holding the checked-in recipes."""
    return _locate("recipes")


def group_options(group: str) -> list[str]:
    """The option names of a config group; the ``recipe`` group is the checked-in recipes."""
    folder = recipes_dir() if group == "recipe" else config_dir() / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def assets_dir() -> Path:
    """The directory holding the embedded tiny checkpoints (configs, tokenizers, processors)."""
    return _PACKAGE_DIR / "assets"


def architecture_names() -> list[str]:
    """The architectures a recipe can name: the folders of ``vedforge/architectures/`` that are packages."""
    folder = _PACKAGE_DIR / "architectures"
    return sorted(p.parent.name for p in folder.glob("*/__init__.py"))
