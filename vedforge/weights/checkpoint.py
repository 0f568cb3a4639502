"""Index the tensors of a checkpoint directory as a flat ``{path tuple: tensor}`` state.

Tensors are :class:`~vedforge.weights.lazy_tensor.LazyTensor` s (read when converted to an array),
except those of PyTorch-layout files, which are converted by name as they are read.

Reads every weight layout transformers' Flax classes write or accept: ``flax_model.msgpack``,
its sharded form with ``flax_model.msgpack.index.json``, and ``model.safetensors`` (single or
sharded) in Flax layout or in PyTorch layout (converted by name, without torch).

Unlike ``FlaxPreTrainedModel.from_pretrained`` the reader keeps every tensor of the file,
so the assembly can take a tensor the stock loader would discard as "unexpected" (BART's
shared token embeddings), and it never runs a random initialisation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np

from vedforge.core.errors import CorruptCheckpointError, NotACheckpointError
from vedforge.weights.formats import FLAX_INDEX, FLAX_WEIGHTS, SAFE_INDEX, SAFE_WEIGHTS
from vedforge.weights.lazy_tensor import LazyTensor, index_msgpack, index_safetensors

FlatState = dict[tuple[str, ...], "np.ndarray | LazyTensor"]



def random_weights_hint(role: Optional[str]) -> str:
    """The sentence that tells a recipe to build a part without its weights: the key to set."""
    key = f"{role}.weights=random" if role else "encoder.weights=random or decoder.weights=random (for this part)"
    return f"Set {key} to use only its config."


def find_weight_files(path: Path, role: Optional[str] = None) -> tuple[str, list[Path]]:
    """Return ``(layout, files)`` for the weights in ``path``: layout is ``msgpack`` or ``safetensors``.
    ``role`` (encoder or decoder) names the part in the error when there are none."""
    if (path / FLAX_WEIGHTS).is_file():
        return "msgpack", [path / FLAX_WEIGHTS]
    if (path / FLAX_INDEX).is_file():
        return "msgpack", _shards_from_index(path / FLAX_INDEX)
    if (path / SAFE_WEIGHTS).is_file():
        return "safetensors", [path / SAFE_WEIGHTS]
    if (path / SAFE_INDEX).is_file():
        return "safetensors", _shards_from_index(path / SAFE_INDEX)
    present = sorted(p.name for p in path.iterdir())
    hint = (
        " It holds PyTorch .bin weights only: convert them to safetensors (transformers' save_pretrained "
        "with safe_serialization=True) so they can be read without torch."
        if any(n.startswith("pytorch_model") for n in present)
        else ""
    )
    raise NotACheckpointError(
        f"No weights found in '{path}': expected {FLAX_WEIGHTS}, {FLAX_INDEX}, {SAFE_WEIGHTS} or {SAFE_INDEX} "
        f"(found: {', '.join(present[:10]) or 'nothing'}).{hint} {random_weights_hint(role)}"
    )


def _shards_from_index(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptCheckpointError(f"The shard index '{index}' cannot be read: {exc}.") from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CorruptCheckpointError(
            f"The shard index '{index}' is malformed: its weight_map must map tensor names to shard file names."
        )
    files = [index.parent / name for name in sorted(set(weight_map.values()))]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise CorruptCheckpointError(f"The shard index '{index}' names shard files that are missing: {', '.join(missing)}.")
    return files


def read_msgpack(files: Iterable[Path]) -> FlatState:
    """Index Flax msgpack weights (one file or all shards) as a flat state of lazy tensors."""
    state: FlatState = {}
    for file in files:
        tree = index_msgpack(file)
        if not isinstance(tree, dict):
            raise CorruptCheckpointError(f"The weights file '{file}' does not hold a parameter tree.")
        state.update(_flatten(tree))
    return state


def _flatten(tree: dict, prefix: tuple[str, ...] = ()) -> FlatState:
    """``flax.traverse_util.flatten_dict`` (empty nodes dropped), without importing flax and jax,
    which a conversion to PyTorch never needs."""
    flat: FlatState = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, prefix + (key,)))
        else:
            flat[prefix + (key,)] = value
    return flat


def safetensors_format(file: Path) -> str:
    """The layout recorded in a safetensors file's metadata: ``flax``, ``pt`` or ``tf``."""
    return index_safetensors(file)[1].get("format", "pt")


def read_safetensors(files: Iterable[Path]) -> dict[str, LazyTensor]:
    """Index safetensors files as a ``{name: lazy tensor}`` dict."""
    tensors: dict[str, LazyTensor] = {}
    for file in files:
        tensors.update(index_safetensors(file)[0])
    return tensors


def read_state(path: Path, pt_converter: Callable[[dict[str, np.ndarray]], FlatState], role: Optional[str] = None) -> FlatState:
    """Read every tensor of the checkpoint in ``path`` as a flat Flax-layout state.

    ``pt_converter`` maps a PyTorch-named tensor dict to Flax layout; it is only called for
    PyTorch-layout safetensors, and is given by the caller because the mapping depends on
    the Flax model class the tensors are meant for.
    """
    layout, files = find_weight_files(path, role)
    if layout == "msgpack":
        return read_msgpack(files)
    fmt = safetensors_format(files[0])
    tensors = read_safetensors(files)
    if fmt == "flax":
        return {tuple(k.split(".")): v for k, v in tensors.items()}
    if fmt == "pt":
        from vedforge.weights.bfloat16 import ml_dtypes_array

        # The name conversion transposes and reshapes, so these tensors are read now.
        return pt_converter({name: ml_dtypes_array(t) for name, t in tensors.items()})
    raise CorruptCheckpointError(
        f"The weights in '{files[0]}' are in '{fmt}' layout; vedforge reads Flax and PyTorch layouts only."
    )
