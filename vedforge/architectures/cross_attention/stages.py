"""The stages of a cross-attention forge after its plan: read each part, assemble the combined model."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

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
    from vedforge.architectures.cross_attention.plan import report_torch_encoder

    native: dict[str, Any] = {}
    states = dict(states)
    if plan.encoder.built_with_torch:
        native, torch_missing, torch_buffers = states["encoder"]
        states["encoder"] = {}
    assembly = _assemble(plan.target, states, **_assembly_settings(plan))
    if plan.encoder.built_with_torch:
        report_torch_encoder(assembly.reports["encoder"], native, torch_missing, torch_buffers)
    tensors = {}
    for layout in plan.layouts:
        if layout.layout.tensors == "flax":
            tensors[layout.layout.tensors] = assembly.params
        else:
            from vedforge.weights.pytorch_layout import to_pytorch_layout

            tensors[layout.layout.tensors] = to_pytorch_layout(plan.config, assembly.params, native)
    return assembly, tensors


def _assembly_settings(plan: Any) -> dict[str, Any]:
    """Everything besides the target and the states that decides the assembled tensors, as plain data."""
    from vedforge.families.roles import init_std

    family = plan.decoder.family
    growth = (plan.old_vocab, plan.ids.vocab_size) if plan.ids.vocab_size != plan.old_vocab else None
    zero = plan.recipe.cross_attention_init == "zero"
    return {"seed": plan.recipe.seed, "init_std": float(init_std(plan.decoder.config.model, family)),
            "aliases": tuple((tuple(dst), tuple(src)) for dst, src in family.aliases), "growth": growth,
            "zero_output": (family.model_type, *family.cross_attention_output) if zero else None}


def _assemble(target: Mapping[tuple, Any], states: Mapping[str, Any], *, seed: int, init_std: float,
              aliases: tuple, growth: Optional[tuple[int, int]], zero_output: Optional[tuple[str, str, str]]) -> Any:
    from vedforge.architectures.cross_attention.assembly import assemble

    try:
        assembly = assemble(dict(target), dict(states), seed=seed, init_std=init_std, aliases=aliases,
                            decoder_vocab_growth=growth)
    except ValueError as exc:
        raise VedforgeError(f"The checkpoints do not fit the combined model: {exc}.") from None
    if zero_output is not None:
        _zero_cross_attention_output(assembly, *zero_output)
    return assembly


def weights_job(plan: Any) -> Optional[dict[str, Any]]:
    """The Flax weights ``plan`` writes, as plain data that :func:`write_weights_job` follows
    without the plan (and so without transformers); None where writing them needs more: a part
    drawn at random, built or read with PyTorch, fetched from the hub, or with config overrides
    (which may resize tensors with jax), or a PyTorch layout."""
    from vedforge.weights.bfloat16 import dtype_name
    from vedforge.weights.layouts import LAYOUTS

    parts = (plan.encoder, plan.decoder)
    if any(p.built_with_torch or p.torch_view or p.recipe.random_weights or p.recipe.config_overrides
           or p.source.kind == "hub" or not p.files or not all(f.name.endswith(".msgpack") for f in p.files)
           for p in parts):
        return None
    if any(layout.layout.tensors != "flax" for layout in plan.layouts):
        return None
    settings = _assembly_settings(plan)
    return {
        "target": [["/".join(path), list(spec.shape), dtype_name(spec.dtype)]
                   for path, spec in sorted(plan.target.items())],
        "sources": {p.role: str(p.source.path) for p in parts},
        "seed": settings["seed"], "init_std": settings["init_std"],
        "aliases": [["/".join(dst), "/".join(src)] for dst, src in settings["aliases"]],
        "growth": list(settings["growth"]) if settings["growth"] else None,
        "zero_output": list(settings["zero_output"]) if settings["zero_output"] else None,
        "layouts": [[next(key for key, known in LAYOUTS.items() if known is layout.layout), list(layout.files)]
                    for layout in plan.layouts],
        "max_shard_size": int(plan.recipe.output.max_shard_size),
    }


def write_weights_job(job: Mapping[str, Any], directory: Path, cancel: threading.Event) -> dict[Path, str]:
    """Write the weights files of a :func:`weights_job` into ``directory``: the same bytes the
    forge of its plan writes. Returns ``{path: sha256}``.

    Raises:
        WriteCancelled: ``cancel`` was set.
        VedforgeError: a checkpoint holds PyTorch-layout weights after all, or does not fit.
    """
    from vedforge.weights.bfloat16 import dtype_named
    from vedforge.weights.checkpoint import read_state
    from vedforge.weights.layouts import LAYOUTS
    from vedforge.weights.lazy_tensor import TensorSpec

    def pytorch_layout(tensors: dict) -> Any:
        raise VedforgeError("the checkpoint holds PyTorch-layout weights, which need the plan's Flax classes")

    target = {tuple(path.split("/")): TensorSpec(tuple(shape), dtype_named(dtype)) for path, shape, dtype in job["target"]}
    states = {role: read_state(Path(path), pytorch_layout, role) for role, path in job["sources"].items()}
    assembly = _assemble(
        target, states, seed=job["seed"], init_std=job["init_std"],
        aliases=tuple((tuple(dst.split("/")), tuple(src.split("/"))) for dst, src in job["aliases"]),
        growth=tuple(job["growth"]) if job["growth"] else None,
        zero_output=tuple(job["zero_output"]) if job["zero_output"] else None)
    hashes: dict[Path, str] = {}
    for key, _files in job["layouts"]:
        hashes.update(LAYOUTS[key].write(directory, assembly.params, job["max_shard_size"], lambda path: None, cancel))
    return hashes


def _zero_cross_attention_output(assembly: Any, model_type: str, module: str, layer: str) -> None:
    """Zero the new cross-attention output projections (cross_attention.init=zero); the plan
    has already refused families where that is not exact."""
    new = set(assembly.reports["decoder"].new_tensors)
    zeroed = [p for p in assembly.params if "/".join(p) in new and any(
        p[i] == module and p[i + 1] == layer for i in range(len(p) - 1))]
    if not zeroed:
        raise VedforgeError(
            f"cross_attention.init=zero found no new {module}/{layer} tensors in the '{model_type}' decoder.")
    for path in zeroed:
        assembly.params[path].zero = True
