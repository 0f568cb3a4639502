"""Which frameworks a run needs, and keeping the others out of it.

transformers imports torch whenever it is installed (about 4 s), unless ``USE_TORCH=0`` is
set before transformers is first imported; and it imports jax (about 1 s) for its image
transforms whenever jax is installed, unless ``USE_FLAX=0``. A Flax forge never needs torch,
and a prefix (LLaVA-style) forge never needs jax, so the CLI decides from the composed recipe,
before anything imports transformers, what the run may use. Only the command line does this:
``import vedforge`` changes nothing in the importing process.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Iterable

from vedforge.core.errors import BackendError
from vedforge.core.frameworks import FALSE_VALUES
from vedforge.recipe.schema import architecture_name, option_value

INSTALL_HINT = 'pip install "vedforge[torch]" (on a CPU-only machine, pin the CPU wheel: pip install torch==2.13.0)'


def needs_torch(cfg: Any) -> bool:
    """True when forging ``cfg`` (a composed recipe) writes PyTorch weights."""
    return option_value(cfg.backend.name) == "pt" or bool(cfg.output.pytorch)


def _swept_values(override: str) -> tuple[str, list[str]]:
    key, _, value = override.lstrip("+~").partition("=")
    return key.strip(), [v.strip().lower() for v in re.split(r"[,()\[\]\s]+", value) if v.strip()]


def _swept(overrides: Iterable[str], sweeper_params: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """Each key a sweep sets, from the command line and the recipe's sweeper parameters, with its values."""
    return ([_swept_values(o) for o in overrides]
            + [_swept_values(f"{k}={v}") for k, v in (sweeper_params or {}).items()])


def sweep_needs_torch(cfg: Any, overrides: Iterable[str], sweeper_params: dict[str, Any]) -> bool:
    """True when any job of a sweep may write PyTorch weights: the base recipe does, or an
    override on the command line or in the recipe's sweeper parameters sweeps in ``pt``."""
    if needs_torch(cfg):
        return True
    for key, values in _swept(overrides, sweeper_params):
        if key in ("backend", "backend.name") and "pt" in values:
            return True
        if key == "output.pytorch" and "true" in values:
            return True
    return False


def configure_torch_import(needed: bool) -> None:
    """Before transformers is imported: hide torch from it unless this run needs torch.

    An explicit ``USE_TORCH`` from the user is respected either way.
    """
    if not needed:
        os.environ.setdefault("USE_TORCH", "0")


def needs_flax(cfg: Any) -> bool:
    """True when forging ``cfg`` traces transformers' Flax classes: every cross-attention forge
    (its tensors are laid out in Flax's tree), whatever its backend; never a prefix forge."""
    return architecture_name(cfg) != "prefix"


def sweep_needs_flax(cfg: Any, overrides: Iterable[str], sweeper_params: dict[str, Any]) -> bool:
    """True when any job of a sweep may need Flax (see :func:`needs_flax`)."""
    swept = [values for key, values in _swept(overrides, sweeper_params) if key in ("architecture", "architecture.name")]
    if swept:
        return any(value != "prefix" for values in swept for value in values)
    return needs_flax(cfg)


def configure_flax_import(needed: bool) -> None:
    """Before transformers is imported: hide jax and flax from it unless this run needs them.

    An explicit ``USE_FLAX`` from the user is respected either way.
    """
    # transformers reads USE_FLAX once, when it is first imported; set later, it would only leak
    # into the processes this one starts.
    if not needed and "transformers" not in sys.modules:
        os.environ.setdefault("USE_FLAX", "0")


def require_torch(what: str) -> Any:
    """Import and return torch for ``what`` (e.g. "backend=pt"), or raise :class:`BackendError`
    saying how to make it available."""
    if os.environ.get("USE_TORCH", "").lower() in FALSE_VALUES:
        raise BackendError(
            f"{what} needs PyTorch, but USE_TORCH={os.environ['USE_TORCH']} in the environment hides it from "
            "transformers. Unset USE_TORCH, or use backend=flax without output.pytorch."
        )
    try:
        import torch
    except ImportError:
        raise BackendError(
            f"{what} needs PyTorch, which is not installed in this environment ({sys.executable}). Install it with: "
            f"{INSTALL_HINT}. Or forge for Flax: backend=flax without output.pytorch."
        ) from None
    from transformers.utils import is_torch_available

    if not is_torch_available():
        raise BackendError(
            f"{what} needs PyTorch, but transformers was imported in this process with torch hidden "
            f"(USE_TORCH={os.environ.get('USE_TORCH')!r}). Unset USE_TORCH and run again."
        )
    return torch
