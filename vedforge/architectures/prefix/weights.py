"""Read a checkpoint's PyTorch-layout tensors by name, lazily, for a prefix forge.

safetensors files (single or sharded) are indexed from their headers: each tensor is a
:class:`vedforge.weights.lazy_tensor.LazyTensor` the writer copies from the file. Older checkpoints with
only ``pytorch_model*.bin`` files are memory-mapped by torch (``mmap=True``), so their tensors
too are read only when written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from vedforge.core.errors import CorruptCheckpointError, NotACheckpointError
from vedforge.sources.resolve import weight_pattern_sets


def _files(path: Path, role: Optional[str]) -> list[Path]:
    from vedforge.weights.checkpoint import _shards_from_index, random_weights_hint
    from vedforge.weights.formats import SAFE_INDEX

    if (path / SAFE_INDEX).is_file():
        return _shards_from_index(path / SAFE_INDEX)
    for patterns in weight_pattern_sets(torch_weights=True):
        found = sorted(p for pattern in patterns for p in path.glob(pattern) if not p.name.endswith(".index.json"))
        if found:
            return found
    raise NotACheckpointError(
        f"No PyTorch-layout weights in '{path}' (model*.safetensors or pytorch_model*.bin), which architecture=prefix "
        f"reads. {random_weights_hint(role)}")


def read_part_tensors(path: Path, *, header_only: bool = False, role: Optional[str] = None) -> dict[str, Any]:
    """Every tensor of the checkpoint in ``path`` by its PyTorch name, read only when converted to
    an array (with ``header_only``, shape specs: nothing but headers is read)."""
    from vedforge.weights.checkpoint import safetensors_format
    from vedforge.weights.lazy_tensor import TensorSpec, index_safetensors

    files = _files(path, role)
    tensors: dict[str, Any] = {}
    if files[0].suffix == ".safetensors":
        if safetensors_format(files[0]) == "flax":
            raise CorruptCheckpointError(
                f"The weights in '{files[0]}' are in Flax layout; architecture=prefix reads PyTorch-layout checkpoints. "
                "Convert it first (vedforge convert, or transformers' save_pretrained in PyTorch).")
        for file in files:
            tensors.update(index_safetensors(file)[0])
    else:
        for file in files:
            tensors.update(_torch_file(file))
    if header_only:
        return {name: TensorSpec(tuple(t.shape), np.dtype(t.dtype)) for name, t in tensors.items()}
    return tensors


def _torch_file(file: Path) -> dict[str, Any]:
    import torch

    try:
        state = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged file
        raise CorruptCheckpointError(f"The weights file '{file}' cannot be read by torch ({type(exc).__name__}: {exc}).") from None
    return {name: _MappedTensor(t) for name, t in state.items()}


class _MappedTensor:
    """A tensor of a memory-mapped ``.bin`` file, as numpy when the writer asks for it."""

    __slots__ = ("tensor", "shape", "dtype")

    def __init__(self, tensor: Any):
        from vedforge.weights.bfloat16 import dtype_named

        self.tensor, self.shape = tensor, tuple(tensor.shape)
        self.dtype = dtype_named(str(tensor.dtype).removeprefix("torch."))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        import torch

        from vedforge.weights.bfloat16 import cast, is_bfloat16

        tensor = self.tensor.contiguous()
        # torch hands numpy no bfloat16: its bytes, as int16, are relabelled.
        data = tensor.view(torch.int16).numpy().view(self.dtype) if is_bfloat16(self.dtype) else tensor.numpy()
        return data if dtype is None else cast(data, dtype)
