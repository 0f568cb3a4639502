"""Whether this environment has transformers' Flax classes, and the one paragraph that says so when not.

transformers 4.57 is the last line with Flax classes (``FlaxVisionEncoderDecoderModel``,
``FlaxAutoModel``...); transformers 5 has none. vedforge's Flax route (``backend=flax``,
``output.pytorch`` beside a Flax forge, :mod:`vedforge.compat`) needs them, and jax and flax
installed; its PyTorch routes (``backend=pt``, ``architecture=prefix``, ``vedforge convert``)
run on either line. The check reads installed package metadata only: it imports neither
transformers nor jax, so the CLI can ask before deciding what transformers may import.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from functools import lru_cache

# The Flax profile, as the README's first section installs it.
FLAX_INSTALL = 'pip install "vedforge[flax]"'
# PyTorch, for the routes that need it.
TORCH_INSTALL = 'pip install "vedforge[torch]" (on a CPU-only machine, pin the CPU wheel: pip install torch==2.13.0)'
# What turns USE_TORCH / USE_FLAX off, as transformers reads them.
FALSE_VALUES = ("0", "false", "no", "off")


@lru_cache(maxsize=None)
def transformers_version() -> str:
    try:
        return importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        return "none"


def major_version(version: str) -> int:
    """The major number of a version string such as ``4.57.6``; 0 when it has none."""
    try:
        return int(version.split(".")[0])
    except ValueError:
        return 0


@lru_cache(maxsize=None)
def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def flax_classes_available() -> bool:
    """True when transformers has its Flax classes (4.x), jax and flax are installed, and
    ``USE_FLAX`` does not hide them from transformers."""
    if os.environ.get("USE_FLAX", "").lower() in FALSE_VALUES:
        return False
    return major_version(transformers_version()) < 5 and _installed("jax") and _installed("flax")


def flax_missing_reason(what: str) -> str:
    """One paragraph: ``what`` needs the Flax route, why this environment cannot run it, and the
    exact command that installs the profile that can."""
    version = transformers_version()
    if major_version(version) >= 5:
        why = (f"transformers {version} is installed here, and transformers 5 has no Flax classes "
               "(4.57 is the last line with them)")
    else:
        missing = [name for name in ("jax", "flax") if not _installed(name)]
        why = (f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed here "
               f"(transformers {version})" if missing else
               f"USE_FLAX={os.environ.get('USE_FLAX')} hides them from transformers here")
    return (
        f"{what} needs transformers' Flax classes: {why}. Install vedforge's Flax profile, in an environment "
        f"of its own: {FLAX_INSTALL} (from a checkout: pip install \".[flax]\"), which pins transformers>=4.57,<5 "
        "and huggingface-hub<1 and installs jax and flax. The PyTorch routes run here as they are: backend=pt, "
        "architecture=prefix and vedforge convert."
    )


def config_to_build(config: object) -> object:
    """The config to build a transformers model from when only the model is wanted.

    Building a model leaves marks on the config it is given. transformers 4 sets keys such as
    ``tie_word_embeddings`` and ``is_encoder_decoder`` that the written ``config.json`` has always
    recorded, so there the config itself is used and forges stay byte-identical to earlier ones.
    transformers 5 sets the attention implementation, which a DETR backbone then refuses the
    second time a model is built, so it gets a copy.
    """
    import copy

    return copy.deepcopy(config) if major_version(transformers_version()) >= 5 else config


def require_torch_installed(what: str) -> None:
    """Raise :class:`~vedforge.core.errors.BackendError` unless torch is installed, for ``what``
    that writes files for PyTorch without running it (torch is looked up, not imported: importing
    it takes seconds)."""
    import sys

    from vedforge.core.errors import BackendError

    if not _installed("torch"):
        raise BackendError(
            f"{what} needs PyTorch, which is not installed in this environment ({sys.executable}). Install it with: "
            f"{TORCH_INSTALL}."
        )
