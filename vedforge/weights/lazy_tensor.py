"""Tensors indexed in a checkpoint file and read only when an array is needed.

A forge copies most tensors unchanged from input to output, so holding them in memory is
waste: the index knows each tensor's shape, dtype and byte offset, and the writer reads one
tensor, writes it and lets it go. Both Flax msgpack and safetensors files are indexed by
reading their headers only.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from vedforge.core.errors import CorruptCheckpointError
from vedforge.weights.bfloat16 import cast, dtype_named
from vedforge.weights.formats import MSGPACK_EXT_NDARRAY, SAFETENSORS_DTYPES



class TensorSpec(NamedTuple):
    """A tensor's shape and dtype and nothing else: what a plan knows before any weight is read
    (the shape-only record that needs no jax, unlike ``jax.ShapeDtypeStruct``)."""

    shape: tuple[int, ...]
    dtype: np.dtype


class FileRange:
    """Bytes ``offset .. offset + length`` of the file at ``path``."""

    __slots__ = ("path", "offset", "length")

    def __init__(self, path: Path, offset: int, length: int):
        self.path, self.offset, self.length = path, offset, length


def read_exactly(fd: int, view: memoryview, offset: int, path: Path) -> None:
    """Fill ``view`` from ``fd`` (the file at ``path``) at ``offset``.

    Raises:
        CorruptCheckpointError: the file ends first.
    """
    done = 0
    while done < len(view):
        # os.preadv releases the GIL, so a read overlaps the writer's work in other threads.
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            raise truncated_tensor(path)
        done += got


def truncated_tensor(path: Path) -> CorruptCheckpointError:
    """The error for a weights file that ends inside a tensor."""
    return CorruptCheckpointError(f"The weights file '{path}' ends inside a tensor: it is truncated.")


class DeferredArray:
    """An array known by its shape and dtype whose values are made only when ``np.asarray`` asks
    (read from a file, drawn from a seed, or computed), so the writer holds one at a time."""

    __slots__ = ()
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def ndim(self) -> int:
        return len(self.shape)


class LazyTensor(DeferredArray):
    """An array stored at ``offset`` in ``path``; ``np.asarray(t)`` reads it."""

    __slots__ = ("path", "offset", "shape", "dtype")

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype):
        self.path, self.offset, self.shape, self.dtype = path, offset, tuple(shape), np.dtype(dtype)

    def file_ranges(self) -> list[FileRange]:
        """Where the array's C-order bytes lie, in order, in the checkpoint file(s)."""
        return [FileRange(self.path, self.offset, self.nbytes)]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        data = np.empty(self.shape, self.dtype)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            read_exactly(fd, memoryview(data.reshape(-1).view(np.uint8)), self.offset, self.path)
        finally:
            os.close(fd)
        return data if dtype is None else cast(data, dtype)

    def mapped(self) -> np.ndarray:
        """The array as a read-only view of the file's pages, for a caller that only reads it
        once (a transpose): no copy into this process's memory first. The pages leave this
        process's memory when the view is dropped.

        Raises:
            CorruptCheckpointError: the file ends before the array does.
        """
        start = self.offset - self.offset % mmap.ALLOCATIONGRANULARITY
        length = self.offset + self.nbytes - start
        if self.nbytes == 0:
            return np.asarray(self)
        with open(self.path, "rb") as f:
            try:
                if hasattr(mmap, "MAP_SHARED"):
                    # MAP_POPULATE (Linux) maps every page in one call rather than one page fault at a time.
                    pages = mmap.mmap(f.fileno(), length, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
                                      prot=mmap.PROT_READ, offset=start)
                else:  # Windows
                    pages = mmap.mmap(f.fileno(), length, access=mmap.ACCESS_READ, offset=start)
            except ValueError:  # the file is shorter than offset + length
                raise truncated_tensor(self.path) from None
        return np.frombuffer(pages, self.dtype, self.size, self.offset - start).reshape(self.shape)

    def __repr__(self) -> str:
        return f"LazyTensor({self.path.name}@{self.offset}, shape={self.shape}, dtype={self.dtype})"


class _ChunkedTensor(LazyTensor):
    """flax's chunked form of an array over 1 GiB: consecutive pieces of the flattened array."""

    __slots__ = ("chunks",)

    def __init__(self, chunks: list[LazyTensor], shape: tuple[int, ...]):
        super().__init__(chunks[0].path, chunks[0].offset, shape, chunks[0].dtype)
        self.chunks = chunks

    def file_ranges(self) -> list[FileRange]:
        return [r for chunk in self.chunks for r in chunk.file_ranges()]

    def mapped(self) -> np.ndarray:
        return np.asarray(self)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        data = np.concatenate([np.asarray(c).reshape(-1) for c in self.chunks]).reshape(self.shape)
        return data if dtype is None else cast(data, dtype)


