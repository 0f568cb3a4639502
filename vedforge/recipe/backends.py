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
from vedforge.core.frameworks import FALSE_VALUES, TORCH_INSTALL
from vedforge.recipe.schema import architecture_name, option_value


def needs_torch(cfg: Any) -> bool:
    """True when forging ``cfg`` (a composed recipe) writes PyTorch weights, or may: with
    ``backend=auto`` unless both parts are known Flax pairings (:func:`predicted_flax_pairing`)."""
    backend = option_value(cfg.backend.name)
    if backend == "auto" and not predicted_flax_pairing(cfg):
        return True
    return backend == "pt" or bool(cfg.output.pytorch)


def torch_only_in_worker(cfg: Any) -> bool:
    """True when forging ``cfg`` reads transformers' PyTorch classes only in the torch worker
    (:mod:`vedforge.core.torch_worker`), so this process may hide torch from transformers: a
    prefix forge (``architecture=prefix`` named) of pretrained parts, whose tensors are copied from
    their files. A random part is drawn here, and remote code runs here."""
    return _pretrained_prefix(architecture_name(cfg), bool(cfg.hub.trust_remote_code),
                              [option_value(cfg[role].weights) == "random" for role in ("encoder", "decoder")])


def reads_torch_in_worker(recipe: Any) -> bool:
    """True when a typed ``recipe`` is forged (:func:`torch_only_in_worker`) in a process whose
    transformers has no PyTorch classes, so only the torch worker needs torch."""
    from vedforge.core.torch_worker import transformers_has_torch

    return (_pretrained_prefix(recipe.architecture, recipe.hub.trust_remote_code,
                               [recipe.part(role).random_weights for role in ("encoder", "decoder")])
            and not transformers_has_torch())


def _pretrained_prefix(architecture: str, trust_remote_code: bool, random_parts: list[bool]) -> bool:
    from vedforge.core.frameworks import transformers_version

    # transformers 5's configuration module imports torch whatever USE_TORCH says (through its
    # rope utilities), so hiding torch there would only add the worker's start-up.
    if transformers_version().split(".")[0] != "4":
        return False
    return architecture == "prefix" and not trust_remote_code and not any(random_parts)


def _model_type(node: Any, hub: Any) -> str | None:
    """A part's model type from its config.json where it is on this machine (embedded, a local
    folder, or the hub cache), read as JSON: transformers must not be imported yet. None when unknown."""
    import json
    from pathlib import Path

    from vedforge.core.resources import assets_dir

    name, subfolder = str(node.name_or_path), str(node.get("subfolder") or "")
    if name.startswith("builtin:"):
        path: Path | None = assets_dir() / name.removeprefix("builtin:") / "config.json"
    elif Path(name).expanduser().is_dir():
        path = Path(name).expanduser() / subfolder / "config.json"
    else:
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(name, f"{subfolder}/config.json" if subfolder else "config.json",
                                           cache_dir=hub.get("cache_dir"), revision=node.get("revision"))
        except Exception:  # noqa: BLE001 (an id the hub would refuse: unknown here, refused later)
            found = None
        path = Path(found) if isinstance(found, str) else None
    try:
        return json.loads(path.read_text()).get("model_type") if path is not None else None
    except (OSError, ValueError):
        return None


def _swept_pairs_predicted_flax(cfg: Any, overrides: Iterable[str], sweeper_params: dict[str, Any]) -> bool:
    """Whether every encoder and decoder option a sweep names (or the base recipe's) is a sure
    Flax pairing (:func:`predicted_flax_pairing`)."""
    from omegaconf import OmegaConf

    from vedforge.core.resources import config_dir

    parts: dict[str, list[Any]] = {"encoder": [cfg.encoder], "decoder": [cfg.decoder]}
    for key, values in _swept(overrides, sweeper_params):
        if key in parts:
            files = [config_dir() / key / f"{value}.yaml" for value in values]
            if not all(f.is_file() for f in files):
                return False
            parts[key] = [OmegaConf.load(f) for f in files]
        elif key.split(".")[0] in parts:
            return False  # a swept path or setting: not known before the jobs compose
    return all(_flax_pair(e, d, cfg) for e in parts["encoder"] for d in parts["decoder"])


def _flax_pair(encoder: Any, decoder: Any, cfg: Any) -> bool:
    from vedforge.families.registry import DECODER_FAMILIES, ENCODER_TYPES

    hub = cfg.get("hub") or {}
    return _model_type(encoder, hub) in ENCODER_TYPES and _model_type(decoder, hub) in DECODER_FAMILIES


