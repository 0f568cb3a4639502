"""Flax tensors under PyTorch names and layouts, streamed without jax or torch."""

from __future__ import annotations

import hashlib
import json
import struct
import threading

import numpy as np
import pytest

from vedforge.core.errors import BackendError, CorruptCheckpointError
from vedforge.weights.lazy_tensor import LazyTensor
from vedforge.weights.pytorch_layout import PermutedTensor, pytorch_named, transposed
from vedforge.weights.writer import BackgroundWrite, WriteCancelled, write_pytorch_checkpoint


@pytest.mark.parametrize("shape", [(768, 3072), (3072, 768), (65, 130), (1, 5), (5, 1), (0, 4), (4, 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int8])
def test_transposed_is_numpys_transpose(shape, dtype):
    matrix = (np.random.RandomState(0).rand(*shape) * 100).astype(dtype)
    got = transposed(matrix)
    assert got.flags.c_contiguous and got.dtype == matrix.dtype
    assert got.tobytes() == np.ascontiguousarray(matrix.T).tobytes()


def _file_tensor(tmp_path, arr: np.ndarray, pad: int = 13) -> LazyTensor:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"x" * pad + arr.tobytes())
    return LazyTensor(path, pad, arr.shape, arr.dtype)


def test_a_kernel_in_a_file_is_transposed_from_its_pages(tmp_path):
    kernel = np.random.RandomState(1).rand(70, 33).astype(np.float32)
    conv = np.random.RandomState(2).rand(3, 3, 4, 8).astype(np.float32)
    assert np.array_equal(np.asarray(PermutedTensor(_file_tensor(tmp_path, kernel), (1, 0))), kernel.T)
    assert np.array_equal(np.asarray(PermutedTensor(_file_tensor(tmp_path, conv), (3, 2, 0, 1))),
                          np.transpose(conv, (3, 2, 0, 1)))


def test_a_file_shorter_than_its_tensor_is_reported(tmp_path):
    tensor = _file_tensor(tmp_path, np.ones((64, 64), np.float32))
    path = tensor.path
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CorruptCheckpointError, match="truncated"):
        np.asarray(PermutedTensor(tensor, (1, 0)))


def test_pytorch_names_follow_transformers_flax_to_pytorch_rules():
    params = {
        ("decoder", "h", "0", "mlp", "kernel"): np.zeros((2, 3), np.float32),
        ("encoder", "patch", "kernel"): np.zeros((3, 3, 4, 8), np.float32),
        ("encoder", "norm", "scale"): np.zeros((4,), np.float32),
        ("decoder", "wte", "embedding"): np.zeros((5, 2), np.float32),
        ("decoder", "h", "0", "mlp", "bias"): np.zeros((3,), np.float32),
    }
    named = pytorch_named(params)
    assert {name: tuple(t.shape) for name, t in named.items()} == {
        "decoder.h.0.mlp.weight": (3, 2),
        "encoder.patch.weight": (8, 4, 3, 3),
        "encoder.norm.weight": (4,),
        "decoder.wte.weight": (5, 2),
        "decoder.h.0.mlp.bias": (3,),
    }
    with pytest.raises(BackendError, match="both become the PyTorch tensor decoder.wte.weight"):
        pytorch_named({**params, ("decoder", "wte", "weight"): np.zeros((5, 2), np.float32)})


def _read_safetensors(path):
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    body = data[8 + length:]
    return {name: np.frombuffer(body[spec["data_offsets"][0]:spec["data_offsets"][1]], np.float32).reshape(spec["shape"])
            for name, spec in header.items() if name != "__metadata__"}


def test_background_write_hashes_what_it_writes(tmp_path):
    rng = np.random.RandomState(3)
    # Over a megabyte each, so the in-memory tensors go through the writer's slots.
    tensors = {f"layer.{i}.weight": PermutedTensor(rng.rand(600, 700).astype(np.float32), (1, 0)) for i in range(6)}
    tensors["small"] = np.arange(5, dtype=np.float32)
    out = tmp_path / "out"
    out.mkdir()
    hashes = BackgroundWrite(out, tensors, 10**9).result()
    (path, digest), = hashes.items()
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    written = _read_safetensors(path)
    assert set(written) == set(tensors)
    for name, tensor in tensors.items():
        assert np.array_equal(written[name], np.asarray(tensor)), name


def test_a_cancelled_write_stops_with_write_cancelled(tmp_path):
    cancel = threading.Event()
    cancel.set()
    tensors = {f"t{i}": np.ones((600, 700), np.float32) for i in range(4)}
    with pytest.raises(WriteCancelled):
        write_pytorch_checkpoint(tmp_path, tensors, 10**9, cancel=cancel)
    background = BackgroundWrite(tmp_path / "missing_dir", tensors, 10**9)  # fails: no such directory
    with pytest.raises(OSError):
        background.result()
