"""After a reload, the tokenizer, config and generation config name the same special tokens, for
every decoder family and every token policy: what Seq2SeqTrainer compares before training and
rewrites (with a warning) where they differ, and what training scripts read from the tokenizer."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer, GenerationConfig, VisionEncoderDecoderConfig

from conftest import DECODERS, local_recipe
from vedforge.pipeline.runner import forge

# Each family's conventional tokens, as strings: the explicit policy's documented use.
EXPLICIT_TOKENS = {
    "gpt2": ("<|endoftext|>", "<|endoftext|>", "<|endoftext|>"),
    "bert": ("[CLS]", "[PAD]", "[SEP]"),
    "roberta": ("<s>", "<pad>", "</s>"),
    "bart": ("</s>", "<pad>", "</s>"),
}


def _policy_overrides(policy: str, decoder: str, tokenizer_dir) -> list[str]:
    if policy in ("auto", "add_pad"):
        return [f"token_policy={policy}"]
    start, pad, eos = EXPLICIT_TOKENS[decoder]
    if policy == "explicit_ids":
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        start, pad, eos = (tokenizer.convert_tokens_to_ids(t) for t in (start, pad, eos))
        return ["token_policy=explicit", f"token_policy.decoder_start_token={start}",
                f"token_policy.pad_token={pad}", f"token_policy.eos_token={eos}"]
    return ["token_policy=explicit", f"token_policy.decoder_start_token='{start}'",
            f"token_policy.pad_token='{pad}'", f"token_policy.eos_token='{eos}'"]


def _check_agreement(tiny_checkpoints, tmp_path, decoder: str, policy: str) -> None:
    out = forge(local_recipe(tiny_checkpoints, "vit", decoder, tmp_path / "out",
                             *_policy_overrides(policy, decoder, tiny_checkpoints[decoder]))).output_dir
    config = VisionEncoderDecoderConfig.from_pretrained(out)
    generation = GenerationConfig.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    for name in ("bos", "eos", "pad"):
        ids = {
            "tokenizer": getattr(tokenizer, f"{name}_token_id"),
            "config": getattr(config, f"{name}_token_id"),
            "generation_config": getattr(generation, f"{name}_token_id"),
        }
        # Equal, None included: Seq2SeqTrainer's own comparison.
        assert len(set(ids.values())) == 1, (decoder, policy, name, ids)
    assert config.decoder_start_token_id is not None
    assert config.decoder_start_token_id == generation.decoder_start_token_id
    # Every decoder ends its captions with an eos the tokenizer can write out.
    assert tokenizer.eos_token is not None and config.eos_token_id is not None
    if policy.startswith("explicit"):
        start, pad, eos = EXPLICIT_TOKENS[decoder]
        assert (tokenizer.convert_ids_to_tokens(config.decoder_start_token_id), tokenizer.pad_token,
                tokenizer.eos_token) == (start, pad, eos)


@pytest.mark.parametrize("policy", ["auto", "explicit_strings"])
@pytest.mark.parametrize("decoder", DECODERS)
def test_special_tokens_agree_after_reload(tiny_checkpoints, tmp_path, decoder, policy):
    _check_agreement(tiny_checkpoints, tmp_path, decoder, policy)


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["add_pad", "explicit_ids"])
@pytest.mark.parametrize("decoder", DECODERS)
def test_special_tokens_agree_after_reload_other_policies(tiny_checkpoints, tmp_path, decoder, policy):
    _check_agreement(tiny_checkpoints, tmp_path, decoder, policy)


def test_bert_tokenizer_ends_with_sep_as_config_says(tiny_checkpoints, tmp_path):
    # A training script appends tokenizer.eos_token to each caption; None there fails the script.
    out = forge(local_recipe(tiny_checkpoints, "vit", "bert", tmp_path / "out")).output_dir
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.eos_token == "[SEP]"
    assert "a caption " + tokenizer.eos_token == "a caption [SEP]"


# architecture=prefix: a LLaVA model's text config, generation config and tokenizer name the same
# bos and pad, the tokenizer's eos is among the generation config's, and <image> is config.image_token_id.
@pytest.mark.parametrize("decoder", ["llama_tiny", "qwen2_tiny", "gemma_tiny"])
def test_prefix_token_ids_agree_across_config_generation_config_and_tokenizer(tmp_path, decoder):
    pytest.importorskip("torch")
    from transformers import AutoTokenizer, GenerationConfig, LlavaConfig

    from conftest import compose_recipe

    out = forge(compose_recipe(["architecture=prefix", "backend=pt", f"decoder={decoder}",
                                f"output.dir={tmp_path / 'out'}"])).output_dir
    config, generation = LlavaConfig.from_pretrained(out), GenerationConfig.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    text = config.text_config
    for name in ("bos", "pad"):
        ids = {getattr(tokenizer, f"{name}_token_id"), getattr(text, f"{name}_token_id"), getattr(generation, f"{name}_token_id")}
        assert len(ids) == 1, (name, ids)
    eos = generation.eos_token_id if isinstance(generation.eos_token_id, list) else [generation.eos_token_id]
    assert tokenizer.eos_token_id == text.eos_token_id and tokenizer.eos_token_id in eos
    assert config.pad_token_id == tokenizer.pad_token_id and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.convert_tokens_to_ids("<image>") == config.image_token_id
    assert len(tokenizer) <= text.vocab_size
    assert tokenizer("<image><image>", add_special_tokens=False)["input_ids"] == [config.image_token_id] * 2
