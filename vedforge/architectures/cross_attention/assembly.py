"""Assemble the combined model's parameters from the two checkpoints.

The combined model's parameter tree is computed with ``jax.eval_shape``: shapes only, no
random values. Each target tensor then comes, by reference and bit for bit, from the
encoder or decoder checkpoint; only tensors no checkpoint has (the decoder's new
cross-attention, the encoder-to-decoder projection, rows added to a resized vocabulary)
are initialised. Each new tensor has its own random stream, seeded by the recipe seed and its
path, so values do not depend on the order tensors are visited in.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import numpy as np

from vedforge.weights.bfloat16 import cast, dtype_name, dtype_named, full, to_float
from vedforge.weights.checkpoint import FlatState

Path_ = tuple[str, ...]
PARTS = ("encoder", "decoder")


@dataclass
class PartReport:
    """How one part of the target tree was filled."""

    from_checkpoint: int = 0  # parameters copied unchanged
    new: int = 0  # parameters initialised by the forge
    grown: int = 0  # parameters added to checkpoint tensors by vocabulary growth
    new_tensors: list[str] = field(default_factory=list)
    unused_tensors: list[str] = field(default_factory=list)
    resized_tensors: list[str] = field(default_factory=list)  # interpolated to a new image size


@dataclass
class Assembly:
    """The combined parameters and where each came from."""

    params: FlatState
    reports: dict[str, PartReport]

    def parameter_counts(self) -> dict[str, int]:
        """Parameter counts per part, and the total and newly initialised totals."""
        counts = {part: r.from_checkpoint + r.new + r.grown for part, r in self.reports.items()}
        counts["new"] = sum(r.new + r.grown for r in self.reports.values())
        counts["total"] = sum(int(np.prod(a.shape, dtype=np.int64)) for a in self.params.values())
        # A part built outside this tree (a PyTorch-only encoder) is counted from its report.
        present = {path[0] for path in self.params}
        counts["total"] += sum(counts[part] for part in PARTS if part not in present)
        return counts


def _layers_attr(part_config: Any) -> str:
    """The config attribute holding a part's layer count (BART's num_hidden_layers means its encoder)."""
    from vedforge.families.roles import known_family

    family = known_family(part_config.model_type)
    return family.decoder_layer_attribute if family is not None and family.role == "decoder" else "num_hidden_layers"


def target_shapes(config: Any) -> dict[Path_, Any]:
    """Every parameter of the combined model with its shape and dtype, without initialising.

    Traced from transformers' Flax classes (:func:`layered_target_shapes`) the first time a
    configuration is forged, and read from vedforge's cache of derivations after that
    (:mod:`vedforge.core.derived_cache`), so a forge of pretrained parts imports neither jax nor flax.
    """
    from vedforge.core.derived_cache import derived
    from vedforge.weights.lazy_tensor import TensorSpec

    def encode(shapes: dict[Path_, Any]) -> list:
        return [[list(path), list(spec.shape), dtype_name(spec.dtype)] for path, spec in shapes.items()]

    def decode(rows: list) -> dict[Path_, Any]:
        return {tuple(path): TensorSpec(tuple(shape), dtype_named(dtype)) for path, shape, dtype in rows}

    return derived("flax-tree", 1, {"config": config.to_dict()}, lambda: layered_target_shapes(config),
                   encode=encode, decode=decode)


def layered_target_shapes(config: Any) -> dict[Path_, Any]:
    """Every parameter of the combined model with its shape and dtype, traced.

    Tracing the whole model costs time in proportion to its depth, and every layer of a part
    has the same parameters. So the model is traced with one and with two layers per part;
    the paths the second layer adds show where each part keeps its layers (``.../h/1/...``),
    and layer 0's parameters are repeated for the real depth.
    """
    import copy

    one, two = copy.deepcopy(config), copy.deepcopy(config)
    depth = {}
    for part in ("encoder", "decoder"):
        attr = _layers_attr(getattr(config, part))
        depth[part] = int(getattr(getattr(config, part), attr))
        setattr(getattr(one, part), attr, 1)
        setattr(getattr(two, part), attr, 2)
    if min(depth.values()) <= 2:
        return traced_shapes(config)  # two traces would cost more than tracing this depth
    shallow, deeper = traced_shapes(one), traced_shapes(two)
    layer_paths: dict[Path_, int] = {}  # path of a layer-0 parameter -> index of its layer number
    for path in deeper.keys() - shallow.keys():
        at = [i for i, key in enumerate(path) if key == "1" and path[:i] + ("0",) + path[i + 1:] in shallow]
        if len(at) != 1:
            raise RuntimeError(f"cannot tell the layer index in parameter {'/'.join(path)}")
        layer_paths[path[: at[0]] + ("0",) + path[at[0] + 1:]] = at[0]
    if len(layer_paths) != len(deeper) - len(shallow):
        raise RuntimeError("the one- and two-layer parameter trees do not differ by one layer per part")
    full: dict[Path_, Any] = {}
    for path, spec in shallow.items():
        if path not in layer_paths:
            full[path] = spec
            continue
        at = layer_paths[path]
        for layer in range(depth[path[0]] if path[0] in depth else 1):
            full[path[:at] + (str(layer),) + path[at + 1:]] = spec
    return full


def traced_shapes(config: Any) -> dict[Path_, Any]:
    """Every parameter of the combined model, by tracing its initialisation with ``jax.eval_shape``.

    The key and inputs are abstract too, so JAX never creates an array: no device backend is
    started and nothing is computed.
    """
    import jax
    import jax.numpy as jnp
    from flax.traverse_util import flatten_dict

    from vedforge.compat import FlaxVisionEncoderDecoderModule, register_clip_vision

    register_clip_vision()
    module = FlaxVisionEncoderDecoderModule(config=config)
    channels = getattr(config.encoder, "num_channels", 3)
    size = config.encoder.image_size
    pixel_values = jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)
    ids = jax.ShapeDtypeStruct((1, 1), jnp.int32)
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)  # a raw PRNG key, as jax.random.PRNGKey makes

    def init(rng, pixel_values, ids):
        return module.init({"params": rng, "dropout": rng}, pixel_values, ids, jnp.ones_like(ids), ids)["params"]

    return flatten_dict(jax.eval_shape(init, key, pixel_values, ids))


def _align(state: FlatState, target_keys: set[Path_]) -> FlatState:
    """Re-root ``state`` so its paths line up with ``target_keys``.

    A checkpoint may be saved with or without its class's head wrapper (``transformer/``,
    ``bert/``, ``vit/``...). Try the state as is, with one leading level stripped, and with
    one target root level added; keep the view that matches the most target paths.
    """
    views: list[FlatState] = [state]
    for root in sorted({k[0] for k in state}):
        views.append({k[1:]: v for k, v in state.items() if k[0] == root and len(k) > 1})
    for root in sorted({k[0] for k in target_keys}):
        views.append({(root,) + k: v for k, v in state.items()})
    return max(views, key=lambda view: len(target_keys.intersection(view)))


def _new_tensor(path: Path_, shape: tuple[int, ...], dtype: Any, seed: int, std: float) -> np.ndarray:
    leaf = path[-1]
    if leaf in ("bias",):
        return np.zeros(shape, dtype)
    if leaf == "scale":
        return full(shape, 1.0, dtype)
    if leaf in ("kernel", "embedding"):
        # numpy's PCG64, not jax.random: same distribution as transformers' normal(std)
        # initialisers, stable across platforms, and no per-shape compilation.
        rng = np.random.Generator(np.random.PCG64([seed, zlib.crc32("/".join(path).encode())]))
        values = rng.standard_normal(shape, dtype=np.float32)
        values *= np.float32(std)  # in place: a large decoder's new tensors reach a GB
        return cast(values, dtype)
    raise RuntimeError(f"no initialiser known for new parameter {'/'.join(path)}")


class FreshTensor:
    """A new tensor, generated when the writer asks for it: its values depend only on the recipe
    seed and its path, so holding it in memory until then (up to a GB of cross-attention for a
    large decoder) buys nothing."""

    __slots__ = ("path", "shape", "dtype", "seed", "std", "zero")

    def __init__(self, path: Path_, shape: tuple[int, ...], dtype: Any, seed: int, std: float):
        self.path, self.shape, self.dtype, self.seed, self.std = path, tuple(shape), np.dtype(dtype), seed, std
        self.zero = False

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        data = np.zeros(self.shape, self.dtype) if self.zero else _new_tensor(self.path, self.shape, self.dtype, self.seed, self.std)
        return data if dtype is None else cast(data, dtype)


class _ShapeOnly:
    """A checkpoint tensor's shape, standing in for its values in a dry run; ``target`` is what
    growing or resizing it would give."""

    def __init__(self, source: Any, shape: tuple[int, ...]):
        from vedforge.weights.lazy_tensor import TensorSpec

        self.shape, self.dtype, self.ndim = tuple(source.shape), np.dtype(source.dtype), len(source.shape)
        self.target = TensorSpec(tuple(shape), np.dtype(source.dtype))


def _grow(path: Path_, source: np.ndarray, shape: tuple[int, ...], dtype: Any, seed: int, std: float,
          growth: Optional[tuple[int, int]]) -> Optional[np.ndarray]:
    """``source`` extended along its vocabulary axis to ``shape``, or None if that is not what differs."""
    if growth is None or source.ndim != len(shape):
        return None
    old, new = growth
    axes = [i for i, (s, t) in enumerate(zip(source.shape, shape)) if s != t]
    if len(axes) != 1 or source.shape[axes[0]] != old or shape[axes[0]] != new:
        return None
    axis = axes[0]
    if isinstance(source, _ShapeOnly):
        return source.target
    extra_shape = list(shape)
    extra_shape[axis] = new - old
    # New vocabulary rows start like any new tensor of their kind (normal rows, zero bias).
    extra = _new_tensor(path, tuple(extra_shape), source.dtype, seed, std)
    return np.concatenate([source, extra], axis=axis)


def _resize_position_grid(path: Path_, source: np.ndarray, shape: tuple[int, ...]) -> Optional[np.ndarray]:
    """Patch position embeddings resized (bicubic) to a new square patch grid, the class token kept.

    A ViT-style encoder given a new ``image_size`` keeps its pretrained positions this way,
    as ViT fine-tuning at a higher resolution does. Handles ``(1, 1+n, d)`` and ``(1+n, d)``.
    The resize is jax's (``jax.image.resize``), so it needs the Flax profile.
    """
    if "position" not in "/".join(path) or source.ndim != len(shape) or source.ndim not in (2, 3):
        return None
    lead = source.ndim - 2
    old_n, new_n = source.shape[lead] - 1, shape[lead] - 1
    old_side, new_side = int(round(old_n**0.5)), int(round(new_n**0.5))
    if old_side**2 != old_n or new_side**2 != new_n or source.shape[-1] != shape[-1] or source.shape[:lead] != shape[:lead]:
        return None
    if isinstance(source, _ShapeOnly):
        return source.target
    try:
        import jax
    except ImportError:
        from vedforge.core.errors import BackendError
        from vedforge.core.frameworks import flax_missing_reason

        raise BackendError(flax_missing_reason(
            "Resizing pretrained position embeddings to an encoder image_size override (jax.image.resize)")) from None
    flat = source.reshape(-1, source.shape[-1])
    grid = to_float(flat[1:].reshape(old_side, old_side, -1))
    resized = np.asarray(jax.image.resize(grid, (new_side, new_side, grid.shape[-1]), "bicubic"))
    out = np.concatenate([flat[:1], cast(resized.reshape(new_n, -1), source.dtype)], axis=0)
    return out.reshape(shape)


def assemble(
    target: dict[Path_, Any],
    states: dict[str, FlatState],
    *,
    seed: int,
    init_std: float,
    aliases: Iterable[tuple[Path_, Path_]] = (),
    decoder_vocab_growth: Optional[tuple[int, int]] = None,
    dry_run: bool = False,
) -> Assembly:
    """Fill every target parameter from the part states, initialising only what they lack.

    With ``dry_run`` the states hold shapes only (``jax.ShapeDtypeStruct``, as a plan has them):
    every decision and count is made as for real tensors, but no tensor is read or computed,
    and the returned parameters are the target's shapes.

    Raises:
        ValueError: a checkpoint tensor has a shape the target cannot take (a config
            override that changes a pretrained tensor's shape, for instance).
    """
    params: FlatState = {}
    reports = {part: PartReport() for part in PARTS}
    reports["projection"] = PartReport()
    aliases = tuple(aliases)
    for part in PARTS:
        sub_target = {k[1:]: v for k, v in target.items() if k[0] == part}
        state = _align(states[part], set(sub_target))
        report = reports[part]
        used: set[Path_] = set()
        for path, spec in sorted(sub_target.items()):
            shape, dtype = tuple(spec.shape), spec.dtype
            source_path = path if path in state else None
            if source_path is None and part == "decoder":
                source_path = next((src for dst, src in aliases if dst == path and src in state), None)
            if source_path is None:
                params[(part,) + path] = FreshTensor((part,) + path, shape, dtype, seed, init_std)
                report.new += int(np.prod(shape, dtype=np.int64))
                report.new_tensors.append("/".join((part,) + path))
                continue
            used.add(source_path)
            source = state[source_path]
            if tuple(source.shape) == shape:
                params[(part,) + path] = source
                report.from_checkpoint += int(np.prod(source.shape, dtype=np.int64))
                continue
            # Shapes decide whether a tensor grows or is resized; a dry run stops at the decision.
            data = _ShapeOnly(source, shape) if dry_run else np.asarray(source)
            grown = _grow((part,) + path, data, shape, dtype, seed, init_std,
                          decoder_vocab_growth if part == "decoder" else None)
            if grown is None and part == "encoder":
                grown = _resize_position_grid(path, data, shape)
                if grown is not None:
                    params[(part,) + path] = grown
                    report.from_checkpoint += int(np.prod(source.shape, dtype=np.int64))
                    report.resized_tensors.append("/".join((part,) + path))
                    continue
            if grown is None:
                raise ValueError(
                    f"the {part} checkpoint tensor {'/'.join(source_path)} has shape {tuple(source.shape)} but the "
                    f"combined model needs {shape}; a config override probably changed a pretrained dimension"
                )
            params[(part,) + path] = grown
            report.from_checkpoint += int(np.prod(source.shape, dtype=np.int64))
            report.grown += int(np.prod(shape, dtype=np.int64) - np.prod(source.shape, dtype=np.int64))
        report.unused_tensors = sorted("/".join(k) for k in set(state) - used)
    for path, spec in sorted(target.items()):
        if path[0] not in PARTS:
            params[path] = FreshTensor(path, tuple(spec.shape), spec.dtype, seed, init_std)
            reports["projection"].new += int(np.prod(spec.shape, dtype=np.int64))
            reports["projection"].new_tensors.append("/".join(path))
    return Assembly(params, reports)
