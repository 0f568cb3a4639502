"""The stages of a prefix forge after its plan: load, assemble, write (the runner drives them).

The tower's and the LM's tensors are indexed lazily (safetensors headers, or memory-mapped
``.bin`` files) and written one by one by vedforge's streaming writer, so a forge never holds a
whole ``LlavaForConditionalGeneration`` in memory and the checkpoints' dtypes are kept. Random-weight
parts (the embedded tiny models) are drawn by transformers' PyTorch initialisation from a seed
derived from the recipe's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np

from vedforge.artifacts import MANIFEST, StagedArtifact, file_table
from vedforge.seeding import derive_seed

log = logging.getLogger("vedforge")


def _random_state(part: Any, seed: int) -> dict[str, np.ndarray]:
    """A random-weight part's state dict, drawn by transformers' PyTorch initialisation."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    torch.manual_seed(derive_seed(seed, f"{part.role}-weights"))
    cls = AutoModel if part.role == "encoder" else AutoModelForCausalLM
    model = cls.from_config(part.config.model)
    return {name: tensor.detach().contiguous().numpy() for name, tensor in model.state_dict().items()}


def load_prefix(plan: Any, sources: dict[str, Any], cache: Any) -> tuple[dict[str, Any], dict[str, int]]:
    """Each part's tensors by name, shared through ``cache`` with the other forges of a sweep."""
    from vedforge.prefix_weights import read_part_tensors

    states, loads = {}, {}
    for role in ("encoder", "decoder"):
        part, source = plan.part(role), sources[role]
        random_weights = part.recipe.random_weights
        key = ("prefix", role, str(source.path), part.recipe.weights, plan.recipe.seed if random_weights else None,
               part.recipe.overrides_key())

        def read(p=part, s=source, rw=random_weights):
            return _random_state(p, plan.recipe.seed) if rw else read_part_tensors(s.path)

        states[role], loaded = cache.get(key, read)
        loads[role] = int(loaded)
        if not loaded:
            log.info("Reusing the %s checkpoint already read in this sweep", role)
    return states, loads


def assemble_prefix_weights(plan: Any, states: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The tensors to write (lazy), and the report of where each came from."""
    tensors, report = plan.assemble(states["encoder"], states["decoder"])
    return report, {"pytorch": tensors}


def _initialisation(plan: Any, role: str) -> Optional[dict[str, Any]]:
    part = plan.part(role)
    if not part.recipe.random_weights:
        return None
    kind = "AutoModel" if role == "encoder" else "AutoModelForCausalLM"
    return {
        "method": f"transformers' PyTorch initialisation ({kind}.from_config, the model class's _init_weights)",
        "generator": f"torch.manual_seed({derive_seed(plan.recipe.seed, f'{role}-weights')}), derived from the recipe seed",
        "seed": plan.recipe.seed,
    }


def build_prefix_manifest(plan: Any, sources: dict[str, Any], report: Any) -> dict[str, Any]:
    """The manifest of a prefix forge; the file table and timings are added once written."""
    from vedforge.manifest import describe_input, package_versions
    from vedforge.prefix_tensors import GENERATION

    recipe, tokens, config = plan.recipe, plan.tokens, plan.config
    return {
        "format_version": 1,
        "recipe": recipe.data,
        "versions": {**package_versions(), "torch": _torch_version()},
        "architecture": "prefix",
        "model_class": "LlavaForConditionalGeneration",
        "inputs": {
            role: describe_input(sources[role], model_type=plan.part(role).config.checkpoint.model_type,
                                 weights=recipe.part(role).weights, initialisation=_initialisation(plan, role))
            for role in ("encoder", "decoder")
        },
        "seed": recipe.seed,
        "backend": recipe.backend,
        "weight_layouts": [layout.layout.name for layout in plan.layouts],
        "prefix": {
            "projector": recipe.prefix.projector,
            "projector_hidden_act": config.projector_hidden_act,
            "vision_feature_layer": config.vision_feature_layer,
            "vision_feature_select_strategy": plan.select_strategy,
            "select_strategy_from": "recipe" if recipe.prefix.vision_feature_select_strategy else "encoder family",
            "num_additional_image_tokens": plan.leading_tokens,
            "patch_size": plan.processor.patch_size,
            "image_token": plan.processor.image_token,
            "image_token_index": tokens.image,
            "image_seq_length": plan.image_seq_length,
            "chat_template": plan.chat_template_source,
            "tie_word_embeddings": bool(config.tie_word_embeddings),
            "head_copied_from": plan.head_from,
            "dtype": str(plan.dtype),
            "new_weights": GENERATION,
        },
        "token_ids": {
            "policy": recipe.token_policy.kind, "image": tokens.image, "pad": tokens.pad, "eos": tokens.eos,
            "bos": tokens.bos, "added_tokens": list(tokens.added), "old_vocab_size": tokens.old_vocab,
            "vocab_size": tokens.vocab_size,
        },
        "parameters": report.parameter_counts(),
        "new_tensors": {part: names for part, names in report.new.items() if names},
        "resized_tensors": {"decoder": report.grown} if report.grown else {},
        "unused_checkpoint_tensors": {part: names for part, names in report.unused.items() if names},
        "needs_compat": False,
        "needs_drop_path_rng": None,
        "needs_keyword_decode": False,
        "needs_torch_compat": False,
    }


def _torch_version() -> str:
    import torch

    return torch.__version__


def write_prefix(plan: Any, sources: dict[str, Any], report: Any, tensors: dict[str, Any], staged: StagedArtifact,
                 hydra_records: Optional[Path], timer: Any, started: float) -> dict[str, Any]:
    """Every file of the artifact into the staging directory; returns the manifest."""
    import time

    from omegaconf import OmegaConf

    from vedforge.manifest import write_manifest
    from vedforge.prefix_card import render_prefix_card
    from vedforge.progress import byte_progress
    from vedforge.runner import _write_recipe_records

    out = staged.path
    recipe_text = OmegaConf.to_yaml(OmegaConf.create(plan.recipe.data))
    with timer.step("write_weights", f"Writing the weights to {staged.final}"), \
            byte_progress("Reading and writing weights", plan.write_bytes):
        weight_hashes: dict[Path, str] = {}
        for layout in plan.layouts:
            weight_hashes.update(layout.layout.write(out, tensors[layout.layout.tensors], plan.recipe.output.max_shard_size,
                                                     staged.sync_in_background))
    with timer.step("write", "Writing the config, processor (tokenizer, image processor, chat template) and model card"):
        plan.config.save_pretrained(out)
        plan.generation.save_pretrained(out)
        plan.processor.save_pretrained(out)
        _write_recipe_records(out, recipe_text, hydra_records, staged.final)
    manifest = build_prefix_manifest(plan, sources, report)
    (out / "README.md").write_text(render_prefix_card(manifest=manifest, recipe_yaml=recipe_text))
    manifest["files"] = file_table(
        out, exclude=(MANIFEST,), known={p.relative_to(out).as_posix(): h for p, h in weight_hashes.items()})
    manifest["timings_s"] = {**timer.timings, "total": round(time.perf_counter() - started, 3)}
    write_manifest(out / MANIFEST, manifest)
    return manifest
