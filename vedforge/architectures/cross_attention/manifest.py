"""A cross-attention forge's manifest fields: token ids, parameters by part, and the fixes it needs."""

from __future__ import annotations

from typing import Any, Mapping, Optional


def manifest_fields(plan: Any, sources: Mapping[str, Any], assembly: Any) -> dict[str, Any]:
    """The fields after the common head (see :func:`vedforge.pipeline.manifest.manifest_head`)."""
    recipe = plan.recipe
    ids = plan.ids
    return {
        "token_ids": {
            "policy": recipe.token_policy.kind,
            "decoder_start": ids.decoder_start, "pad": ids.pad, "eos": ids.eos, "bos": ids.bos,
            "added_pad_token": ids.added_pad, "vocab_size": ids.vocab_size,
        },
        "parameters": assembly.parameter_counts(),
        "new_tensors": {part: r.new_tensors for part, r in assembly.reports.items() if r.new_tensors},
        "resized_tensors": {part: r.resized_tensors for part, r in assembly.reports.items() if r.resized_tensors},
        "unused_checkpoint_tensors": {part: r.unused_tensors for part, r in assembly.reports.items() if r.unused_tensors},
        "needs_compat": plan.needs_compat,
        "needs_drop_path_rng": plan.drop_path_rate if recipe.backend == "flax" and plan.drop_path_rate > 0 else None,
        "needs_keyword_decode": plan.needs_keyword_decode,
        "needs_torch_compat": plan.needs_torch_compat,
    }


def initialisation(plan: Any, role: str) -> Optional[dict[str, Any]]:
    """How a random part's weights were made, for the manifest; None for pretrained weights."""
    part = plan.part(role)
    if not part.recipe.random_weights:
        return None
    if part.built_with_torch:
        from vedforge.architectures.cross_attention.torch_encoder import describe_torch_generation

        return describe_torch_generation(part.config.model, plan.recipe.seed)
    from vedforge.families.random_init import describe_generation

    if part.torch_view:
        from vedforge.architectures.cross_attention.torch_view import flax_class_name

        # Named, not imported: transformers 5 has no Flax classes; their initialisers are drawn.
        return describe_generation(flax_class_name(part.config.checkpoint), plan.recipe.seed)
    from vedforge.sources.loading import random_part_class_name

    return describe_generation(random_part_class_name(part.config.checkpoint, role), plan.recipe.seed)
