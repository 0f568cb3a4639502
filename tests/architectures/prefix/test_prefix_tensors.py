"""New vocabulary rows are drawn as transformers' resize_token_embeddings(mean_resizing=True) draws them."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from vedforge.architectures.prefix import tensors as prefix_tensors  # noqa: E402
from vedforge.architectures.prefix.tensors import mean_resized_rows  # noqa: E402


def _transformers_rows(table: np.ndarray, added: int) -> np.ndarray:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=table.shape[0], hidden_size=table.shape[1], intermediate_size=8, num_hidden_layers=1,
                         num_attention_heads=1, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(torch.from_numpy(table))
    model.resize_token_embeddings(table.shape[0] + added, mean_resizing=True)
    return model.get_input_embeddings().weight.detach().numpy()[table.shape[0]:]


def _is_the_mean(rows: np.ndarray, table: np.ndarray) -> bool:
    """Whether ``rows`` repeat the table's mean, to float32 rounding: a draw from 1e-9 x the
    covariance of a unit-scale table sits about 3e-5 away from it."""
    return bool(np.abs(rows - table.astype(np.float64).mean(axis=0)).max() < 1e-6)


def test_rows_follow_the_mean_and_covariance_as_transformers_draws_them():
    table = np.random.default_rng(0).standard_normal((600, 16)).astype(np.float32) * 0.02 + 0.01
    ours = mean_resized_rows(table, 3, np.random.default_rng(1))
    theirs = _transformers_rows(table, 3)
    mean = table.astype(np.float64).mean(axis=0)
    # Both sit at the mean, off by sqrt(1e-9) of the table's spread: not the mean exactly.
    assert np.abs(ours - mean).max() < 1e-5 and np.abs(ours - mean).max() > 0
    np.testing.assert_allclose(ours, theirs, atol=2e-5)
    # The spread is the covariance's: over many draws, N(0, 1e-9 x cov).
    draws = mean_resized_rows(table, 4000, np.random.default_rng(2)) - mean
    expected = 1e-9 * np.cov(table.astype(np.float64), rowvar=False, bias=True)
    np.testing.assert_allclose(np.cov(draws, rowvar=False, bias=True), expected, atol=0.1 * np.abs(expected).max())


def test_a_draw_is_the_centred_table_applied_to_standard_normals():
    # Exactly mean + sqrt(1e-9 / n) x centred^T w with w the stream's next n x added normals, over
    # several row blocks: a linear map of independent N(0, 1) values, whose covariance is
    # 1e-9 x centred^T centred / n, transformers' 1e-9 x covariance.
    table = np.random.default_rng(4).standard_normal((3 * prefix_tensors._ROWS + 17, 12)) * 0.02 + 0.005
    ours = mean_resized_rows(table, 3, np.random.default_rng(9))
    n = table.shape[0]
    mean = table.mean(axis=0)
    w = np.random.default_rng(9).standard_normal((n, 3))
    np.testing.assert_allclose(ours - mean, np.sqrt(1e-9 / n) * w.T @ (table - mean), rtol=1e-9, atol=0)


def test_the_draws_have_transformers_covariance_normalised_by_the_row_count():
    # Whitened by 1e-9 x the covariance divided by n, the draws' covariance is the identity. With
    # 12 rows, a covariance divided by n - 1 would whiten to 12/11 = 1.09 on the diagonal, and a
    # draw ignoring the covariance's shape would leave off-diagonal terms: both fail here.
    rng = np.random.default_rng(11)
    table = rng.standard_normal((12, 4)) @ rng.standard_normal((4, 4)) + 3.0
    draws = mean_resized_rows(table, 40000, np.random.default_rng(12)) - table.mean(axis=0)
    centred = table - table.mean(axis=0)
    covariance = 1e-9 * centred.T @ centred / table.shape[0]
    whiten = np.linalg.inv(np.linalg.cholesky(covariance))
    white = draws @ whiten.T
    sample = white.T @ white / len(white)
    assert abs(np.trace(sample) / 4 - 1) < 0.02, np.diag(sample)
    np.testing.assert_allclose(sample, np.eye(4), atol=0.04)
    np.testing.assert_allclose(white.mean(axis=0), 0, atol=0.02)


def test_a_singular_covariance_gives_the_mean_as_transformers_does():
    table = np.random.default_rng(0).standard_normal((8, 32)).astype(np.float32)  # fewer rows than columns
    ours = mean_resized_rows(table, 2, np.random.default_rng(1))
    np.testing.assert_array_equal(ours, np.repeat(table.astype(np.float64).mean(axis=0)[None], 2, axis=0))
    np.testing.assert_allclose(ours, _transformers_rows(table, 2), atol=1e-6)


@pytest.mark.parametrize("width, rows", [(8, 3), (8, 10), (8, 40), (16, 8), (16, 11), (16, 18), (16, 100),
                                         (32, 20), (32, 27), (32, 34), (32, 128)])
def test_draw_or_mean_as_transformers_decides_by_row_count(width, rows):
    # transformers' float32 Cholesky decides the same on every random table with 2 rows or more
    # beyond the width (it succeeds) or 5 or more short of it (it fails); closer to the width, it
    # flips by rounding. Both branches are checked against resize_token_embeddings itself.
    for seed in range(3):
        table = np.random.default_rng([width, rows, seed]).standard_normal((rows, width)).astype(np.float32)
        ours = mean_resized_rows(table, 2, np.random.default_rng(seed))
        theirs = _transformers_rows(table, 2)
        assert _is_the_mean(ours, table) == _is_the_mean(theirs, table) == (rows < width), (seed, ours, theirs)
        np.testing.assert_allclose(ours, theirs, atol=3e-4)


def test_a_zero_column_gives_the_mean_as_transformers_does():
    table = np.random.default_rng(5).standard_normal((600, 16)).astype(np.float32)
    table[:, 3] = 0.0
    ours = mean_resized_rows(table, 2, np.random.default_rng(1))
    theirs = _transformers_rows(table, 2)
    assert _is_the_mean(ours, table) and _is_the_mean(theirs, table)


def test_constant_and_equal_columns_give_the_mean():
    # A singular covariance in exact arithmetic (transformers' float32 factorisation of these
    # succeeds or fails by rounding): the mean, as for a singular one it finds.
    rng = np.random.default_rng(6)
    constant = rng.standard_normal((600, 16)).astype(np.float32)
    constant[:, 3] = 0.1
    equal = rng.standard_normal((600, 16)).astype(np.float32)
    equal[:, 9] = equal[:, 2]
    equal[5, 9] = -0.0 if equal[5, 2] == 0 else equal[5, 2]
    for table in (constant, equal):
        assert _is_the_mean(mean_resized_rows(table, 2, np.random.default_rng(1)), table)


def test_columns_alike_in_sum_and_range_but_not_equal_are_drawn():
    # Integer-valued columns, one the reverse of another: equal sums, least and largest values,
    # so they are compared value by value, and found different. So is a column equal to another
    # but in one row.
    rng = np.random.default_rng(7)
    reversed_ = rng.integers(-4, 5, (400, 10)).astype(np.float32)
    reversed_[:, 6] = reversed_[::-1, 1]
    one_off = rng.standard_normal((400, 10)).astype(np.float32)
    one_off[:, 6] = one_off[:, 1]
    one_off[399, 6] += 1.0
    for table in (reversed_, one_off):
        ours = mean_resized_rows(table, 2, np.random.default_rng(1))
        assert not _is_the_mean(ours, table)
        assert not _is_the_mean(_transformers_rows(table, 2), table)


def test_same_stream_same_rows():
    table = np.random.default_rng(3).standard_normal((300, 8)).astype(np.float32)
    a = mean_resized_rows(table, 2, np.random.default_rng(5))
    assert np.array_equal(a, mean_resized_rows(table, 2, np.random.default_rng(5)))
    assert not np.array_equal(a, mean_resized_rows(table, 2, np.random.default_rng(6)))


def test_grown_rows_of_a_bf16_file_need_neither_torch_nor_jax_nor_ml_dtypes(tmp_path):
    # The writer's parts of a grown table read from a safetensors file, in a process where
    # importing torch, jax or ml_dtypes fails.
    import ml_dtypes
    from safetensors.numpy import save_file

    table = (np.random.default_rng(8).standard_normal((1000, 24)) * 0.02).astype(ml_dtypes.bfloat16)
    save_file({"embed.weight": table}, str(tmp_path / "model.safetensors"))
    code = f"""
