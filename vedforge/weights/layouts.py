"""The weight layouts a forge can write: one table row per layout, chosen from the recipe.

A row names the layout as the manifest records it, whether it needs torch, the files it
writes, which tensors it takes (the Flax-layout tree or its PyTorch-named conversion) and its
writer. :func:`planned_files` tells, from shapes alone, which files a layout will write.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import threading
from typing import Any, Callable, Iterable, Optional

from vedforge.weights.formats import FLAX_INDEX, FLAX_WEIGHTS, SAFE_INDEX, SAFE_WEIGHTS
from vedforge.weights.sharding import shard_groups, shard_names

# writer(directory, tensors, max_shard_size, on_file, cancel=None) -> {path: sha256}; setting the
# threading.Event ``cancel`` stops it with WriteCancelled.
Writer = Callable[..., dict[Path, str]]


def _flax_msgpack(directory: Path, tensors: dict, max_shard_size: int, on_file,
                  cancel: Optional[threading.Event] = None) -> dict[Path, str]:
    from vedforge.weights.writer import write_flax_checkpoint

    return write_flax_checkpoint(directory, tensors, max_shard_size, on_file=on_file, cancel=cancel)


def _flax_safetensors(directory: Path, tensors: dict, max_shard_size: int, on_file,
                      cancel: Optional[threading.Event] = None) -> dict[Path, str]:
    from vedforge.weights.writer import write_safetensors_checkpoint

    return write_safetensors_checkpoint(directory, tensors, on_file=on_file, cancel=cancel)


def _pytorch_safetensors(directory: Path, tensors: dict, max_shard_size: int, on_file,
                         cancel: Optional[threading.Event] = None) -> dict[Path, str]:
    from vedforge.weights.writer import write_pytorch_checkpoint

    return write_pytorch_checkpoint(directory, tensors, max_shard_size, on_file=on_file, cancel=cancel)


@dataclass(frozen=True)
class WeightLayout:
    """One way of writing the forged weights."""

    name: str  # as the manifest's weight_layouts records it
    needs_torch: bool  # the tensors' PyTorch names come from transformers' PyTorch model
    tensors: str  # "flax": the Flax-layout tree; "pytorch": its PyTorch-named conversion
    single_file: str
    index_file: str | None  # None: never sharded (stock Flax cannot load sharded safetensors)
    write: Writer

    def key_name(self, key: Any) -> str:
        """A tensor's name in this layout's index (Flax paths joined by "/")."""
        return "/".join(key) if isinstance(key, tuple) else str(key)


LAYOUTS: dict[str, WeightLayout] = {
    "flax_msgpack": WeightLayout("flax", False, "flax", FLAX_WEIGHTS, FLAX_INDEX, _flax_msgpack),
    "flax_safetensors": WeightLayout("flax", False, "flax", SAFE_WEIGHTS, None, _flax_safetensors),
    "pytorch": WeightLayout("pytorch", True, "pytorch", SAFE_WEIGHTS, SAFE_INDEX, _pytorch_safetensors),
}


def layouts_for(backend: str, weight_format: str, pytorch: bool) -> tuple[WeightLayout, ...]:
    """The layouts a recipe writes, in writing order."""
    chosen = []
    if backend == "flax":
        chosen.append(LAYOUTS["flax_safetensors" if weight_format == "safetensors" else "flax_msgpack"])
    if backend == "pt" or pytorch:
        chosen.append(LAYOUTS["pytorch"])
    return tuple(chosen)


def planned_files(layout: WeightLayout, sizes: Iterable[tuple[Any, int]], max_shard_size: int) -> list[str]:
    """The files ``layout`` writes for tensors of ``sizes`` (``(key, bytes)``, any order)."""
    ordered = sorted(sizes, key=lambda item: item[0])
    if layout.index_file is None:
        return [layout.single_file]
    shards = shard_groups(ordered, max_shard_size)
    names = shard_names(layout.single_file, len(shards))
    return names + ([layout.index_file] if len(names) > 1 else [])
