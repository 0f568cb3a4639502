"""Tiny random models of any model type transformers registers, for the any-family tests.

The model types come from transformers' own auto registries, never from a list in vedforge:
:func:`registered_types` reads them. :func:`save_tiny` shrinks a type's default config with the
common size attributes (each set only where the config has it), builds the model with random
weights and saves it with ``save_pretrained``, beside an embedded tiny tokenizer (for language
models) or image processor (for towers). A type whose default config does not shrink this way,
or whose class does not build on this machine, raises :class:`NotBuildable`: the matrix counts
those apart from vedforge's own refusals.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

from vedforge.core.resources import assets_dir
from vedforge.families.introspect import is_vision_config

LM_TOKENIZER = "llama_tiny"  # a 512-token byte-level BPE with a chat template
TOWER_PROCESSOR = "vit_tiny"  # 32 x 32 images

# Common size attributes; set where the config has them (attribute_map aliases count).
_SIZES = {
    "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 128, "head_dim": 16, "max_position_embeddings": 256, "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 32, "num_experts": 4, "num_local_experts": 4, "num_experts_per_tok": 2,
    "n_routed_experts": 4, "n_shared_experts": 1, "first_k_dense_replace": 1, "sliding_window": 64,
    "ffn_dim": 128, "decoder_ffn_dim": 128, "encoder_ffn_dim": 128, "decoder_layers": 2, "encoder_layers": 2,
    "decoder_attention_heads": 4, "encoder_attention_heads": 4, "d_model": 64, "n_embd": 64, "n_layer": 2,
    "n_head": 4, "kv_lora_rank": 16, "q_lora_rank": 16, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8,
    "v_head_dim": 16, "linear_key_head_dim": 16, "linear_value_head_dim": 16, "linear_num_key_heads": 2,
    "linear_num_value_heads": 4, "global_attn_every_n_layers": 1,
    "word_embed_proj_dim": 64, "rotary_dim": 8, "partial_rotary_factor": 0.5,
}
_TOWER_SIZES = {"image_size": 32, "patch_size": 8, "num_channels": 3}


_MAX_PARAMETERS = 10_000_000


class NotBuildable(Exception):
    """The test's generic shrinking cannot make a tiny model of this type (not vedforge's refusal)."""


def registered_types(role: str) -> list[str]:
    """Every model type of ``role`` in the installed transformers: causal LMs for ``lm``; vision
    models AutoModel builds for ``tower``."""
    from transformers import AutoConfig
    from transformers.models.auto import modeling_auto

    if role == "lm":
        return sorted(modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    towers = []
    for model_type in sorted(modeling_auto.MODEL_MAPPING_NAMES):
        try:
            config = AutoConfig.for_model(model_type)
        except Exception:  # a type whose default config cannot be made at all
            continue
        if is_vision_config(config):
            towers.append(model_type)
    return towers


def _has(config: Any, name: str) -> bool:
    return name in config.to_dict() or name in getattr(config, "attribute_map", {})


def tiny_config(model_type: str, role: str, **extra: Any) -> Any:
    """A shrunken default config of ``model_type`` for ``role`` (``lm`` or ``tower``)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.for_model(model_type)
    except Exception as exc:
        raise NotBuildable(f"AutoConfig.for_model: {type(exc).__name__}: {exc}") from None
    _shrink(config, tower=role == "tower")
    # A composite model (Gemma3, Mllama): its language and vision parts shrink alike.
    for name, tower in (("text_config", False), ("vision_config", True)):
        inner = getattr(config, name, None)
        if inner is not None and hasattr(inner, "to_dict"):
            _shrink(inner, tower=tower)
    if role == "lm":
        tokenizer = _tokenizer()
        config.vocab_size = len(tokenizer)
        config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
        config.pad_token_id = None
    for name, value in extra.items():
        setattr(config, name, value)
    return config


def _shrink(config: Any, *, tower: bool) -> None:
    sizes = dict(_SIZES, **(_TOWER_SIZES if tower else {}))
    for name, value in sizes.items():
        if _has(config, name):
            setattr(config, name, value)
    if isinstance(getattr(config, "layer_types", None), list) and config.layer_types:
        # Keep one layer of each kind (a hybrid LM with only its linear-attention layers has no
        # attention cache to generate with).
        kinds = list(dict.fromkeys(config.layer_types))
        count = max(sizes["num_hidden_layers"], len(kinds))
        config.layer_types = (kinds * count)[:count]
        config.num_hidden_layers = count
    if isinstance(getattr(config, "stage_names", None), list) and _has(config, "num_hidden_layers"):
        # A backbone config names one stage per layer: fewer layers, fewer stages.
        config.stage_names = ["stem"] + [f"stage{i}" for i in range(1, config.num_hidden_layers + 1)]
        config.out_features = None


def _runs_alone(dest: Path, role: str) -> None:
    """The saved model reloads and runs by itself on this machine (CPU): a forward and a backward
    pass, and for a language model a short generation. A family that does not is not vedforge's to
    pair here (it needs CUDA kernels, video input, or more than the generic shrinking gives it)."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    try:
        AutoConfig.from_pretrained(dest)
        model = (AutoModelForCausalLM if role == "lm" else AutoModel).from_pretrained(dest)
        model.train()
        if role == "lm":
            ids = torch.tensor([[1, 5, 9, 3]])
            model(input_ids=ids, labels=ids).loss.backward()
            model.eval()
            with torch.no_grad():
                model.generate(input_ids=ids, max_new_tokens=2, do_sample=False)
        else:
            out = model(pixel_values=torch.rand(2, 3, 32, 32), output_hidden_states=True)
            out.hidden_states[-1].float().mean().backward()
    except Exception as exc:  # noqa: BLE001 (the reason is reported with the count)
        raise NotBuildable(f"does not run alone: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:150]}") from None


def _tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(assets_dir() / LM_TOKENIZER)


def save_tiny(model_type: str, role: str, dest: Path, *, seed: int = 0, check: bool = True, **extra: Any) -> Path:
    """Build a tiny random ``model_type`` for ``role`` and save it where a user's checkpoint would be
    (with ``check``, only if it then reloads and runs by itself)."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    config = tiny_config(model_type, role, **extra)
    cls = AutoModelForCausalLM if role == "lm" else AutoModel
    try:
        with torch.device("meta"):
            size = sum(p.numel() for p in cls.from_config(copy.deepcopy(config)).parameters())
    except Exception as exc:
        raise NotBuildable(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if size > _MAX_PARAMETERS:
        raise NotBuildable(f"the shrunken config still has {size:,} parameters (size attributes not shrunk)")
    torch.manual_seed(seed)
    try:
        model = cls.from_config(copy.deepcopy(config))
        model.save_pretrained(dest)
    except Exception as exc:
        raise NotBuildable(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if check:
        _runs_alone(dest, role)
    asset = assets_dir() / (LM_TOKENIZER if role == "lm" else TOWER_PROCESSOR)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                 "preprocessor_config.json"):
        if (asset / name).is_file():
            shutil.copy(asset / name, dest / name)
    return dest
