"""The tensors a cross-attention forge makes from bfloat16 checkpoints have ml_dtypes' bytes without it."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

ml_dtypes = pytest.importorskip("ml_dtypes")

from vedforge.architectures.cross_attention.assembly import _grow, _new_tensor, _resize_position_grid  # noqa: E402
from vedforge.weights.bfloat16 import STORAGE, cast  # noqa: E402


def _made(dtype) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    table = cast(rng.standard_normal((5, 6)).astype(np.float32), dtype)
    out = {leaf: _new_tensor(("decoder", leaf), (4, 6), dtype, 3, 0.02) for leaf in ("kernel", "bias", "scale")}
    out["grown"] = _grow(("decoder", "embedding"), table, (7, 6), dtype, 3, 0.02, (5, 7))
    if importlib.util.find_spec("jax") is not None:  # the resize is jax.image.resize
        positions = cast(rng.standard_normal((1, 17, 8)).astype(np.float32), dtype)
        out["resized"] = _resize_position_grid(("embeddings", "position_embeddings"), positions, (1, 26, 8))
    return out


def test_bf16_tensors_made_in_the_stored_form_have_ml_dtypes_bytes():
    theirs, ours = _made(ml_dtypes.bfloat16), _made(STORAGE)
    assert sorted(theirs) == sorted(ours)
    for name, array in theirs.items():
        assert ours[name].dtype == STORAGE and ours[name].tobytes() == array.tobytes(), name
