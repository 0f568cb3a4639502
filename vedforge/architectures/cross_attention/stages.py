"""The stages of a cross-attention forge after its plan: read each part, assemble the combined model."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from vedforge.architectures.parts import roles_by_weights
from vedforge.core.errors import VedforgeError


def load_message(plan: Any) -> str:
    reading, drawing = roles_by_weights(plan)
    return "; ".join(
        ([f"Reading the {' and '.join(reading)} weights"] if reading else [])
        + ([f"Laying out the random {' and '.join(drawing)} weights (drawn from the seed as they are written)"]
           if drawing else []))


def part_reader(plan: Any, role: str, source: Any) -> tuple[str, Callable[[], Any]]:
    """The form of a part's state and the function that reads it: the Flax state, or for an
    encoder built with PyTorch, its PyTorch state."""
    part = plan.part(role)
    seed, random_weights = plan.recipe.seed, part.recipe.random_weights
    if part.built_with_torch:
        from vedforge.architectures.cross_attention.torch_encoder import load_torch_encoder_state

        return "pytorch", lambda: load_torch_encoder_state(source, part.config.model,
                                                        random_weights=random_weights, seed=seed)
    if part.torch_view:
        # transformers 5, or a decoder without a working Flax port: the Flax layout read off
        # the PyTorch class (see torch_view).
        import vedforge.architectures.cross_attention.torch_view as torch_view

        if random_weights:
            return "flax", lambda: torch_view.random_part_state(part.config.checkpoint, seed=seed, role=part.role)
        return "flax", lambda: torch_view.part_state(source.path, part.config.checkpoint, part.role)
    from vedforge.sources.loading import load_part_state

    return "flax", lambda: load_part_state(source, part.config, random_weights=random_weights, seed=seed)


def assemble_weights(plan: Any, states: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The combined model's tensors, and per weight layout the tensors it writes."""
    from vedforge.architectures.cross_attention.assembly import assemble
    from vedforge.architectures.cross_attention.plan import report_torch_encoder
    from vedforge.families.roles import init_std

    family = plan.decoder.family
    dec_config = plan.decoder.config.model
    native: dict[str, Any] = {}
    states = dict(states)
    if plan.encoder.built_with_torch:
        native, torch_missing, torch_buffers = states["encoder"]
        states["encoder"] = {}
    growth = (plan.old_vocab, plan.ids.vocab_size) if plan.ids.vocab_size != plan.old_vocab else None
    try:
        assembly = assemble(plan.target, states, seed=plan.recipe.seed,
                            init_std=init_std(dec_config, family), aliases=family.aliases,
                            decoder_vocab_growth=growth)
    except ValueError as exc:
        raise VedforgeError(f"The checkpoints do not fit the combined model: {exc}.") from None
    if plan.encoder.built_with_torch:
        report_torch_encoder(assembly.reports["encoder"], native, torch_missing, torch_buffers)
    if plan.recipe.cross_attention_init == "zero":
        _zero_cross_attention_output(assembly, family)
    tensors = {}
    for layout in plan.layouts:
        if layout.layout.tensors == "flax":
            tensors[layout.layout.tensors] = assembly.params
        else:
            from vedforge.weights.pytorch_layout import to_pytorch_layout

            tensors[layout.layout.tensors] = to_pytorch_layout(plan.config, assembly.params, native)
    return assembly, tensors


def _zero_cross_attention_output(assembly: Any, family: Any) -> None:
    """Zero the new cross-attention output projections (cross_attention.init=zero); the plan
    has already refused families where that is not exact."""
    module, layer = family.cross_attention_output
    new = set(assembly.reports["decoder"].new_tensors)
    zeroed = [p for p in assembly.params if "/".join(p) in new and any(
        p[i] == module and p[i + 1] == layer for i in range(len(p) - 1))]
    if not zeroed:
        raise VedforgeError(
            f"cross_attention.init=zero found no new {module}/{layer} tensors in the '{family.model_type}' decoder.")
    for path in zeroed:
        assembly.params[path].zero = True
