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

import ctypes
import errno
import hashlib
import json
import os
import queue
import struct
import threading
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

import msgpack
import numpy as np

from vedforge.weights.bfloat16 import dtype_name
from vedforge.weights.checkpoint import FlatState
from vedforge.weights.formats import (
    FLAX_INDEX,
    FLAX_WEIGHTS,
    MAX_CHUNK_SIZE,
    MSGPACK_EXT_NDARRAY,
    SAFE_INDEX,
    SAFE_WEIGHTS,
    SAFETENSORS_CODES,
)
from vedforge.weights.lazy_tensor import FileRange, LazyTensor, read_exactly, truncated_tensor
from vedforge.weights.progress import advance

def _ext_header(length: int) -> bytes:
    # The smallest extension header, as msgpack.packb chooses it, so output is byte-identical.
    fixed = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
    if length in fixed:
        return bytes([fixed[length], MSGPACK_EXT_NDARRAY])
    if length <= 0xFF:
        return struct.pack(">BBb", 0xC7, length, MSGPACK_EXT_NDARRAY)
    if length <= 0xFFFF:
        return struct.pack(">BHb", 0xC8, length, MSGPACK_EXT_NDARRAY)
    return struct.pack(">BIb", 0xC9, length, MSGPACK_EXT_NDARRAY)


def _bin_header(length: int) -> bytes:
    if length <= 0xFF:
        return struct.pack(">BB", 0xC4, length)
    if length <= 0xFFFF:
        return struct.pack(">BH", 0xC5, length)
    return struct.pack(">BI", 0xC6, length)


# Chunks at least this large are tensor data; at most _IN_FLIGHT of them wait to be hashed or written.
_BIG = 1 << 20
_IN_FLIGHT = 4
_READ_BLOCK = 8 << 20


Chunk = Union[bytes, memoryview, FileRange]


class WriteCancelled(Exception):
    """A weights write stopped early because its caller asked it to."""

# Called with each weights file once it is complete (the runner starts its fsync there).
OnFile = Callable[[Path], None]


def _raw_bytes(arr: np.ndarray) -> memoryview:
    """The array's C-order bytes, without a copy when it is already contiguous."""
    # Not np.ascontiguousarray: it turns a 0-d array into a 1-d one.
    arr = arr if arr.flags.c_contiguous else arr.copy(order="C")
    # A uint8 view, because memoryview cannot export a bfloat16 array (ml_dtypes' or the stored form).
    return memoryview(arr.reshape(-1).view(np.uint8))


def _file_ranges(leaf: object) -> Optional[list[FileRange]]:
    """Where ``leaf``'s bytes lie in its checkpoint file(s); None unless it is a tensor read
    unchanged from a file. The writer has the kernel copy such ranges file to file
    (``copy_file_range``), so they never pass through this process's memory on the way out."""
    return leaf.file_ranges() if isinstance(leaf, LazyTensor) else None


def _slice_ranges(ranges: list[FileRange], start: int, length: int) -> list[FileRange]:
    """The ranges covering bytes ``start .. start + length`` of the concatenation of ``ranges``."""
    out, at = [], 0
    for r in ranges:
        lo, hi = max(start, at), min(start + length, at + r.length)
        if lo < hi:
            out.append(FileRange(r.path, r.offset + lo - at, hi - lo))
        at += r.length
    return out


def _tensor_chunks(arr: object) -> Iterator[Chunk]:
    """``arr``'s bytes in order: file ranges of a tensor read unchanged, the parts of a tensor
    that streams itself (``parts()``: file ranges and arrays, as a grown embedding table), or
    the array."""
    ranges = _file_ranges(arr)
    if ranges is not None:
        yield from ranges
    elif hasattr(arr, "parts"):
        for part in arr.parts():
            yield part if isinstance(part, FileRange) else _raw_bytes(np.asarray(part))
    else:
        yield _raw_bytes(np.asarray(arr))


