"""The recipe schema: typed structured configs that Hydra validates at compose time.

A misspelt key (``encoder.revison=...``) or a wrong type (``seed=abc``) is rejected while
Hydra composes the recipe, before anything is loaded. Checks that need more than a type
(a token that must be an id *or* a string, a size string) live in :mod:`vedforge.recipe.validate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, Optional

from omegaconf import MISSING


class Weights(Enum):
    """Where a part's weights come from."""

    pretrained = "pretrained"  # the checkpoint's own tensors, bit for bit
    random = "random"  # a fresh initialisation of the checkpoint's architecture, seeded from the recipe


class PolicyKind(Enum):
    """How the special token ids of the forged model are chosen."""

    auto = "auto"
    explicit = "explicit"
    add_pad = "add_pad"


class CrossAttentionInit(Enum):
    """How the decoder's new cross-attention starts."""

    random = "random"  # as transformers initialises it, seeded from the recipe
    zero = "zero"  # output projection zero: at step 0 the decoder computes exactly its language model


class BackendName(Enum):
    """The framework whose model classes the forged weights are laid out for."""

    flax = "flax"  # FlaxVisionEncoderDecoderModel (flax_model.msgpack)
    pt = "pt"  # PyTorch VisionEncoderDecoderModel (model.safetensors); needs the torch extra
    auto = "auto"  # chosen from the parts: flax where both have Flax ports and Flax is here, else pt


class WeightFormat(Enum):
    """The on-disk format of a Flax forge's weights."""

    msgpack = "msgpack"  # flax_model.msgpack (sharded with an index past max_shard_size)
    safetensors = "safetensors"  # model.safetensors in Flax layout (never sharded: stock Flax cannot load that)


class ProjectorKind(Enum):
    """The new projector from vision features to the language model's embeddings (architecture=prefix)."""

    mlp2x_gelu = "mlp2x_gelu"  # Linear, GELU, Linear: LLaVA-1.5's projector
    linear = "linear"  # one linear map, as LLaVA-1 (LLaVA's second Linear starts as the identity, no activation)


class SelectStrategy(Enum):
    """Which of the tower's output tokens become image tokens (LLaVA's vision_feature_select_strategy)."""

    default = "default"  # drop the leading CLS token
    full = "full"  # keep every token


@dataclass
class SourceConfig:
    """One pretrained part of the pairing: the vision encoder or the text decoder."""

    # A hub repo id ("google/vit-base-patch16-224-in21k"), a local checkpoint directory,
    # or "builtin:NAME" for a checkpoint embedded in vedforge.
    name_or_path: str = MISSING
    # A branch, tag or commit on the hub; ignored for local directories.
    revision: Optional[str] = None
    # A folder inside the repo or directory that holds the checkpoint.
    subfolder: str = ""
    weights: Weights = Weights.pretrained
    # Merged into the Hugging Face config before the model is built, e.g. {image_size: 384}.
    config_overrides: Dict[str, Any] = field(default_factory=dict)


@dataclass
class TokenPolicyConfig:
    """The token policy. Tokens are given as an integer id or as a token string."""

    kind: PolicyKind = PolicyKind.auto
    decoder_start_token: Optional[Any] = None
    pad_token: Optional[Any] = None
    eos_token: Optional[Any] = None


@dataclass
class OutputConfig:
    """Where and how the artifact directory is written."""

    dir: str = "${hydra:runtime.output_dir}"
    format: WeightFormat = WeightFormat.msgpack
    # Largest weights file before the checkpoint is split into shards with an index,
    # as transformers' save_pretrained does ("10GB", "500MB", or a byte count).
    max_shard_size: str = "10GB"
    # Replace an existing artifact at `dir` (only once the new one is complete).
    overwrite: bool = False
    # Skip the forge when `dir` already holds a complete, unaltered artifact of this recipe.
    resume: bool = True
    # A Flax forge also writes PyTorch weights (model.safetensors, PyTorch names) beside the
    # Flax ones, so VisionEncoderDecoderModel.from_pretrained(dir) loads it too (transformers 5 included).
    pytorch: bool = False


@dataclass
class HubConfig:
    """How checkpoints named by hub id are fetched."""

    cache_dir: Optional[str] = None
    # Use only what is already in the cache. HF_HUB_OFFLINE=1 in the environment has the same effect.
    offline: bool = False
    # A token for gated or private repos. Prefer the HF_TOKEN environment variable.
    token: Optional[str] = None
    trust_remote_code: bool = False


@dataclass
class BackendConfig:
    """Which framework the forged model is for."""

    name: BackendName = BackendName.flax


@dataclass
class CrossAttentionConfig:
    """The decoder's new cross-attention layers."""

    init: CrossAttentionInit = CrossAttentionInit.random


@dataclass
class ArchitectureConfig:
    """Which model the forge builds."""

    # A folder under vedforge/architectures/ (a string, not an enum, so that a new architecture is
    # that folder plus its conf/architecture option): cross_attention (VisionEncoderDecoderModel, the
    # decoder cross-attends to the image) or prefix (LlavaForConditionalGeneration, projected image
    # features spliced into the LM's input), or auto: chosen from the decoder
    # (vedforge.pipeline.choice). Checked by vedforge.recipe.validate.
    name: str = "cross_attention"


@dataclass
class PrefixConfig:
    """The LLaVA-style pairing (architecture=prefix); ignored by architecture=cross_attention."""

    projector: ProjectorKind = ProjectorKind.mlp2x_gelu
    # The tower's hidden state the projector reads (-2: the penultimate layer, as LLaVA-1.5).
    vision_feature_layer: int = -2
    # null: from the encoder family (towers with a CLS token: default; without, such as SigLIP: full).
    vision_feature_select_strategy: Optional[SelectStrategy] = None


@dataclass
class ForgeConfig:
    """A complete recipe: one encoder, one decoder, one token policy and how to write them."""

    encoder: SourceConfig = MISSING
    decoder: SourceConfig = MISSING
    token_policy: TokenPolicyConfig = MISSING
    backend: BackendConfig = MISSING
    seed: int = 0
    cross_attention: CrossAttentionConfig = field(default_factory=CrossAttentionConfig)
    architecture: ArchitectureConfig = field(default_factory=ArchitectureConfig)
    prefix: PrefixConfig = field(default_factory=PrefixConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    hub: HubConfig = field(default_factory=HubConfig)


def option_value(node: Any) -> Any:
    """The plain value of an enum-typed recipe field (a composed config holds the Enum member)."""
    return getattr(node, "value", node)


def architecture_name(cfg: Any) -> str:
    """A composed recipe's ``architecture.name``; cross_attention for a recipe recorded before
    there was a choice (its manifest has no ``architecture`` key)."""
    node = cfg.get("architecture")
    return str(option_value(node.name)) if node is not None else "cross_attention"


def register_schema() -> None:
    """Register the schema, and the checked-in recipes as the ``recipe`` group, with Hydra's ConfigStore.

    The recipes live in the top-level ``recipes/`` directory rather than under ``conf/``, so
    they are stored here by name; a user's own recipes come from ``--config-dir DIR`` with
    ``DIR/recipe/NAME.yaml``, through Hydra's ordinary search path.
    """
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from vedforge.core.resources import recipes_dir

    cs = ConfigStore.instance()
    for recipe in sorted(recipes_dir().glob("*.yaml")):
        cs.store(group="recipe", name=recipe.stem, node=OmegaConf.load(recipe), package="_global_")
    # The top-level schema types every group's node, so the groups list only real options.
    cs.store(name="vedforge_schema", node=ForgeConfig)
