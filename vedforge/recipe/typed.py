"""A composed recipe as typed, frozen values: enum options converted once, sizes parsed once.

Hydra composes and type-checks a :class:`vedforge.recipe.schema.ForgeConfig`; :func:`typed_recipe`
turns it into a :class:`Recipe` the stages read, so no stage unwraps an enum or parses a
size string again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from vedforge.recipe.schema import architecture_name, option_value

ROLES = ("encoder", "decoder")
# Settings that say where and whether to write, not what: not part of the recorded recipe.
_NOT_RECIPE = ("dir", "overwrite", "resume")


@dataclass(frozen=True)
class PartRecipe:
    """One part of the pairing as the recipe names it."""

    role: str
    name_or_path: str
    revision: Optional[str]
    subfolder: str
    weights: str  # "pretrained" or "random"
    config_overrides: dict[str, Any]

    @property
    def random_weights(self) -> bool:
        return self.weights == "random"

    def overrides_key(self) -> str:
        """The overrides as canonical text, for cache keys."""
        return json.dumps(self.config_overrides, sort_keys=True)


@dataclass(frozen=True)
class TokenPolicy:
    """The token policy: its kind and the tokens the recipe gives (ids or token strings)."""

    kind: str
    decoder_start_token: Any = None
    pad_token: Any = None
    eos_token: Any = None


@dataclass(frozen=True)
class OutputRecipe:
    """Where and how the artifact is written."""

    dir: Path
    format: str  # "msgpack" or "safetensors"
    max_shard_size: int  # bytes
    max_shard_size_text: str  # as the recipe wrote it, for messages
    overwrite: bool
    resume: bool
    pytorch: bool


@dataclass(frozen=True)
class HubRecipe:
    """How hub checkpoints are fetched."""

    cache_dir: Optional[str]
    offline: bool
    token: Optional[str]
    trust_remote_code: bool


@dataclass(frozen=True)
class PrefixRecipe:
    """The LLaVA-style pairing's settings (architecture=prefix)."""

    projector: str  # "mlp2x_gelu" or "linear"
    vision_feature_layer: int
    vision_feature_select_strategy: Optional[str]  # None: from the encoder family

    @property
    def changed(self) -> bool:
        """Whether any setting differs from its default (so the recipe asks for a prefix pairing)."""
        return (self.projector, self.vision_feature_layer, self.vision_feature_select_strategy) != ("mlp2x_gelu", -2, None)


@dataclass(frozen=True)
class Recipe:
    """A validated recipe, typed."""

    encoder: PartRecipe
    decoder: PartRecipe
    token_policy: TokenPolicy
    backend: str  # "flax" or "pt" ("auto" until vedforge.pipeline.choice chooses)
    seed: int
    cross_attention_init: str  # "random" or "zero"
    output: OutputRecipe
    hub: HubRecipe
    # The recipe as recorded in the manifest (no output location, no secret).
    data: dict[str, Any]
    architecture: str = "cross_attention"  # or "prefix" ("auto" until chosen)
    prefix: Optional[PrefixRecipe] = None  # architecture=prefix (or auto) only
    # What vedforge chose for an "auto" setting, and why: {"backend": {"value": ..., "why": ...}}.
    choices: dict[str, dict[str, str]] = field(default_factory=dict)

    def part(self, role: str) -> PartRecipe:
        return self.encoder if role == "encoder" else self.decoder

    @property
    def writes_pytorch(self) -> bool:
        """True when the forge writes PyTorch-layout weights (and so needs torch)."""
        return self.backend == "pt" or self.output.pytorch


def recipe_dict(cfg: DictConfig) -> dict[str, Any]:
    """The recipe as plain data, resolved, without run-specific or secret values."""
    data = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    if data.get("architecture", {}).get("name", "cross_attention") == "cross_attention":
        # A cross-attention recipe is recorded as before the architecture choice existed, so its
        # manifest (and resume, and verify) stay byte for byte what they were.
        data.pop("architecture", None)
        data.pop("prefix", None)
    for key in _NOT_RECIPE:
        data.get("output", {}).pop(key, None)
    if data.get("hub", {}).get("token") is not None:
        data["hub"]["token"] = "<redacted>"
    return OmegaConf.to_container(OmegaConf.create(data), resolve=True)


def typed_recipe(cfg: DictConfig) -> Recipe:
    """Check ``cfg`` (every problem at once, :class:`vedforge.core.errors.RecipeError`) and type it."""
    from vedforge.core.units import parse_size
    from vedforge.recipe.validate import validate_recipe

    validate_recipe(cfg)

    def part(role: str) -> PartRecipe:
        node = cfg[role]
        overrides = OmegaConf.to_container(node.config_overrides, resolve=True) if node.config_overrides else {}
        return PartRecipe(role, str(node.name_or_path), node.revision, node.subfolder or "",
                          option_value(node.weights), dict(overrides))

    policy = cfg.token_policy
    architecture = architecture_name(cfg)
    prefix = None
    if architecture in ("prefix", "auto"):
        node = cfg.prefix
        strategy = node.vision_feature_select_strategy
        prefix = PrefixRecipe(option_value(node.projector), int(node.vision_feature_layer),
                              None if strategy is None else option_value(strategy))
    return Recipe(
        encoder=part("encoder"),
        decoder=part("decoder"),
        token_policy=TokenPolicy(option_value(policy.kind), policy.decoder_start_token, policy.pad_token,
                                 policy.eos_token),
        backend=option_value(cfg.backend.name),
        seed=int(cfg.seed),
        cross_attention_init=option_value(cfg.cross_attention.init),
        output=OutputRecipe(
            dir=Path(cfg.output.dir).absolute(), format=option_value(cfg.output.format),
            max_shard_size=parse_size(cfg.output.max_shard_size), max_shard_size_text=str(cfg.output.max_shard_size),
            overwrite=bool(cfg.output.overwrite), resume=bool(cfg.output.resume), pytorch=bool(cfg.output.pytorch),
        ),
        hub=HubRecipe(cfg.hub.cache_dir, bool(cfg.hub.offline), cfg.hub.token, bool(cfg.hub.trust_remote_code)),
        data=recipe_dict(cfg),
        architecture=architecture,
        prefix=prefix,
    )
