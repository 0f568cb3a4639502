"""Each token policy gives the right ids in config, generation config and tokenizer after a reload."""

from __future__ import annotations

import json

import numpy as np

import pytest
from transformers import AutoTokenizer, GenerationConfig, VisionEncoderDecoderConfig

from conftest import local_recipe
from vedforge.core.errors import RecipeError, TokenPolicyError
from vedforge.pipeline.runner import forge


def _forge_and_reload(tiny_checkpoints, tmp_path, decoder, *overrides):
    out = forge(local_recipe(tiny_checkpoints, "vit", decoder, tmp_path / "out", *overrides)).output_dir
    return (
        VisionEncoderDecoderConfig.from_pretrained(out),
        GenerationConfig.from_pretrained(out),
        AutoTokenizer.from_pretrained(out),
        out,
    )


def _ids(obj):
    return obj.decoder_start_token_id, obj.pad_token_id, obj.eos_token_id


@pytest.mark.parametrize(
    "decoder,start,pad,eos",
    [
        # GPT-2: start = bos, pad falls back to eos.
        ("gpt2", "<|endoftext|>", "<|endoftext|>", "<|endoftext|>"),
        # BERT has no bos: its conventional start [CLS], end [SEP].
        ("bert", "[CLS]", "[PAD]", "[SEP]"),
        ("roberta", "<s>", "<pad>", "</s>"),
        # BART's config names decoder_start_token_id (= </s>).
        ("bart", "</s>", "<pad>", "</s>"),
    ],
)
def test_auto_policy(tiny_checkpoints, tmp_path, decoder, start, pad, eos):
    config, generation, tokenizer, _ = _forge_and_reload(tiny_checkpoints, tmp_path, decoder)
    expected = tuple(tokenizer.convert_tokens_to_ids(t) for t in (start, pad, eos))
    assert _ids(config) == expected
    assert _ids(generation) == expected
    assert tokenizer.pad_token == pad


def test_explicit_policy_takes_ids_and_token_strings(tiny_checkpoints, tmp_path):
    config, generation, tokenizer, _ = _forge_and_reload(
        tiny_checkpoints, tmp_path, "bert",
        "token_policy=explicit", "token_policy.decoder_start_token='[SEP]'", "token_policy.pad_token=0",
        "token_policy.eos_token='[CLS]'",
    )
    expected = (tokenizer.convert_tokens_to_ids("[SEP]"), 0, tokenizer.convert_tokens_to_ids("[CLS]"))
    assert _ids(config) == expected == _ids(generation)


def test_add_pad_adds_a_real_pad_token_and_grows_the_vocabulary(tiny_checkpoints, tmp_path):
    from vedforge.weights.checkpoint import read_state

    base_vocab = json.loads((tiny_checkpoints["gpt2"] / "config.json").read_text())["vocab_size"]
    config, generation, tokenizer, out = _forge_and_reload(tiny_checkpoints, tmp_path, "gpt2", "token_policy=add_pad")
    assert tokenizer.pad_token == "<pad>"
    assert config.pad_token_id == generation.pad_token_id == tokenizer.pad_token_id == base_vocab
    assert config.pad_token_id != config.eos_token_id
    assert config.decoder.vocab_size == len(tokenizer) == base_vocab + 1
    wte = np.asarray(read_state(out, pt_converter=None)[("decoder", "transformer", "wte", "embedding")])
    original = np.asarray(read_state(tiny_checkpoints["gpt2"], pt_converter=None)[("transformer", "wte", "embedding")])
    assert wte.shape[0] == base_vocab + 1
    assert (wte[:base_vocab] == original).all()


def test_add_pad_keeps_a_pad_token_the_tokenizer_already_has(tiny_checkpoints, tmp_path):
    config, _, tokenizer, _ = _forge_and_reload(tiny_checkpoints, tmp_path, "bert", "token_policy=add_pad")
    assert tokenizer.pad_token == "[PAD]" and config.decoder.vocab_size == len(tokenizer)


def test_explicit_policy_with_a_missing_id_lists_it(tiny_checkpoints, tmp_path):
    with pytest.raises(RecipeError, match="token_policy.pad_token"):
        forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "out", "token_policy=explicit",
                           "token_policy.decoder_start_token=0", "token_policy.eos_token=0"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "override,message",
    [
        ("token_policy.pad_token='[NOPE]'", "not in the decoder tokenizer's vocabulary"),
        ("token_policy.decoder_start_token=100000", "out of range"),
    ],
)
def test_bad_tokens_are_named(tiny_checkpoints, tmp_path, override, message):
    with pytest.raises(TokenPolicyError, match=message):
        forge(local_recipe(tiny_checkpoints, "vit", "bert", tmp_path / "out", override))
    assert not (tmp_path / "out").exists()


def test_decoder_without_any_start_token_says_which_setting_to_use(tiny_checkpoints, tmp_path):
    from tests_support import resized_checkpoint

    # A GPT-2 with its bos removed from config and tokenizer: nothing to start from.
    bare = resized_checkpoint(tiny_checkpoints, "gpt2", tmp_path / "bare", bos_token_id=None)
    tok = json.loads((bare / "tokenizer_config.json").read_text())
    tok["bos_token"] = None
    (bare / "tokenizer_config.json").write_text(json.dumps(tok))
    special = json.loads((bare / "special_tokens_map.json").read_text())
    special.pop("bos_token", None)
    (bare / "special_tokens_map.json").write_text(json.dumps(special))
    with pytest.raises(TokenPolicyError, match="token_policy.decoder_start_token"):
        forge(local_recipe({**tiny_checkpoints, "bare": bare}, "vit", "bare", tmp_path / "out"))


def test_unquoted_bracket_token_gets_a_quoting_hint(tiny_checkpoints, tmp_path):
    with pytest.raises(RecipeError, match="quote a bracketed token"):
        forge(local_recipe(tiny_checkpoints, "vit", "bert", tmp_path / "out", "token_policy.eos_token=[SEP]"))
