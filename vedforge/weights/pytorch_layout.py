"""Name and lay out a forged model's tensors for transformers' PyTorch classes.

The conversion follows ``transformers.modeling_flax_pytorch_utils.load_flax_weights_in_pytorch_model``
(Dense kernels transposed, convolution kernels from HWIO to OIHW, ``scale`` and ``embedding``
renamed ``weight``), but tensor by tensor and lazily: the writer pulls each converted tensor
when it writes it, so converting costs one tensor of memory, not a second copy of the model.
(``from_pretrained(dir, from_flax=True)`` is no alternative: in transformers 4.51-4.57 it
leaves the parameters on the meta device.) A forge checks the names against the PyTorch model
built on the meta device, which allocates nothing (:func:`to_pytorch_layout`); a conversion of a
whole Flax checkpoint names them from the Flax paths alone (:func:`pytorch_named`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vedforge.weights.bfloat16 import cast
from vedforge.weights.checkpoint import FlatState
from vedforge.weights.lazy_tensor import LazyTensor
from vedforge.core.errors import BackendError


class PermutedTensor:
    """A tensor whose axes are permuted when the writer reads it."""

    __slots__ = ("source", "axes", "shape", "dtype")

    def __init__(self, source: Any, axes: tuple[int, ...]):
        self.source, self.axes = source, axes
        self.shape = tuple(source.shape[a] for a in axes)
        self.dtype = np.dtype(source.dtype)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        source = self.source.mapped() if isinstance(self.source, LazyTensor) else np.asarray(self.source)
        data = transposed(source) if self.axes == (1, 0) else np.ascontiguousarray(np.transpose(source, self.axes))
        return data if dtype is None else cast(data, dtype)


# Rows of the source copied per step of a 2-D transpose: a block of this many rows stays in
# cache while it is scattered, so the copy runs several times faster than one strided pass.
_TRANSPOSE_ROWS = 64


def transposed(matrix: np.ndarray) -> np.ndarray:
    """The C-contiguous transpose of a 2-D array, copied in blocks of rows."""
    rows, cols = matrix.shape
    out = np.empty((cols, rows), matrix.dtype)
    for start in range(0, rows, _TRANSPOSE_ROWS):
        out[:, start:start + _TRANSPOSE_ROWS] = matrix[start:start + _TRANSPOSE_ROWS].T
    return out


def pytorch_name(path: tuple[str, ...], ndim: int, expected: dict[str, tuple[int, ...]]) -> tuple[str, tuple[int, ...] | None]:
    """The PyTorch state-dict name of Flax parameter ``path``, and the axis permutation it needs (or None)."""
    leaf, name = path[-1], ".".join(path)
    if leaf == "kernel" and name not in expected:
        axes = (3, 2, 0, 1) if ndim == 4 else (1, 0) if ndim == 2 else None
        return ".".join(path[:-1] + ("weight",)), axes
    if leaf in ("scale", "embedding"):
        return ".".join(path[:-1] + ("weight",)), None
    return name, None


def pytorch_named(params: FlatState) -> dict[str, Any]:
    """The tensors of a whole Flax checkpoint under their PyTorch names, lazily converted,
    derived from the Flax paths alone (no PyTorch model is built).

    This is :func:`to_pytorch_layout`'s naming for a checkpoint whose every Dense or
    convolution ``kernel`` becomes a PyTorch ``weight``, as in every model with a Flax port;
    tensors PyTorch ties to another (a head sharing the token embeddings) are absent from such
    checkpoints, as Flax computes them from the shared tensor. Whether the names cover the
    model the config describes is for the caller to check.

    Raises:
        BackendError: two Flax paths get the same PyTorch name.
    """
    out: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for path, arr in params.items():
        name, axes = pytorch_name(path, len(arr.shape), {})
        if name in out:
            raise BackendError(f"The Flax tensors {sources[name]} and {'/'.join(path)} both become the PyTorch "
                               f"tensor {name}.")
        out[name] = PermutedTensor(arr, axes) if axes else arr
        sources[name] = "/".join(path)
    return out


def meta_state_shapes(config: Any) -> tuple[dict[str, tuple[int, ...]], set[str]]:
    """Shapes of every tensor in the state dict of ``VisionEncoderDecoderModel(config)``, and the
    names that are tied to another tensor (``save_pretrained`` leaves those out)."""
    import torch
    from transformers import VisionEncoderDecoderModel

    from vedforge.core.frameworks import config_to_build
    from vedforge.weights.saved_names import buffers_saved_by_4_57, saved_names

    with torch.device("meta"):
        model = VisionEncoderDecoderModel(config_to_build(config))
    renamed = saved_names(model)
    state = model.state_dict()
    expected = {renamed[name]: tuple(t.shape) for name, t in state.items()}
    # Written as 4.57 writes them, so 4.57 loads a 5.x forge with nothing missing.
    kept = buffers_saved_by_4_57(model, renamed)
    expected.update({name: tuple(t.shape) for name, t in kept.items()})
    distinct = ({renamed.get(n, n) for n, _ in model.named_parameters()}
                | {renamed.get(n, n) for n, _ in model.named_buffers()})
    return expected, set(expected) - distinct - set(kept)


_FORGE_ADVICE = "Forge with backend=flax without output.pytorch, and report this pairing"


def to_pytorch_layout(config: Any, params: FlatState, native: dict[str, Any] | None = None, *,
                      advice: str = _FORGE_ADVICE) -> dict[str, Any]:
    """The PyTorch state dict of the combined model, as lazily converted tensors.

    Args:
        config: the forged ``VisionEncoderDecoderConfig``.
        params: the forged tensors in Flax layout.
        native: tensors already in PyTorch layout and naming (an encoder built with PyTorch).
        advice: the error's last sentence: what the user can do about a mismatch.

    Raises:
        BackendError: the tensors do not cover the PyTorch model, which would make
            ``from_pretrained`` initialise what the forge meant to copy.
    """
    expected, tied = meta_state_shapes(config)
    # (PyTorch name, tensor, where it came from), checked alike whichever layout it came in.
    candidates = [(name, arr, name) for name, arr in (native or {}).items()]
    for path, arr in params.items():
        name, axes = pytorch_name(path, len(arr.shape), expected)
        candidates.append((name, PermutedTensor(arr, axes) if axes else arr, "/".join(path)))
    out: dict[str, Any] = {}
    unexpected: list[str] = []
    for name, tensor, source in candidates:
        if name in expected and tuple(tensor.shape) == expected[name]:
            out[name] = tensor
        else:
            unexpected.append(f"{source} {tuple(tensor.shape)}")
    missing = sorted(set(expected) - set(out) - tied)
    if unexpected or missing:
        raise unmapped_tensors_error(config, unexpected, missing, advice)
    return {name: arr for name, arr in out.items() if name not in tied}


def unmapped_tensors_error(config: Any, unexpected: list[str], missing: list[str], advice: str) -> BackendError:
    """The one-paragraph error for tensors with no place in the PyTorch model (``unexpected``) and
    places no tensor fills (``missing``, sorted), the first five of each named."""
    return BackendError(
        "The tensors do not map onto transformers' PyTorch VisionEncoderDecoderModel "
        f"({config.encoder.model_type} + {config.decoder.model_type}): "
        + (f"no PyTorch place for {', '.join(unexpected[:5])}; " if unexpected else "")
        + (f"nothing for {', '.join(sorted(missing)[:5])}" if missing else "")
        + f". {advice}."
    )