def predicted_flax_pairing(cfg: Any) -> bool:
    """True when ``backend=auto`` (and ``architecture=auto``) will surely choose a Flax
    cross-attention forge: Flax is here and both parts' model types are among the Flax pairings
    vedforge's records hold (the choice itself, vedforge.pipeline.choice, decides the same way).
    Decided before transformers is imported, so that a Flax forge keeps torch out."""
    from vedforge.core.frameworks import flax_classes_available

    if not flax_classes_available() or architecture_name(cfg) == "prefix":
        return False
    return _flax_pair(cfg.encoder, cfg.decoder, cfg)


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
        if key in ("backend", "backend.name") and ("pt" in values or "auto" in values):
            return True
        if key == "output.pytorch" and "true" in values:
            return True
    # With backend=auto, some swept part may have no Flax port.
    return option_value(cfg.backend.name) == "auto" and not _swept_pairs_predicted_flax(cfg, overrides, sweeper_params)


def configure_torch_import(needed: bool) -> None:
    """Before transformers is imported: hide torch from it unless this run needs torch.

    An explicit ``USE_TORCH`` from the user is respected either way.
    """
    if not needed:
        os.environ.setdefault("USE_TORCH", "0")


def pretrained_torch_forge(backend: str, random_parts: Iterable[bool]) -> bool:
    """Whether a cross-attention forge reads its tensor tree off transformers' PyTorch classes on
    the meta device even where Flax classes exist: a PyTorch forge (``backend=pt``) of pretrained
    parts, which then needs no Flax at all. A random part keeps the traced Flax tree, whose
    initialisers it is drawn from (the PyTorch view knows them for fewer families)."""
    return backend == "pt" and not any(random_parts)


def needs_flax(cfg: Any) -> bool:
    """True when forging ``cfg`` may trace transformers' Flax classes: a cross-attention forge
    (its tensors are laid out in Flax's tree) unless it is a PyTorch forge of pretrained parts
    (:func:`pretrained_torch_forge`); never a prefix forge. With ``architecture=auto``, unless the
    decoder is known to be a decoder-only LM that only a prefix pairing holds."""
    from vedforge.families.registry import PREFIX_LMS

    if pretrained_torch_forge(option_value(cfg.backend.name),
                              (option_value(cfg[role].weights) == "random" for role in ("encoder", "decoder"))):
        return False
    architecture = architecture_name(cfg)
    if architecture == "auto":
        decoder = _model_type(cfg.decoder, cfg.get("hub") or {})
        family = PREFIX_LMS.get(decoder or "")
        return not (family is not None and not family.cross_attention)
    return architecture != "prefix"


def sweep_needs_flax(cfg: Any, overrides: Iterable[str], sweeper_params: dict[str, Any]) -> bool:
    """True when any job of a sweep may need Flax (see :func:`needs_flax`)."""
    pairs = _swept(overrides, sweeper_params)
    swept = [values for key, values in pairs if key in ("architecture", "architecture.name")]
    if swept:
        return any(value != "prefix" for values in swept for value in values)
    if any(key in ("backend", "backend.name", "encoder", "decoder", "encoder.weights", "decoder.weights")
           for key, _ in pairs):
        # Some job may be a Flax forge or draw a random part: only a prefix recipe surely needs no Flax.
        return architecture_name(cfg) != "prefix"
    return needs_flax(cfg)


def configure_flax_import(needed: bool) -> None:
    """Before transformers is imported: hide jax and flax from it unless this run needs them.

    An explicit ``USE_FLAX`` from the user is respected either way.
    """
    # transformers reads USE_FLAX once, when it is first imported; set later, it would only leak
    # into the processes this one starts.
    if not needed and "transformers" not in sys.modules:
        os.environ.setdefault("USE_FLAX", "0")


def require_torch(what: str, *, in_worker: bool = False) -> Any:
    """Import and return torch for ``what`` (e.g. "backend=pt"), or raise :class:`BackendError`
    saying how to make it available. With ``in_worker``, where this process hides torch from
    transformers and the torch worker reads its classes (:func:`torch_only_in_worker`), only check
    that torch is installed, and return None."""
    if in_worker:
        from vedforge.core.frameworks import require_torch_installed

        require_torch_installed(what)
        return None
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
            f"{TORCH_INSTALL}. Or forge for Flax: backend=flax without output.pytorch."
        ) from None
    from transformers.utils import is_torch_available

    if not is_torch_available():
        raise BackendError(
            f"{what} needs PyTorch, but transformers was imported in this process with torch hidden "
            f"(USE_TORCH={os.environ.get('USE_TORCH')!r}). Unset USE_TORCH and run again."
        )
    return torch