class _Files:
    """Read-only descriptors of the input files, opened once per stream."""

    def __init__(self):
        self._fds: dict[Path, int] = {}

    def fd(self, path: Path) -> int:
        if path not in self._fds:
            self._fds[path] = os.open(path, os.O_RDONLY)
        return self._fds[path]

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _read_range(files: _Files, r: FileRange, buffer: memoryview) -> Iterator[memoryview]:
    """``r``'s bytes, block by block, read into ``buffer`` (each block is valid until the next)."""
    fd = files.fd(r.path)
    for start in range(0, r.length, len(buffer)):
        block = buffer[: min(len(buffer), r.length - start)]
        read_exactly(fd, block, r.offset + start, r.path)
        yield block


def _writeback_starter() -> Optional[Callable[[int, int, int], int]]:
    """Linux's ``sync_file_range(fd, offset, n, SYNC_FILE_RANGE_WRITE)``, or None elsewhere."""
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return lambda fd, offset, count: function(fd, offset, count, 2)


# Written bytes are handed to the disk in steps of this size, so the final fsync has little
# left to wait for; most of the writeback overlaps the rest of the stream.
_WRITEBACK_STEP = 8 << 20
_START_WRITEBACK = _writeback_starter()


class _Sink:
    """An output file written through its descriptor: small chunks are gathered into one
    write, array bytes are written directly, and file ranges are copied by the kernel.
    Every ``_WRITEBACK_STEP`` bytes, the disk write of what is done so far is started
    (without waiting for it)."""

    def __init__(self, fd: int, files: _Files):
        self.fd, self.files = fd, files
        self.pending = bytearray()
        self.can_copy = hasattr(os, "copy_file_range")
        self.buffer: Optional[memoryview] = None
        self.size = self.handed = 0

    def put(self, chunk: Chunk) -> None:
        if isinstance(chunk, FileRange):
            self.flush()
            self._copy(chunk)
        elif len(chunk) < _BIG:
            self.pending += chunk
        else:
            self.flush()
            self._write(memoryview(chunk))
        if _START_WRITEBACK is not None and self.size - self.handed >= _WRITEBACK_STEP:
            _START_WRITEBACK(self.fd, self.handed, self.size - self.handed)
            self.handed = self.size

    def flush(self) -> None:
        if self.pending:
            self._write(memoryview(self.pending))
            self.pending = bytearray()

    def _write(self, view: memoryview) -> None:
        while len(view):
            written = os.write(self.fd, view)
            self.size += written
            view = view[written:]

    def _copy(self, r: FileRange) -> None:
        done = 0
        while self.can_copy and done < r.length:
            try:
                got = os.copy_file_range(self.files.fd(r.path), self.fd, r.length - done, r.offset + done)
            except OSError as exc:
                # Some file systems and kernels cannot copy between these two files; read and write instead.
                if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF):
                    raise
                self.can_copy = False
                break
            if got == 0:
                raise truncated_tensor(r.path)
            done += got
            self.size += got
        if done < r.length:
            if self.buffer is None:
                self.buffer = memoryview(bytearray(_READ_BLOCK))
            for block in _read_range(self.files, FileRange(r.path, r.offset + done, r.length - done), self.buffer):
                self._write(block)


