"""The stages of a prefix forge after its plan: load, assemble, and the manifest fields (the
pipeline drives them, and writes the files as for every forge).

The tower's and the LM's tensors are indexed lazily (safetensors headers, or memory-mapped
``.bin`` files) and written one by one by vedforge's streaming writer, so a forge never holds a
whole ``LlavaForConditionalGeneration`` in memory and the checkpoints' dtypes are kept. Random-weight
parts (the embedded tiny models) are drawn tensor by tensor from the recipe's seed, with the
initialisers transformers' PyTorch classes give them (:mod:`vedforge.families.torch_init`), so a
random part is never built either.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Optional

from vedforge.architectures.parts import roles_by_weights


def load_message(plan: Any) -> str:
    reading, drawing = roles_by_weights(plan)
    if not drawing:
        return f"Reading the {' and '.join(reading)} weights"
    return "; ".join(([f"Indexing the {' and '.join(reading)} weights"] if reading else [])
                     + [f"Drawing the random {' and '.join(drawing)} weights (the initialisers of transformers' "
                        "PyTorch classes, seeded per tensor from the recipe)"])


def _class_choice(role: str) -> str:
    return "AutoModel" if role == "encoder" else "AutoModelForCausalLM"


def _random_state(part: Any, seed: int) -> dict[str, Any]:
    """A random-weight part's tensors by saved name, each drawn only when the writer asks for it,
    from the initialisers transformers' PyTorch class gives it (no torch model is materialised)."""
    from vedforge.families.torch_init import random_torch_state

    return random_torch_state(part.config.model, seed=seed, role=part.role, choice=_class_choice(part.role))


def part_reader(plan: Any, role: str, source: Any) -> tuple[str, Any]:
    """The form of a part's state (its tensors by PyTorch name) and the function that reads or draws them."""
    part = plan.part(role)
    return "prefix", lambda: read_prefix_part(part, source, plan.recipe.seed)


def read_prefix_part(part: Any, source: Any, seed: int) -> dict[str, Any]:
    """A part's tensors by PyTorch name: drawn for random weights, else indexed lazily."""
    from vedforge.architectures.prefix.weights import read_part_tensors

    return _random_state(part, seed) if part.recipe.random_weights else read_part_tensors(source.path, role=source.role)


def assemble_prefix_weights(plan: Any, states: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The tensors to write (lazy), and the report of where each came from."""
    tensors, report = plan.assemble(states["encoder"], states["decoder"])
    return report, {"pytorch": tensors}


def weights_job(plan: Any) -> Optional[dict[str, Any]]:
    """The weights ``plan`` writes, as plain data :func:`write_weights_job` follows without the
    plan; None unless both parts are pretrained local safetensors checkpoints without config overrides."""
    from vedforge.weights.bfloat16 import dtype_name

    parts = (plan.encoder, plan.decoder)
    if any(p.recipe.random_weights or p.recipe.config_overrides or p.source.kind == "hub" or not p.files
           or not all(f.on_disk and f.name.endswith(".safetensors") for f in p.files) for p in parts):
        return None
    settings = assembly_settings(plan)
    return {
        "specs": [[name, list(shape)] for name, shape in sorted(plan.specs.items())],
        "sources": {p.role: str(p.source.path) for p in parts},
        **settings, "dtype": dtype_name(settings["dtype"]), "vocab": list(settings["vocab"]),
        "layouts": [list(layout.files) for layout in plan.layouts],
        "max_shard_size": int(plan.recipe.output.max_shard_size),
    }


def write_weights_job(job: dict[str, Any], directory: Path, cancel: threading.Event) -> dict[Path, str]:
    """Write the weights files of a :func:`weights_job` into ``directory``; ``{path: sha256}``."""
    from vedforge.architectures.prefix.tensors import assemble_prefix
    from vedforge.architectures.prefix.weights import read_part_tensors
    from vedforge.weights.bfloat16 import dtype_named
    from vedforge.weights.layouts import LAYOUTS

    states = {role: read_part_tensors(Path(path), role=role) for role, path in job["sources"].items()}
    tensors, _ = assemble_prefix(
        {name: tuple(shape) for name, shape in job["specs"]}, states["encoder"], states["decoder"],
        lm_prefix=job["lm_prefix"], lm_head=job["lm_head"], vocab=tuple(job["vocab"]), projector=job["projector"],
        dtype=dtype_named(job["dtype"]), seed=job["seed"], tower_std=job["tower_std"], lm_std=job["lm_std"],
        head_from=job["head_from"])
    return LAYOUTS["pytorch"].write(directory, tensors, job["max_shard_size"], lambda path: None, cancel)


def assembly_settings(plan: Any) -> dict[str, Any]:
    """The arguments of :func:`vedforge.architectures.prefix.tensors.assemble_prefix` besides the specs and states."""
    return {"lm_prefix": plan.lm.base_prefix + ".", "lm_head": plan.lm.output_head,
            "vocab": (plan.tokens.old_vocab, plan.tokens.vocab_size), "projector": plan.recipe.prefix.projector,
            "dtype": plan.dtype, "seed": plan.recipe.seed,
            "tower_std": float(getattr(plan.config.vision_config, "initializer_range", 0.02)),
            "lm_std": float(getattr(plan.config.text_config, "initializer_range", 0.02)), "head_from": plan.head_from}


def initialisation(plan: Any, role: str) -> Optional[dict[str, Any]]:
    part = plan.part(role)
    if not part.recipe.random_weights:
        return None
    from vedforge.families.torch_init import describe_torch_generation

    return describe_torch_generation(part.config.model.model_type, _class_choice(role), plan.recipe.seed)


def extra_versions(plan: Any) -> dict[str, str]:
    """torch builds the plan's meta-device model, and its classes give random parts their initialisers:
    its version decides the output too."""
    return {"torch": _torch_version()}


def manifest_fields(plan: Any, sources: dict[str, Any], report: Any) -> dict[str, Any]:
    """The fields after the common head (see :func:`vedforge.pipeline.manifest.manifest_head`)."""
    from vedforge.architectures.prefix.tensors import GENERATION
    from vedforge.weights.bfloat16 import dtype_name

    recipe, tokens, config = plan.recipe, plan.tokens, plan.config
    fields = {
        "architecture": "prefix",
        "model_class": "LlavaForConditionalGeneration",
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
            "dtype": dtype_name(plan.dtype),
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
    # What LLaVA's plain head cannot keep of the LM's own (read off its classes at plan time).
    if plan.lm.logits_differ:
        fields["prefix"]["lm_logits_differ"] = plan.lm.logits_differ
    if plan.lm.head_bias:
        fields["prefix"]["lm_head_bias_left_out"] = True
    return fields


def _torch_version() -> str:
    from importlib.metadata import version

    return version("torch")  # read, not imported: a prefix forge of pretrained parts runs without torch
