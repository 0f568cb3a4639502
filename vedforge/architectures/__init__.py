"""The architectures vedforge forges, one folder each, all behind :class:`~vedforge.architectures.interface.Architecture`.

The ``architecture`` config option names the folder: ``architecture=prefix`` is
``vedforge/architectures/prefix``, whose package exports ``ARCHITECTURE``. A new architecture is
a new folder with that object, plus ``conf/architecture/<name>.yaml``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any


def architecture(name: str) -> Any:
    """The :class:`~vedforge.architectures.interface.Architecture` selected by ``architecture=<name>``."""
    return import_module(f"{__name__}.{name}").ARCHITECTURE


def architecture_of(plan: Any) -> Any:
    """The architecture that made ``plan``."""
    return architecture(plan.recipe.architecture)