class _MsgpackIndexer:
    """Walks a msgpack stream's headers, seeking over tensor data instead of reading it."""

    def __init__(self, f: BinaryIO, path: Path):
        self.f, self.path = f, path

    def _read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise EOFError
        return data

    def _unpack(self, fmt: str) -> int:
        return struct.unpack(fmt, self._read(struct.calcsize(fmt)))[0]

    def value(self) -> Any:
        b = self._read(1)[0]
        if b <= 0x7F:
            return b
        if b >= 0xE0:
            return b - 0x100
        if 0x80 <= b <= 0x8F:
            return self._map(b & 0x0F)
        if 0x90 <= b <= 0x9F:
            return [self.value() for _ in range(b & 0x0F)]
        if 0xA0 <= b <= 0xBF:
            return self._read(b & 0x1F).decode()
        simple = {0xC0: None, 0xC2: False, 0xC3: True}
        if b in simple:
            return simple[b]
        lengths = {0xC4: ">B", 0xC5: ">H", 0xC6: ">I", 0xD9: ">B", 0xDA: ">H", 0xDB: ">I"}
        if b in lengths:
            data = self._read(self._unpack(lengths[b]))
            return data if b <= 0xC6 else data.decode()
        numbers = {0xCA: ">f", 0xCB: ">d", 0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q",
                   0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q"}
        if b in numbers:
            return self._unpack(numbers[b])
        if b in (0xDC, 0xDD):
            return [self.value() for _ in range(self._unpack(">H" if b == 0xDC else ">I"))]
        if b in (0xDE, 0xDF):
            return self._map(self._unpack(">H" if b == 0xDE else ">I"))
        fixext = {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}
        if b in fixext:
            return self._ext(self._unpack(">b"), fixext[b])
        if b in (0xC7, 0xC8, 0xC9):
            length = self._unpack({0xC7: ">B", 0xC8: ">H", 0xC9: ">I"}[b])
            return self._ext(self._unpack(">b"), length)
        raise ValueError(f"byte 0x{b:02x} is not msgpack")

    def _map(self, n: int) -> dict:
        out = {}
        for _ in range(n):
            key = self.value()
            out[key] = self.value()
        if out.get("__msgpack_chunked_array__") is True:
            chunks = [out["chunks"][str(i)] for i in range(len(out["chunks"]))]
            return _ChunkedTensor(chunks, tuple(out["shape"][str(i)] for i in range(len(out["shape"]))))
        return out

    def _ext(self, code: int, length: int) -> Any:
        start = self.f.tell()
        if code != MSGPACK_EXT_NDARRAY:
            from flax.serialization import _msgpack_ext_unpack

            return _msgpack_ext_unpack(code, self._read(length))
        shape, dtype, data_start, data_length = self._ndarray_header()
        array = LazyTensor(self.path, data_start, tuple(shape), dtype_named(dtype))
        if array.nbytes != data_length or data_start + data_length != start + length:
            raise ValueError("tensor header does not match its data length")
        self.f.seek(start + length)
        return array

    def _ndarray_header(self) -> tuple[list[int], str, int, int]:
        if self._read(1)[0] != 0x93:
            raise ValueError("ndarray extension is not a 3-tuple")
        shape, dtype = self.value(), self.value()
        b = self._read(1)[0]
        if b not in (0xC4, 0xC5, 0xC6):
            raise ValueError("ndarray data is not binary")
        length = self._unpack({0xC4: ">B", 0xC5: ">H", 0xC6: ">I"}[b])
        return shape, dtype, self.f.tell(), length


def index_msgpack(path: Path) -> Any:
    """The parameter tree of a Flax msgpack file with :class:`LazyTensor` leaves."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            tree = _MsgpackIndexer(f, path).value()
            end = f.tell()
    except (EOFError, ValueError, UnicodeDecodeError, struct.error, KeyError, TypeError) as exc:
        reason = "it ends early: truncated" if isinstance(exc, EOFError) else f"{type(exc).__name__}: {exc}"
        raise CorruptCheckpointError(
            f"The weights file '{path}' cannot be parsed as Flax msgpack ({reason}). Download or save it again."
        ) from None
    if end > size:
        raise CorruptCheckpointError(f"The weights file '{path}' is truncated: its last tensor ends past the end of the file.")
    if end != size:
        raise CorruptCheckpointError(f"The weights file '{path}' has {size - end} bytes of trailing data; it is damaged.")
    return tree




def index_safetensors(path: Path) -> tuple[dict[str, LazyTensor], dict[str, str]]:
    """``({name: LazyTensor}, metadata)`` of a safetensors file, from its JSON header."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (header_size,) = struct.unpack("<Q", f.read(8))
            if header_size > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(f.read(header_size))
        metadata = header.pop("__metadata__", None) or {}
        base = 8 + header_size
        tensors = {}
        for name, entry in header.items():
            start, end = entry["data_offsets"]
            tensor = LazyTensor(path, base + start, tuple(entry["shape"]), dtype_named(SAFETENSORS_DTYPES[entry["dtype"]]))
            if tensor.nbytes != end - start or base + end > size:
                raise ValueError(f"tensor {name} lies outside the file")
            tensors[name] = tensor
    except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError) as exc:
        raise CorruptCheckpointError(
            f"The weights file '{path}' cannot be parsed as safetensors ({type(exc).__name__}: {exc}). "
            "Download or save it again."
        ) from None
    return tensors, metadata