import sys
for blocked in ("torch", "jax", "flax", "ml_dtypes"):
    sys.modules[blocked] = None
from pathlib import Path
from vedforge.architectures.prefix.tensors import GrownTensor
from vedforge.weights.bfloat16 import dtype_name
from vedforge.weights.lazy_tensor import FileRange, index_safetensors
state = index_safetensors(Path({str(tmp_path / 'model.safetensors')!r}))[0]
*old, new = GrownTensor("embed.weight", state["embed.weight"], 1002, seed=3).parts()
assert old and all(isinstance(part, FileRange) for part in old)
print(new.shape, dtype_name(new.dtype))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "(2, 24) bfloat16", run.stdout


def test_bf16_tensors_made_without_ml_dtypes_have_its_bytes(tmp_path, monkeypatch):
    # Grown rows (tables and an output head's bias) and new projector tensors, made in vedforge's
    # stored bfloat16 and in ml_dtypes' bfloat16.
    import ml_dtypes
    from safetensors.numpy import save_file

    from vedforge.architectures.prefix.tensors import GrownTensor, NewTensor
    from vedforge.weights.bfloat16 import STORAGE, is_bfloat16
    from vedforge.weights.lazy_tensor import index_safetensors

    rng = np.random.default_rng(9)
    save_file({"table": (rng.standard_normal((600, 16)) * 0.02).astype(ml_dtypes.bfloat16),
               "bias": rng.standard_normal(600).astype(ml_dtypes.bfloat16)}, str(tmp_path / "model.safetensors"))

    def made() -> dict[str, np.ndarray]:
        state = index_safetensors(tmp_path / "model.safetensors")[0]
        dtype = state["table"].dtype
        out = {name: np.asarray(GrownTensor(name, state[name], 603, seed=4)) for name in ("table", "bias")}
        out.update({kind: np.asarray(NewTensor(f"p.{kind}", (8, 16), dtype, kind, seed=4, std=0.02))
                    for kind in ("normal", "zeros", "ones", "identity")})
        assert all(is_bfloat16(a.dtype) for a in out.values())
        return out

    theirs = made()
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)
    ours = made()
    assert all(a.dtype == STORAGE for a in ours.values())
    for name, array in theirs.items():
        assert ours[name].tobytes() == array.tobytes(), name
