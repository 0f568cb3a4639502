"""How a checkpoint is split into shards, as transformers splits it: which tensors go together, and the files' names."""

from __future__ import annotations

from typing import Any, Iterable


def shard_groups(sizes: Iterable[tuple[Any, int]], max_shard_size: int) -> list[list[Any]]:
    """Keys, in the given (sorted) order, grouped into shards as transformers shards: shards fill
    in key order and an oversized tensor gets a shard of its own."""
    shards: list[list[Any]] = [[]]
    shard_bytes = 0
    for key, size in sizes:
        if shards[-1] and shard_bytes + size > max_shard_size:
            shards.append([])
            shard_bytes = 0
        shards[-1].append(key)
        shard_bytes += size
    return shards


def shard_names(single: str, count: int) -> list[str]:
    """The file names of ``count`` shards of ``single`` (``model-00001-of-00002.safetensors``)."""
    if count == 1:
        return [single]
    stem, suffix = single.rsplit(".", 1)
    return [f"{stem}-{i:05d}-of-{count:05d}.{suffix}" for i in range(1, count + 1)]