def _write_stream(path: Path, chunks: Iterator[Chunk], cancel: Optional[threading.Event] = None) -> str:
    """Write ``chunks`` to ``path``; return the file's sha256. The caller makes it durable
    (the staged artifact fsyncs every file before it publishes them).

    Three stages, one thread each: the producer pulls the chunks (generating new tensors,
    reading converted ones) and hands each to both other stages; the hasher hashes them in
    file order (reading file ranges into a reused buffer) while this thread writes them
    (file ranges by kernel copy). Hashing does not wait for writing nor writing for hashing:
    sha256 is the slowest stage, and each runs on its own core. Generation, reads, hashing,
    writes and kernel copies all release the GIL. Each consumer holds its own
    ``_IN_FLIGHT`` slots for in-memory tensors, so at most that many tensors are held
    between the producer and the slower of the two, and memory stays at a few tensors.
    Setting ``cancel`` ends the stream early with :class:`WriteCancelled`.
    """
    sha256 = hashlib.sha256()
    hash_slots, write_slots = threading.Semaphore(_IN_FLIGHT), threading.Semaphore(_IN_FLIGHT)
    to_hash: queue.Queue = queue.Queue()
    to_write: queue.Queue = queue.Queue()
    failure: list[BaseException] = []
    stop = threading.Event()

    def produce() -> None:
        try:
            for chunk in chunks:
                if stop.is_set():
                    return
                if cancel is not None and cancel.is_set():
                    raise WriteCancelled(f"The write of '{path}' was cancelled.")
                if not isinstance(chunk, FileRange) and len(chunk) >= _BIG:
                    hash_slots.acquire()
                    write_slots.acquire()
                to_hash.put(chunk)
                to_write.put(chunk)
        except BaseException as exc:  # handed to the writing thread, which re-raises it
            failure.append(exc)
        finally:
            to_hash.put(None)
            to_write.put(None)

    def hash_in_order() -> None:
        files, buffer = _Files(), memoryview(bytearray(_READ_BLOCK))
        try:
            while (chunk := to_hash.get()) is not None:
                if isinstance(chunk, FileRange):
                    for block in _read_range(files, chunk, buffer):
                        sha256.update(block)
                else:
                    sha256.update(chunk)
                    if len(chunk) >= _BIG:
                        hash_slots.release()
        except BaseException as exc:
            failure.append(exc)
            stop.set()
            for _ in range(_IN_FLIGHT):  # a producer waiting for a slot sees the stop
                hash_slots.release()
        finally:
            files.close()

    threads = [threading.Thread(target=produce, name="vedforge-read", daemon=True),
               threading.Thread(target=hash_in_order, name="vedforge-hash", daemon=True)]
    for thread in threads:
        thread.start()
    copy_files = _Files()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            sink = _Sink(fd, copy_files)
            while (chunk := to_write.get()) is not None and not failure:
                sink.put(chunk)
                advance(chunk.length if isinstance(chunk, FileRange) else len(chunk))
                if not isinstance(chunk, FileRange) and len(chunk) >= _BIG:
                    write_slots.release()
            sink.flush()
            threads[1].join()
            if failure:
                raise failure[0]
        finally:
            os.close(fd)
            copy_files.close()
    finally:
        stop.set()
        producer = threads[0]
        for _ in range(30):  # unblock a producer waiting for a slot; it ends after its current tensor
            if not producer.is_alive():
                break
            hash_slots.release()
            write_slots.release()
            producer.join(timeout=0.1)
        # A hasher left after a failed write drains to the producer's end marker and stops.
    return sha256.hexdigest()


def _ndarray_chunks(packer: msgpack.Packer, shape: tuple[int, ...], dtype: np.dtype, body: list[Chunk]) -> Iterator[Chunk]:
    # flax encodes an ndarray as ExtType(1, packb((shape, dtype name, raw bytes))). The raw bytes
    # go straight from the array's buffer or the input file: no tobytes() copy, no packed copy.
    size = sum(c.length if isinstance(c, FileRange) else len(c) for c in body)
    prefix = packer.pack_array_header(3) + packer.pack(tuple(shape)) + packer.pack(dtype_name(dtype))
    prefix += _bin_header(size)
    yield _ext_header(len(prefix) + size) + prefix
    yield from body


def _leaf_chunks(packer: msgpack.Packer, leaf) -> Iterator[Chunk]:
    ranges = _file_ranges(leaf)
    arr = leaf if ranges is not None else np.asarray(leaf)  # lazy leaves are read here, in the producer thread
    dtype = np.dtype(arr.dtype)
    size = int(np.prod(arr.shape, dtype=np.int64))
    if size * dtype.itemsize <= MAX_CHUNK_SIZE:
        yield from _ndarray_chunks(packer, tuple(arr.shape), dtype, ranges if ranges is not None else [_raw_bytes(arr)])
        return
    # Same layout as flax.serialization._chunk, written chunk by chunk.
    chunksize = max(1, int(MAX_CHUNK_SIZE / dtype.itemsize))
    starts = range(0, size, chunksize)
    yield packer.pack_map_header(3) + packer.pack("__msgpack_chunked_array__") + packer.pack(True)
    yield packer.pack("shape") + packer.pack({str(i): d for i, d in enumerate(arr.shape)})
    yield packer.pack("chunks") + packer.pack_map_header(len(starts))
    flat = None if ranges is not None else arr.reshape(-1)
    for i, start in enumerate(starts):
        count = min(chunksize, size - start)
        yield packer.pack(str(i))
        if ranges is not None:
            body = _slice_ranges(ranges, start * dtype.itemsize, count * dtype.itemsize)
        else:
            body = [_raw_bytes(flat[start : start + count])]
        yield from _ndarray_chunks(packer, (count,), dtype, body)


