"""What a recipe leaves to vedforge: the architecture and the backend, chosen from its parts.

``architecture=auto`` and ``backend=auto`` (the defaults) are decided from the parts' configs,
before anything else is planned: a decoder that cross-attends makes a ``VisionEncoderDecoderModel``
and a decoder-only language model without cross-attention a LLaVA-style model; a pairing whose
parts both have a working Flax port is forged for Flax where transformers has Flax classes, any
other for PyTorch. A recipe that names either keeps it, and a setting that cannot work is refused
by the architecture's plan with its reason, as before. The choice and its reason go into the
plan and the manifest, and the recorded recipe holds the chosen values, so resuming and
verifying compare what was forged.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from vedforge.core.errors import UnsupportedModelError
from vedforge.recipe.typed import Recipe

AUTO = "auto"


def choose(recipe: Recipe) -> Recipe:
    """``recipe`` with ``auto`` architecture and backend replaced by the choice its parts make,
    and ``recipe.choices`` saying what was chosen and why (empty when the recipe named both)."""
    if AUTO not in (recipe.architecture, recipe.backend):
        return recipe
    configs = _part_configs(recipe)
    choices: dict[str, dict[str, str]] = {}
    architecture = recipe.architecture
    if architecture == AUTO:
        architecture, why = _architecture(recipe, configs)
        choices["architecture"] = {"value": architecture, "why": why}
    backend = recipe.backend
    if backend == AUTO:
        backend, why = _backend(recipe, architecture, configs)
        choices["backend"] = {"value": backend, "why": why}
    data = copy.deepcopy(recipe.data)
    data.setdefault("backend", {})["name"] = backend
    if architecture == "cross_attention":
        # Recorded as a recipe that named it (see vedforge.recipe.typed.recipe_dict).
        data.pop("architecture", None)
        data.pop("prefix", None)
    else:
        data["architecture"] = {"name": architecture}
    return dataclasses.replace(recipe, architecture=architecture, backend=backend, data=data, choices=choices,
                               prefix=recipe.prefix if architecture == "prefix" else None)


def _part_configs(recipe: Recipe) -> dict[str, tuple[Any, str, Any]]:
    """Each part's config (the part a whole multimodal checkpoint holds), how to name it, and the
    attribute of the whole checkpoint it came from (None for a checkpoint of the part alone)."""
    from vedforge.sources.loading import read_part_config
    from vedforge.sources.resolve import locate

    configs = {}
    for role in ("encoder", "decoder"):
        source = locate(recipe.part(role), recipe.hub, need_weights=False)
        config, taken_from = read_part_config(source, recipe.hub.trust_remote_code, role, "pt")
        configs[role] = (config, source.describe(), taken_from)
    return configs


def _architecture(recipe: Recipe, configs: dict[str, tuple[Any, str, Any]]) -> tuple[str, str]:
    from vedforge.families.introspect import language_model
    from vedforge.families.roles import decoder_family

    if recipe.prefix is not None and recipe.prefix.changed:
        if recipe.cross_attention_init != "random":
            from vedforge.core.errors import RecipeError

            raise RecipeError(["prefix.* settings ask for architecture=prefix and cross_attention.init for "
                               "architecture=cross_attention; keep the settings of one architecture (or name it: "
                               "architecture=prefix or architecture=cross_attention)"])
        return "prefix", "prefix.* settings are given"
    if recipe.cross_attention_init != "random":
        return "cross_attention", "cross_attention.init is given"
    decoder, where, _ = configs["decoder"]
    try:
        decoder_family(decoder, where, "pt")
        return "cross_attention", f"the decoder ('{decoder.model_type}') can cross-attend to the image"
    except (UnsupportedModelError, ImportError) as cross:
        try:
            language_model(decoder, where)
        except UnsupportedModelError:
            # Neither holds it: the cross-attention plan refuses it with its own reason.
            return "cross_attention", f"the decoder ('{decoder.model_type}') fits neither; {cross}"
    return "prefix", (f"the decoder ('{decoder.model_type}') is a decoder-only language model without "
                      "cross-attention, which LlavaForConditionalGeneration holds")


def _backend(recipe: Recipe, architecture: str, configs: dict[str, tuple[Any, str, Any]]) -> tuple[str, str]:
    from vedforge.core.frameworks import flax_classes_available, transformers_version
    from vedforge.families.roles import decoder_family, encoder_family

    if architecture == "prefix":
        return "pt", "LlavaForConditionalGeneration exists in PyTorch only"
    if recipe.output.pytorch or recipe.output.format != "msgpack":
        return "flax", "output.pytorch or output.format chooses a Flax forge's files"
    if not flax_classes_available():
        return "pt", f"this environment has no Flax classes (transformers {transformers_version()})"
    for role, family in (("encoder", encoder_family), ("decoder", decoder_family)):
        config, where, taken_from = configs[role]
        if taken_from is not None:
            return "pt", f"the {role} is taken from a whole model's PyTorch weights ({taken_from})"
        try:
            flax_port = family(config, where, "flax").built_with == "flax"
        except (UnsupportedModelError, ImportError):
            flax_port = False
        if not flax_port:
            return "pt", f"the {role} ('{config.model_type}') has no Flax port vedforge forges"
    return "flax", "both parts have Flax ports: FlaxVisionEncoderDecoderModel, as in the classic script"
