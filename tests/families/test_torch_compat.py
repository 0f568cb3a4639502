"""vedforge.torch_compat: stock PyTorch VisionEncoderDecoderModel fails with ConvNeXt and DETR, the shim runs them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")

import numpy as np  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoImageProcessor,
    AutoTokenizer,
    VisionEncoderDecoderConfig,
)

from vedforge import torch_compat  # noqa: E402
from vedforge.core.resources import assets_dir  # noqa: E402

STOCK = transformers.VisionEncoderDecoderModel
# transformers 5 folded the image-to-text pipeline into image-text-to-text, which wants a
# multimodal processor; there the model is driven through generate() instead.
HAS_IMAGE_TO_TEXT = int(transformers.__version__.split(".")[0]) < 5
HIDDEN = 32
# Encoder tokens for one 32x32 image: a 4x4 map or grid, DeiT's 16 patches plus class and
# distillation tokens, DETR's 10 object queries, SigLIP's 16 patches (no class token).
TOKENS = {"swin": 16, "deit": 18, "convnext": 16, "detr": 10, "siglip": 16}


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8), "RGB"),
        Image.fromarray(rng.integers(0, 256, size=(48, 40, 3), dtype=np.uint8), "RGB"),
    ]


def _pixels(name: str) -> dict:
    processor = AutoImageProcessor.from_pretrained(assets_dir() / f"{name}_tiny")
    return dict(processor(images=_images(), return_tensors="pt"))


def _config(name: str, *, prepare: bool = True, **decoder_changes) -> VisionEncoderDecoderConfig:
    encoder = AutoConfig.from_pretrained(assets_dir() / f"{name}_tiny")
    # A two-tower checkpoint (SigLIP) pairs through its vision tower, as vedforge takes it.
    encoder = getattr(encoder, "vision_config", encoder)
    if prepare:
        torch_compat.prepare_encoder_config(encoder)
    decoder = AutoConfig.from_pretrained(
        assets_dir() / "gpt2_tiny", is_decoder=True, add_cross_attention=True, **decoder_changes
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = decoder.bos_token_id
    config.pad_token_id = decoder.eos_token_id
    return config


def _build(cls, name: str, **kwargs):
    torch.manual_seed(0)
    return cls(_config(name, **kwargs)).eval()


def _decoder_ids() -> torch.Tensor:
    return torch.tensor([[511, 5, 7], [511, 9, 11]])


def _saved(tmp_path, name: str):
    """A captioner saved as a user would: weights, config, image processor and tokenizer."""
    path = tmp_path / name
    _build(torch_compat.VisionEncoderDecoderModel, name).save_pretrained(path)
    AutoImageProcessor.from_pretrained(assets_dir() / f"{name}_tiny").save_pretrained(path)
    AutoTokenizer.from_pretrained(assets_dir() / "gpt2_tiny").save_pretrained(path)
    return path


@pytest.fixture
def stock(monkeypatch):
    """transformers' class as shipped, even after another test module's install()."""
    monkeypatch.setattr(STOCK, "__init__", torch_compat._STOCK_INIT)
    monkeypatch.setattr(STOCK, "forward", torch_compat._STOCK_FORWARD)
    return STOCK


@pytest.fixture
def installed(monkeypatch):
    """install(), undone afterwards so later tests see the stock class."""
    monkeypatch.setattr(STOCK, "__init__", STOCK.__init__)
    monkeypatch.setattr(STOCK, "forward", STOCK.forward)
    torch_compat.install()


# --- the gaps, shown on the stock class -----------------------------------------------------


def test_stock_class_cannot_build_convnext_without_a_hidden_size(stock):
    with pytest.raises(AttributeError, match="hidden_size"):
        _build(stock, "convnext", prepare=False)


def test_stock_class_cannot_run_convnext_even_with_a_hidden_size(stock):
    model = _build(stock, "convnext")
    # 4.x: ConvNextModel.forward rejects output_attentions. 5.x takes it, and the 4-D map
    # then reaches the decoder's cross-attention.
    with torch.no_grad(), pytest.raises((TypeError, RuntimeError)):
        model(**_pixels("convnext"), decoder_input_ids=_decoder_ids())
    with pytest.raises((TypeError, RuntimeError)):
        model.generate(**_pixels("convnext"), max_new_tokens=2)
    # And past that, the memory it would hand the decoder is a feature map, not a sequence.
    assert model.encoder(**_pixels("convnext")).last_hidden_state.shape == (2, HIDDEN, 4, 4)


def test_stock_class_cannot_run_detr(stock):
    model = _build(stock, "detr")
    with torch.no_grad(), pytest.raises(AttributeError, match="hidden_states"):
        model(**_pixels("detr"), decoder_input_ids=_decoder_ids())
    with pytest.raises(AttributeError, match="hidden_states"):
        model.generate(**_pixels("detr"), max_new_tokens=2)


@pytest.mark.parametrize("name", ["swin", "deit", "siglip"])
def test_stock_class_runs_swin_deit_and_siglip_and_the_shim_changes_nothing(stock, name):
    assert not torch_compat.needs_compat(AutoConfig.from_pretrained(assets_dir() / f"{name}_tiny").model_type)
    reference, shim = _build(stock, name), _build(torch_compat.VisionEncoderDecoderModel, name)
    pixels = _pixels(name)
    with torch.no_grad():
        expected = reference(**pixels, decoder_input_ids=_decoder_ids())
        got = shim(**pixels, decoder_input_ids=_decoder_ids())
    assert expected.encoder_last_hidden_state.shape == (2, TOKENS[name], HIDDEN)
    assert torch.equal(got.logits, expected.logits)
    assert torch.equal(got.encoder_last_hidden_state, expected.encoder_last_hidden_state)
    assert torch.equal(shim.generate(**pixels, max_new_tokens=3), reference.generate(**pixels, max_new_tokens=3))


# --- the pieces ------------------------------------------------------------------------------


def test_needs_compat_names_convnext_and_detr():
    assert torch_compat.needs_compat("convnext") and torch_compat.needs_compat("detr")
    assert not any(torch_compat.needs_compat(t) for t in ("vit", "swin", "deit", "beit", "dinov2"))


def test_prepare_encoder_config_adds_the_last_stage_width_and_it_survives_a_reload(tmp_path):
    config = AutoConfig.from_pretrained(assets_dir() / "convnext_tiny")
    assert not hasattr(config, "hidden_size")
    torch_compat.prepare_encoder_config(config)
    assert config.hidden_size == config.hidden_sizes[-1] == HIDDEN
    config.save_pretrained(tmp_path / "encoder")
    assert AutoConfig.from_pretrained(tmp_path / "encoder").hidden_size == HIDDEN

    combined = _config("convnext", n_embd=48)
    combined.save_pretrained(tmp_path / "combined")
    assert AutoConfig.from_pretrained(tmp_path / "combined").encoder.hidden_size == HIDDEN
    # And it sizes the projection the stock class adds when the widths differ.
    model = torch_compat.VisionEncoderDecoderModel(combined)
    assert tuple(model.enc_to_dec_proj.weight.shape) == (48, HIDDEN)


def test_prepare_encoder_config_leaves_configs_with_a_hidden_size_alone():
    for name in ("swin", "deit", "detr", "vit"):
        config = AutoConfig.from_pretrained(assets_dir() / f"{name}_tiny")
        before = config.to_dict()
        torch_compat.prepare_encoder_config(config)
        assert config.to_dict() == before
        assert config.hidden_size == HIDDEN


def test_encoder_memory_flattens_feature_maps_row_by_row():
    feature_map = torch.arange(2 * 3 * 2 * 4, dtype=torch.float32).reshape(2, 3, 2, 4)
    outputs = transformers.modeling_outputs.BaseModelOutputWithPoolingAndNoAttention(
        last_hidden_state=feature_map, pooler_output=feature_map.mean((2, 3)), hidden_states=(feature_map,)
    )
    memory = torch_compat.encoder_memory(outputs)
    assert isinstance(memory, transformers.modeling_outputs.BaseModelOutput)
    assert memory.last_hidden_state.shape == (2, 8, 3)
    # Token 5 is row 1, column 1 of the map.
    assert torch.equal(memory.last_hidden_state[:, 5], feature_map[:, :, 1, 1])
    assert memory.hidden_states[0].shape == (2, 8, 3)
    assert memory.attentions is None
    assert torch.equal(torch_compat.encoder_memory((feature_map,)).last_hidden_state, memory.last_hidden_state)


def test_encoder_memory_takes_detrs_query_states_and_decoder_fields():
    model = _build(torch_compat.VisionEncoderDecoderModel, "detr")
    with torch.no_grad():
        outputs = model.encoder(**_pixels("detr"), output_hidden_states=True, output_attentions=True)
    memory = torch_compat.encoder_memory(outputs)
    assert memory.last_hidden_state is outputs.last_hidden_state
    assert memory.last_hidden_state.shape == (2, TOKENS["detr"], HIDDEN)
    assert memory.hidden_states == outputs.decoder_hidden_states
    assert memory.attentions == outputs.decoder_attentions


# --- the fixed class -------------------------------------------------------------------------


def _check_runs(model, name: str) -> None:
    pixels = _pixels(name)
    with torch.no_grad():
        out = model(**pixels, decoder_input_ids=_decoder_ids(), output_hidden_states=True)
        # generate() hands the forward the encoder's raw output instead of pixels.
        raw = model.encoder(**pixels)
        given = model(encoder_outputs=raw, decoder_input_ids=_decoder_ids())
        as_tuple = model(**pixels, decoder_input_ids=_decoder_ids(), return_dict=False)
    assert out.logits.shape == (2, 3, model.config.decoder.vocab_size)
    assert out.encoder_last_hidden_state.shape == (2, TOKENS[name], HIDDEN)
    assert out.encoder_hidden_states is not None
    assert torch.allclose(given.logits, out.logits)
    assert torch.equal(as_tuple[0], out.logits)

    for beams in (1, 2):
        generated = model.generate(**pixels, max_new_tokens=3, num_beams=beams)
        assert generated.shape[0] == 2 and generated.shape[1] >= 2


@pytest.mark.parametrize("name", ["convnext", "detr"])
def test_subclass_runs_forward_and_generate(name):
    _check_runs(_build(torch_compat.VisionEncoderDecoderModel, name, prepare=False), name)


@pytest.mark.parametrize("name", ["convnext", "detr"])
def test_install_fixes_transformers_own_class(installed, name):
    torch_compat.install()  # a second call changes nothing
    assert STOCK.forward is torch_compat.VisionEncoderDecoderModel.forward
    _check_runs(_build(STOCK, name, prepare=False), name)


@pytest.mark.parametrize("name", ["convnext", "detr"])
def test_saved_model_reloads_and_captions_through_the_pipeline(installed, tmp_path, name):
    path = _saved(tmp_path, name)
    reloaded = STOCK.from_pretrained(path).eval()
    with torch.no_grad():
        logits = reloaded(**_pixels(name), decoder_input_ids=_decoder_ids()).logits
    assert logits.shape == (2, 3, reloaded.config.decoder.vocab_size)

    if HAS_IMAGE_TO_TEXT:
        captioner = transformers.pipeline("image-to-text", model=str(path), max_new_tokens=4)
        captions = [c[0]["generated_text"] for c in captioner(_images())]
    else:
        processor, tokenizer = AutoImageProcessor.from_pretrained(path), AutoTokenizer.from_pretrained(path)
        ids = reloaded.generate(**processor(images=_images(), return_tensors="pt"), max_new_tokens=4)
        captions = tokenizer.batch_decode(ids, skip_special_tokens=True)
    assert len(captions) == 2
    assert all(isinstance(c, str) and c for c in captions)


def test_works_where_only_pytorch_is_installed(tmp_path):
    """Without flax or jax importable, install() and transformers' own loaders run a saved ConvNeXt captioner."""
    path = _saved(tmp_path, "convnext")
    script = textwrap.dedent(
        f"""
        import sys
        for name in ("flax", "jax", "jaxlib", "optax"):
            sys.modules[name] = None  # import fails, and transformers sees them as absent
        from PIL import Image
        import transformers
        from vedforge import torch_compat
        torch_compat.install()
        image = Image.new("RGB", (40, 32), "red")
        if {HAS_IMAGE_TO_TEXT}:
            captioner = transformers.pipeline("image-to-text", model={str(path)!r}, max_new_tokens=3)
            caption = captioner(image)[0]["generated_text"]
        else:
            model = transformers.VisionEncoderDecoderModel.from_pretrained({str(path)!r})
            pixels = transformers.AutoImageProcessor.from_pretrained({str(path)!r})(image, return_tensors="pt")
            caption = transformers.AutoTokenizer.from_pretrained({str(path)!r}).decode(
                model.generate(**pixels, max_new_tokens=3)[0], skip_special_tokens=True
            )
        print(caption != "")
        assert not [m for m in sys.modules if m.split(".")[0] in ("flax", "jax") and sys.modules[m] is not None]
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("True")
