"""The one place a composed recipe is checked beyond its types; every problem is reported at once."""

from __future__ import annotations

from typing import Any

from omegaconf import ListConfig, OmegaConf

from vedforge.core.resources import architecture_names
from vedforge.core.units import parse_size
from vedforge.core.errors import RecipeError
from vedforge.recipe.schema import architecture_name, option_value

_TOKENS = ("decoder_start_token", "pad_token", "eos_token")


def recipe_problems(cfg: Any) -> list[str]:
    """Every problem in ``cfg`` (a composed ForgeConfig) that can be found without loading anything."""
    problems: list[str] = []
    for role in ("encoder", "decoder"):
        node = cfg[role]
        if OmegaConf.is_missing(node, "name_or_path"):
            problems.append(
                f"{role}.name_or_path is missing: the {role} option names no checkpoint of its own ({role}=any takes "
                f"any), so give one: {role}.name_or_path=ORG/NAME (a hub repo id), a local directory or builtin:NAME")
            continue
        if not str(node.name_or_path or "").strip():
            problems.append(f"{role}.name_or_path is empty; give a hub repo id, a local directory or builtin:NAME")
        for key in node.config_overrides or {}:
            if key in ("is_decoder", "add_cross_attention"):
                problems.append(f"{role}.config_overrides.{key} is set by vedforge itself and cannot be overridden")
    policy = cfg.token_policy
    kind = option_value(policy.kind)
    for name in _TOKENS:
        value = policy[name]
        if isinstance(value, ListConfig) and len(value) == 1 and isinstance(value[0], str):
            # Hydra's override grammar reads [SEP] as a one-element list.
            problems.append(
                f"token_policy.{name} was read as the list [{value[0]}]; quote a bracketed token on the command "
                f"line: 'token_policy.{name}=\"[{value[0]}]\"'"
            )
        elif isinstance(value, bool):
            # Hydra's override grammar reads true/false/yes/no-like words as booleans.
            problems.append(
                f"token_policy.{name} was read as the boolean {value}; quote a token string that looks like one: "
                f"'token_policy.{name}=\"{str(value).lower()}\"' (with the exact spelling you mean)"
            )
        elif value is not None and (not isinstance(value, (int, str)) or value == ""):
            problems.append(f"token_policy.{name}={value!r} must be a token id (an integer) or a token string")
    if kind == "explicit":
        missing = [name for name in _TOKENS if policy[name] is None]
        if missing:
            problems.append(
                "token_policy=explicit needs " + ", ".join(f"token_policy.{m}" for m in missing)
                + " (an id or a token string each), or use token_policy=auto"
            )
    try:
        parse_size(cfg.output.max_shard_size)
    except (ValueError, TypeError):
        problems.append(
            f"output.max_shard_size={cfg.output.max_shard_size!r} is not a size; write it like 10GB, 500MB, 2GiB or a byte count"
        )
    if (option_value(cfg.backend.name) in ("flax", "auto") and cfg.output.pytorch
            and option_value(cfg.output.format) == "safetensors"):
        problems.append(
            "output.pytorch=true writes PyTorch weights to model.safetensors, the file output.format=safetensors "
            "writes the Flax weights to; use output.format=msgpack with output.pytorch=true, or backend=pt for "
            "PyTorch weights only"
        )
    problems += _pytorch_backend_problems(cfg)
    problems += _architecture_problems(cfg)
    if cfg.seed < 0:
        problems.append(f"seed={cfg.seed} must be zero or positive")
    return problems


def _pytorch_backend_problems(cfg: Any) -> list[str]:
    """Flax output settings given with backend=pt, which would otherwise be ignored without a word."""
    if option_value(cfg.backend.name) != "pt":
        return []
    problems = []
    if option_value(cfg.output.format) != "msgpack":
        problems.append(
            f"output.format={option_value(cfg.output.format)} chooses the file format of Flax weights (msgpack, or "
            "Flax-layout model.safetensors), and backend=pt always writes PyTorch model.safetensors (and no Flax "
            "weights); leave output.format out with backend=pt, or use backend=flax "
            "output.format=safetensors for Flax-layout safetensors"
        )
    if cfg.output.pytorch:
        problems.append(
            "output.pytorch=true adds PyTorch model.safetensors beside a Flax forge's weights, and backend=pt "
            "always writes PyTorch model.safetensors (and no Flax weights); leave output.pytorch out with "
            "backend=pt, or use backend=flax output.pytorch=true for both"
        )
    return problems


def _architecture_problems(cfg: Any) -> list[str]:
    """Settings that do not fit the chosen architecture (``architecture.name``)."""
    architecture = architecture_name(cfg)
    known = architecture_names()
    if architecture == "auto":
        return []  # chosen from the parts; the chosen architecture's plan checks its own settings
    if architecture not in known:
        return [f"architecture.name={architecture} is not an architecture vedforge has; choose one of: {', '.join(known)} "
                "or auto (architecture=<name> selects it)"]
    prefix = cfg.get("prefix")
    if architecture != "prefix":
        changed = []
        if prefix is not None:
            defaults = {"projector": "mlp2x_gelu", "vision_feature_layer": -2, "vision_feature_select_strategy": None}
            changed = [f"prefix.{key}" for key, value in defaults.items() if option_value(prefix.get(key)) != value]
        if changed:
            return [f"{', '.join(changed)} set, but they apply to architecture=prefix only (this recipe is "
                    f"architecture={architecture}); add architecture=prefix backend=pt, or leave them out"]
        return []
    problems = []
    if option_value(cfg.backend.name) not in ("pt", "auto"):
        problems.append(
            f"architecture=prefix builds transformers' LlavaForConditionalGeneration, which exists in PyTorch only "
            f"(transformers has no Flax LLaVA), so backend={option_value(cfg.backend.name)} cannot forge it; add backend=pt"
        )
    if option_value(cfg.cross_attention.init) != "random":
        problems.append(
            "cross_attention.init applies to architecture=cross_attention only: a prefix pairing has no "
            "cross-attention (its new projector is seeded from the recipe); leave cross_attention.init out"
        )
    return problems


def validate_recipe(cfg: Any) -> None:
    """Raise :class:`RecipeError` listing every problem in ``cfg``; return quietly if there are none."""
    problems = recipe_problems(cfg)
    if problems:
        raise RecipeError(problems)
