"""Read the tensors of a checkpoint directory into a flat ``{path tuple: array}`` state.

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
from typing import Callable, Iterable

import numpy as np

from vedforge.errors import CorruptCheckpointError, NotACheckpointError

FlatState = dict[tuple[str, ...], np.ndarray]

FLAX_WEIGHTS = "flax_model.msgpack"
FLAX_INDEX = "flax_model.msgpack.index.json"
SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"


def find_weight_files(path: Path) -> tuple[str, list[Path]]:
    """Return ``(layout, files)`` for the weights in ``path``: layout is ``msgpack`` or ``safetensors``."""
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
        f"(found: {', '.join(present[:10]) or 'nothing'}).{hint} Set weights=random to use only its config."
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
    """Read Flax msgpack weights (one file or all shards) into a flat state."""
    from flax.serialization import msgpack_restore
    from flax.traverse_util import flatten_dict

    state: FlatState = {}
    for file in files:
        try:
            tree = msgpack_restore(file.read_bytes())
        except Exception as exc:  # msgpack raises a zoo of types for a damaged file
            raise CorruptCheckpointError(
                f"The weights file '{file}' cannot be parsed as Flax msgpack ({type(exc).__name__}: {exc}). "
                "It is truncated or not a Flax checkpoint; download or save it again."
            ) from None
        if not isinstance(tree, dict):
            raise CorruptCheckpointError(f"The weights file '{file}' does not hold a parameter tree.")
        state.update(flatten_dict(tree))
    return state


def safetensors_format(file: Path) -> str:
    """The layout recorded in a safetensors file's metadata: ``flax``, ``pt`` or ``tf``."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="numpy") as f:
            metadata = f.metadata() or {}
    except Exception as exc:
        raise CorruptCheckpointError(
            f"The weights file '{file}' cannot be parsed as safetensors ({exc}). Download or save it again."
        ) from None
    return metadata.get("format", "pt")


def read_safetensors(files: Iterable[Path]) -> dict[str, np.ndarray]:
    """Read safetensors files into a ``{name: array}`` dict, one tensor at a time."""
    from safetensors import safe_open

    tensors: dict[str, np.ndarray] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="numpy") as f:
                for key in f.keys():
                    tensors[key] = f.get_tensor(key)
        except Exception as exc:
            raise CorruptCheckpointError(
                f"The weights file '{file}' cannot be read as safetensors ({exc}). Download or save it again."
            ) from None
    return tensors


def read_state(path: Path, pt_converter: Callable[[dict[str, np.ndarray]], FlatState]) -> FlatState:
    """Read every tensor of the checkpoint in ``path`` as a flat Flax-layout state.

    ``pt_converter`` maps a PyTorch-named tensor dict to Flax layout; it is only called for
    PyTorch-layout safetensors, and is given by the caller because the mapping depends on
    the Flax model class the tensors are meant for.
    """
    layout, files = find_weight_files(path)
    if layout == "msgpack":
        return read_msgpack(files)
    fmt = safetensors_format(files[0])
    tensors = read_safetensors(files)
    if fmt == "flax":
        return {tuple(k.split(".")): v for k, v in tensors.items()}
    if fmt == "pt":
        return pt_converter(tensors)
    raise CorruptCheckpointError(
        f"The weights in '{files[0]}' are in '{fmt}' layout; vedforge reads Flax and PyTorch layouts only."
    )