def _tree_chunks(packer: msgpack.Packer, items: list[tuple[tuple[str, ...], np.ndarray]], depth: int) -> Iterator[Chunk]:
    # `items` is sorted by path, so the children of each node are contiguous runs.
    groups: list[tuple[str, list[tuple[tuple[str, ...], np.ndarray]]]] = []
    for path, arr in items:
        if groups and groups[-1][0] == path[depth]:
            groups[-1][1].append((path, arr))
        else:
            groups.append((path[depth], [(path, arr)]))
    yield packer.pack_map_header(len(groups))
    for key, members in groups:
        yield packer.pack(key)
        if len(members) == 1 and len(members[0][0]) == depth + 1:
            yield from _leaf_chunks(packer, members[0][1])
        else:
            yield from _tree_chunks(packer, members, depth + 1)


def write_msgpack_file(path: Path, items: list[tuple[tuple[str, ...], np.ndarray]],
                       cancel: Optional[threading.Event] = None) -> str:
    """Write one msgpack weights file holding ``items`` (sorted by path); return its sha256."""
    return _write_stream(path, _tree_chunks(msgpack.Packer(use_bin_type=True), items, 0), cancel)


def nbytes(arr) -> int:
    """Bytes of an array or lazy tensor, from its shape and dtype (nothing is read)."""
    return int(np.prod(arr.shape, dtype=np.int64)) * np.dtype(arr.dtype).itemsize


def _write_sharded(directory: Path, items: list[tuple[object, object]], max_shard_size: int, *, single: str,
                   index_name: str, write_file, key_name, on_file: OnFile) -> dict[Path, str]:
    """Write sorted ``items`` to ``single``, or past ``max_shard_size`` to numbered shards plus an
    index, as transformers shards: shards fill in key order, an oversized tensor gets a shard of
    its own, and the index maps ``key_name(key)`` to shard files. Returns ``{path: sha256}``."""
    from vedforge.weights.sharding import shard_groups, shard_names

    groups = shard_groups(((i, nbytes(arr)) for i, (_, arr) in enumerate(items)), max_shard_size)
    shards = [[items[i] for i in group] for group in groups]
    if len(shards) == 1:
        digest = write_file(directory / single, shards[0])
        on_file(directory / single)
        return {directory / single: digest}
    written: dict[Path, str] = {}
    weight_map: dict[str, str] = {}
    for name, shard in zip(shard_names(single, len(shards)), shards):
        written[directory / name] = write_file(directory / name, shard)
        on_file(directory / name)
        weight_map.update({key_name(key): name for key, _ in shard})
    total = sum(nbytes(a) for _, a in items)
    text = json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2, sort_keys=True) + "\n"
    (directory / index_name).write_text(text)
    written[directory / index_name] = hashlib.sha256(text.encode()).hexdigest()
    return written


def write_flax_checkpoint(directory: Path, params: FlatState, max_shard_size: int, *,
                          on_file: OnFile = lambda path: None,
                          cancel: Optional[threading.Event] = None) -> dict[Path, str]:
    """Write ``params`` as ``flax_model.msgpack`` or as shards plus an index.

    Returns ``{path: sha256}`` of every file written (shards first, then the index); the
    weights are hashed while written, so the manifest needs no second read of them.
    ``on_file`` is called with each weights file as soon as it is complete.

    Raises:
        WriteCancelled: ``cancel`` was set before the last tensor was written.
    """
    def write_file(path: Path, shard: list) -> str:
        return write_msgpack_file(path, shard, cancel)

    return _write_sharded(directory, sorted(params.items()), max_shard_size, single=FLAX_WEIGHTS, index_name=FLAX_INDEX,
                          write_file=write_file, key_name="/".join, on_file=on_file)




