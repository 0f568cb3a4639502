"""New vocabulary rows are drawn as transformers' resize_token_embeddings(mean_resizing=True) draws them."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

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


def test_a_singular_covariance_gives_the_mean_as_transformers_does():
    table = np.random.default_rng(0).standard_normal((8, 32)).astype(np.float32)  # fewer rows than columns
    ours = mean_resized_rows(table, 2, np.random.default_rng(1))
    np.testing.assert_array_equal(ours, np.repeat(table.astype(np.float64).mean(axis=0)[None], 2, axis=0))
    np.testing.assert_allclose(ours, _transformers_rows(table, 2), atol=1e-6)


def test_same_stream_same_rows():
    table = np.random.default_rng(3).standard_normal((300, 8)).astype(np.float32)
    a = mean_resized_rows(table, 2, np.random.default_rng(5))
    assert np.array_equal(a, mean_resized_rows(table, 2, np.random.default_rng(5)))
    assert not np.array_equal(a, mean_resized_rows(table, 2, np.random.default_rng(6)))
