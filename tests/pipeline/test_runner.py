"""End-to-end forges of every supported encoder family x decoder family, from real checkpoint files."""

from __future__ import annotations

import pytest

from conftest import FLAX, FLAX_ONLY_REASON

# Flax-only: checkpoints saved by transformers' Flax classes, or the Flax model itself.
if not FLAX:
    pytest.skip(FLAX_ONLY_REASON, allow_module_level=True)

import json

import numpy as np
from flax.traverse_util import flatten_dict

from conftest import DECODERS, ENCODERS, local_recipe
from vedforge.weights.checkpoint import read_state
from vedforge.pipeline.runner import forge

PIXELS = np.random.RandomState(0).rand(1, 3, 32, 32).astype(np.float32)


def _load(directory, decoder: str):
    import transformers

    from vedforge import compat

    # GPT-2 and BART generate with the stock class; the BERT family needs the keyword fix.
    cls = transformers.FlaxVisionEncoderDecoderModel if decoder in ("gpt2", "bart") else compat.FlaxVisionEncoderDecoderModel
    compat.register_clip_vision()
    return cls.from_pretrained(directory)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("encoder", ENCODERS)
def test_pairing_forges_reloads_and_generates(tiny_checkpoints, tmp_path, encoder, decoder):
    from transformers import AutoImageProcessor, AutoTokenizer

    result = forge(local_recipe(tiny_checkpoints, encoder, decoder, tmp_path / "out"))
    out = result.output_dir
    model = _load(out, decoder)
    processor = AutoImageProcessor.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.pad_token_id == model.config.pad_token_id

    image = (np.random.RandomState(1).rand(40, 48, 3) * 255).astype(np.uint8)
    pixels = processor(image, return_tensors="np").pixel_values
    sequences = np.asarray(model.generate(pixels, max_length=5).sequences)
    assert sequences.shape[0] == 1 and 1 < sequences.shape[1] <= 5
    assert sequences[0, 0] == model.config.decoder_start_token_id
    assert np.all(sequences < model.config.decoder.vocab_size)

    manifest = json.loads((out / "vedforge_manifest.json").read_text())
    assert manifest == result.manifest
    assert manifest["parameters"]["total"] == sum(x.size for x in flatten_dict(model.params).values())


@pytest.mark.parametrize("encoder,decoder", [("vit", "gpt2"), ("clip", "bart"), ("dinov2", "bert")])
def test_checkpoint_tensors_come_through_bit_identical(tiny_checkpoints, tmp_path, encoder, decoder):
    from vedforge.architectures.cross_attention.assembly import _align

    result = forge(local_recipe(tiny_checkpoints, encoder, decoder, tmp_path / "out"))
    forged = read_state(result.output_dir, pt_converter=None)
    for part in ("encoder", "decoder"):
        original = read_state(tiny_checkpoints[encoder if part == "encoder" else decoder], pt_converter=None)
        sub = {k[1:]: v for k, v in forged.items() if k[0] == part}
        aligned = _align(original, set(sub))
        new = set(result.manifest["new_tensors"].get(part, []))
        compared = 0
        for path, value in sub.items():
            name = "/".join((part,) + path)
            if name in new:
                assert path not in aligned
                continue
            source = aligned.get(path)
            if source is None:  # BART's token embeddings come from the shared table
                source = original[("shared", "embedding")] if path[-2] == "embed_tokens" else None
            assert source is not None, name
            assert source.dtype == value.dtype and np.array_equal(source, value), name
            compared += 1
        assert compared > 10


def test_bart_decoder_takes_token_embeddings_from_the_shared_table(tiny_checkpoints, tmp_path):
    result = forge(local_recipe(tiny_checkpoints, "vit", "bart", tmp_path / "out"))
    forged = read_state(result.output_dir, pt_converter=None)
    shared = read_state(tiny_checkpoints["bart"], pt_converter=None)[("shared", "embedding")]
    assert np.array_equal(forged[("decoder", "model", "decoder", "embed_tokens", "embedding")], shared)
    assert not any("embed_tokens" in name for name in result.manifest["new_tensors"].get("decoder", []))


def test_new_cross_attention_is_seeded_by_the_recipe(tiny_checkpoints, tmp_path):
    runs = {
        name: forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / name, f"seed={seed}"))
        for name, seed in (("a", 7), ("b", 7), ("c", 8))
    }
    files = {name: (r.output_dir / "flax_model.msgpack").read_bytes() for name, r in runs.items()}
    assert files["a"] == files["b"]
    assert files["a"] != files["c"]
    new = runs["a"].manifest["new_tensors"]["decoder"]
    assert any("crossattention" in n for n in new) and any("ln_cross_attn" in n for n in new)
    assert runs["a"].manifest["parameters"]["new"] > 0


def test_projection_added_when_hidden_sizes_differ(tiny_checkpoints, tmp_path):
    from tests_support import resized_checkpoint

    wide = resized_checkpoint(tiny_checkpoints, "gpt2", tmp_path / "wide", n_embd=48)
    cfg = local_recipe({**tiny_checkpoints, "wide": wide}, "vit", "wide", tmp_path / "out")
    result = forge(cfg)
    assert result.manifest["new_tensors"]["projection"] == ["enc_to_dec_proj/bias", "enc_to_dec_proj/kernel"]
    model = _load(result.output_dir, "gpt2")
    assert model.generate(PIXELS, max_length=4).sequences.shape == (1, 4)