def _safetensors_file(path: Path, items: list[tuple[str, object]], metadata: dict[str, str],
                      cancel: Optional[threading.Event] = None) -> str:
    """Write ``items`` (name, array or lazy tensor) as one safetensors file; return its sha256.

    The header is computed from shapes alone, so tensors stream one at a time like msgpack.
    """
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for name, arr in items:
        dtype = np.dtype(arr.dtype)
        header[name] = {"dtype": SAFETENSORS_CODES[dtype_name(dtype)], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + nbytes(arr)]}
        offset += nbytes(arr)
    text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    text += b" " * (-len(text) % 8)  # the format aligns the data section to 8 bytes

    def chunks() -> Iterator[Chunk]:
        yield struct.pack("<Q", len(text)) + text
        for _, arr in items:
            yield from _tensor_chunks(arr)

    return _write_stream(path, chunks(), cancel)


def write_safetensors_checkpoint(directory: Path, params: FlatState, *,
                                 on_file: OnFile = lambda path: None,
                                 cancel: Optional[threading.Event] = None) -> dict[Path, str]:
    """Write ``params`` as one Flax-layout ``model.safetensors`` (names joined by ".", metadata
    format "flax"), as ``FlaxPreTrainedModel.save_pretrained(safe_serialization=True)`` does.

    Returns ``{path: sha256}``.
    """
    items = [(".".join(path), arr) for path, arr in sorted(params.items())]
    target = directory / SAFE_WEIGHTS
    digest = _safetensors_file(target, items, {"format": "flax"}, cancel)
    on_file(target)
    return {target: digest}


def write_pytorch_checkpoint(directory: Path, tensors: dict[str, object], max_shard_size: int, *,
                             on_file: OnFile = lambda path: None,
                             cancel: Optional[threading.Event] = None) -> dict[Path, str]:
    """Write PyTorch-named ``tensors`` as ``model.safetensors``, or as shards plus
    ``model.safetensors.index.json`` past ``max_shard_size``, the layout that
    ``PreTrainedModel.save_pretrained`` writes and ``from_pretrained`` reads.

    Returns ``{path: sha256}`` of every file written.

    Raises:
        WriteCancelled: ``cancel`` was set before the last tensor was written.
    """
    def write_file(path: Path, shard: list) -> str:
        return _safetensors_file(path, shard, {"format": "pt"}, cancel)

    return _write_sharded(directory, sorted(tensors.items()), max_shard_size, single=SAFE_WEIGHTS,
                          index_name=SAFE_INDEX, write_file=write_file, key_name=str, on_file=on_file)


class BackgroundWrite:
    """:func:`write_pytorch_checkpoint` running in a thread, so the caller can prepare the rest
    of a directory (configs, tokenizer) while the weights stream to disk."""

    def __init__(self, directory: Path, tensors: dict[str, object], max_shard_size: int, *,
                 on_file: OnFile = lambda path: None):
        self._cancel = threading.Event()
        self._hashes: dict[Path, str] = {}
        self._failure: list[BaseException] = []

        def run() -> None:
            try:
                self._hashes.update(write_pytorch_checkpoint(directory, tensors, max_shard_size, on_file=on_file,
                                                             cancel=self._cancel))
            except BaseException as exc:  # re-raised by result()
                self._failure.append(exc)

        self._thread = threading.Thread(target=run, name="vedforge-write-weights", daemon=True)
        self._thread.start()

    def result(self) -> dict[Path, str]:
        """Wait for the write; return ``{path: sha256}`` of every file written, or raise its error."""
        self._thread.join()
        if self._failure:
            raise self._failure[0]
        return self._hashes

    def cancel(self) -> None:
        """Stop the write at the next tensor and wait for its thread to end."""
        self._cancel.set()
        self._thread.join()
