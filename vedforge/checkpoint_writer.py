"""Stream a flat parameter state to disk in transformers' Flax checkpoint layout.

``FlaxPreTrainedModel.save_pretrained`` serialises the whole tree into one bytes object
before writing (a second copy of every weight in memory), and its key order follows
Python's set order, so the same weights give different bytes from run to run. This writer
emits the same msgpack structure one tensor at a time, keys sorted, so peak memory grows by
one tensor and equal weights always give equal bytes. Sharding follows
``transformers.modeling_flax_utils.flax_shard_checkpoint``: shards fill in key order, an
oversized tensor gets a shard of its own, and the index maps ``a/b/c`` names to shard files.
"""

from __future__ import annotations

import json
from decimal import Decimal
import os
import re
from pathlib import Path
from typing import BinaryIO

import msgpack
import numpy as np

from vedforge.checkpoint import FLAX_INDEX, FLAX_WEIGHTS, FlatState

# Flax's limits and codes (flax.serialization): arrays above MAX_CHUNK_SIZE bytes are split
# into a chunked dict, and ndarrays travel as msgpack extension type 1.
MAX_CHUNK_SIZE = 2**30
_EXT_NDARRAY = 1
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str | int) -> int:
    """Parse ``"10GB"``, ``"500MiB"`` or a byte count; raise ValueError otherwise."""
    if isinstance(text, int):
        if text <= 0:
            raise ValueError(text)
        return text
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(text)
    # Decimal, not float: "4.1GB" must be 4100000000 bytes, not one short.
    value = Decimal(match.group(1)) * _UNITS[(match.group(2) or "B").upper()]
    if value < 1:
        raise ValueError(text)
    return int(value)


def _pack_ndarray(packer: msgpack.Packer, arr: np.ndarray) -> bytes:
    arr = np.asarray(arr)
    payload = msgpack.packb((arr.shape, arr.dtype.name, arr.tobytes("C")), use_bin_type=True)
    return packer.pack(msgpack.ExtType(_EXT_NDARRAY, payload))


def _write_leaf(f: BinaryIO, packer: msgpack.Packer, arr: np.ndarray) -> None:
    arr = np.asarray(arr)
    if arr.size * arr.dtype.itemsize <= MAX_CHUNK_SIZE:
        f.write(_pack_ndarray(packer, arr))
        return
    # Same layout as flax.serialization._chunk, written chunk by chunk.
    chunksize = max(1, int(MAX_CHUNK_SIZE / arr.dtype.itemsize))
    flat = arr.reshape(-1)
    starts = range(0, flat.size, chunksize)
    f.write(packer.pack_map_header(3))
    f.write(packer.pack("__msgpack_chunked_array__"))
    f.write(packer.pack(True))
    f.write(packer.pack("shape"))
    f.write(packer.pack({str(i): d for i, d in enumerate(arr.shape)}))
    f.write(packer.pack("chunks"))
    f.write(packer.pack_map_header(len(starts)))
    for i, start in enumerate(starts):
        f.write(packer.pack(str(i)))
        f.write(_pack_ndarray(packer, flat[start : start + chunksize]))


def _write_tree(f: BinaryIO, packer: msgpack.Packer, items: list[tuple[tuple[str, ...], np.ndarray]], depth: int) -> None:
    # `items` is sorted by path, so the children of each node are contiguous runs.
    groups: list[tuple[str, list[tuple[tuple[str, ...], np.ndarray]]]] = []
    for path, arr in items:
        if groups and groups[-1][0] == path[depth]:
            groups[-1][1].append((path, arr))
        else:
            groups.append((path[depth], [(path, arr)]))
    f.write(packer.pack_map_header(len(groups)))
    for key, members in groups:
        f.write(packer.pack(key))
        if len(members) == 1 and len(members[0][0]) == depth + 1:
            _write_leaf(f, packer, members[0][1])
        else:
            _write_tree(f, packer, members, depth + 1)


def write_msgpack_file(path: Path, items: list[tuple[tuple[str, ...], np.ndarray]]) -> None:
    """Write one msgpack weights file holding ``items`` (sorted by path) and fsync it."""
    packer = msgpack.Packer(use_bin_type=True)
    with open(path, "wb") as f:
        _write_tree(f, packer, items, 0)
        f.flush()
        os.fsync(f.fileno())


def write_flax_checkpoint(directory: Path, params: FlatState, max_shard_size: int) -> list[Path]:
    """Write ``params`` as ``flax_model.msgpack`` or as shards plus an index; return the files written."""
    items = sorted(params.items())
    shards: list[list[tuple[tuple[str, ...], np.ndarray]]] = [[]]
    shard_bytes = 0
    for path, arr in items:
        size = int(np.asarray(arr).nbytes)
        if shards[-1] and shard_bytes + size > max_shard_size:
            shards.append([])
            shard_bytes = 0
        shards[-1].append((path, arr))
        shard_bytes += size
    if len(shards) == 1:
        target = directory / FLAX_WEIGHTS
        write_msgpack_file(target, shards[0])
        return [target]

    written: list[Path] = []
    weight_map: dict[str, str] = {}
    for index, shard in enumerate(shards, 1):
        name = FLAX_WEIGHTS.replace(".msgpack", f"-{index:05d}-of-{len(shards):05d}.msgpack")
        write_msgpack_file(directory / name, shard)
        written.append(directory / name)
        weight_map.update({"/".join(path): name for path, _ in shard})
    total = sum(int(np.asarray(a).nbytes) for _, a in items)
    index_path = directory / FLAX_INDEX
    index_path.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2, sort_keys=True) + "\n")
    written.append(index_path)
    return written