def test_artifact_directory_contents(tiny_checkpoints, tmp_path):
    result = forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "out"))
    out = result.output_dir
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    for required in ("config.json", "generation_config.json", "flax_model.msgpack", "preprocessor_config.json",
                     "tokenizer.json", "tokenizer_config.json", "README.md", "vedforge_manifest.json", ".hydra/config.yaml"):
        assert required in names
    manifest = result.manifest
    assert set(manifest["files"]) == {n for n in names if not n.startswith(".hydra/")} - {"vedforge_manifest.json"}
    from vedforge.pipeline.artifacts import sha256_file

    for name, entry in manifest["files"].items():
        assert sha256_file(out / name) == entry["sha256"]
    for key in ("transformers", "jax", "flax", "vedforge"):
        assert manifest["versions"][key] != "not installed"
    assert manifest["inputs"]["encoder"]["path"] == str(tiny_checkpoints["vit"])
    # The stage times describe the run, not the model: the result and the log hold them, not the manifest.
    assert "timings_s" not in manifest
    assert {"plan", "fetch", "load", "assemble", "write_weights", "write", "total"} <= set(result.timings_s)
    card = (out / "README.md").read_text()
    assert "## Recipe" in card and str(tiny_checkpoints["gpt2"]) in card
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize("decoder", ["gpt2", "bart"])
def test_stock_generate_warns_about_nothing(tiny_checkpoints, tmp_path, decoder, caplog):
    import logging
    import warnings

    import transformers

    out = forge(local_recipe(tiny_checkpoints, "vit", decoder, tmp_path / "out")).output_dir
    model = transformers.FlaxVisionEncoderDecoderModel.from_pretrained(out)
    transformers.utils.logging.set_verbosity_warning()
    transformers.utils.logging.enable_propagation()
    try:
        with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
            warnings.simplefilter("always")
            model.generate(PIXELS, max_length=4)
    finally:
        transformers.utils.logging.disable_propagation()
        transformers.utils.logging.set_verbosity_error()
    messages = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "generation" in m.lower() or "modified the pretrained" in m], messages


def test_compat_class_is_what_makes_bert_generate(tiny_checkpoints, tmp_path):
    import transformers

    from vedforge import compat

    out = forge(local_recipe(tiny_checkpoints, "vit", "bert", tmp_path / "out")).output_dir
    with pytest.raises(Exception, match="reshape"):
        transformers.FlaxVisionEncoderDecoderModel.from_pretrained(out).generate(PIXELS, max_length=4)
    fixed = compat.FlaxVisionEncoderDecoderModel.from_pretrained(out)
    assert fixed.generate(PIXELS, max_length=4).sequences.shape == (1, 4)


def _decoder_logits(tiny_checkpoints, out, ids):
    import transformers

    forged = transformers.FlaxVisionEncoderDecoderModel.from_pretrained(out)
    standalone = transformers.FlaxGPT2LMHeadModel.from_pretrained(tiny_checkpoints["gpt2"])
    return (np.asarray(forged(PIXELS, decoder_input_ids=ids).logits), np.asarray(standalone(ids).logits))


def test_zero_cross_attention_leaves_the_language_model_unchanged(tiny_checkpoints, tmp_path):
    ids = np.array([[5, 17, 42, 99, 3]], dtype=np.int32)
    zero = forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "zero", "cross_attention.init=zero"))
    forged, standalone = _decoder_logits(tiny_checkpoints, zero.output_dir, ids)
    np.testing.assert_allclose(forged, standalone, atol=1e-5, rtol=1e-5)
    # With random cross-attention the image does change the logits.
    random = forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "random"))
    forged_random, _ = _decoder_logits(tiny_checkpoints, random.output_dir, ids)
    assert np.abs(forged_random - standalone).max() > 1e-3


def test_zero_cross_attention_is_refused_where_it_cannot_be_exact(tiny_checkpoints, tmp_path):
    from vedforge.core.errors import VedforgeError

    with pytest.raises(VedforgeError, match="cross_attention.init=zero cannot keep a 'bert'"):
        forge(local_recipe(tiny_checkpoints, "vit", "bert", tmp_path / "out", "cross_attention.init=zero"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("encoder,decoder", [(e, d) for e in ENCODERS for d in DECODERS])
def test_layer_replicated_shapes_equal_the_full_trace(encoder, decoder):
    from transformers import AutoConfig, VisionEncoderDecoderConfig

    from vedforge.architectures.cross_attention.assembly import target_shapes, traced_shapes
    from vedforge.core.resources import assets_dir

    enc = AutoConfig.from_pretrained(assets_dir() / f"{encoder}_tiny")
    enc = enc.vision_config if encoder == "clip" else enc
    dec = AutoConfig.from_pretrained(assets_dir() / f"{decoder}_tiny", is_decoder=True, add_cross_attention=True)
    # Deeper than the tiny defaults, and unequal, so a wrong layer count per part would show.
    enc.num_hidden_layers = 3
    setattr(dec, "decoder_layers" if decoder == "bart" else "num_hidden_layers", 4)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    fast, full = target_shapes(config), traced_shapes(config)
    assert fast.keys() == full.keys()
    assert all(fast[k].shape == full[k].shape and fast[k].dtype == full[k].dtype for k in full)
