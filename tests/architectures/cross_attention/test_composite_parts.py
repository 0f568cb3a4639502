"""A part from any checkpoint that holds it: the encoder or the decoder of a
VisionEncoderDecoderModel checkpoint (TrOCR, Donut) and the tower of a LLaVA one pair with new
parts (backend=pt), bit for bit, with where they came from in the manifest."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from conftest import compose_recipe, needs_flax  # noqa: E402
from vedforge.core.errors import UnsupportedModelError  # noqa: E402
from vedforge.pipeline.runner import forge  # noqa: E402


def _forge(tmp_path, name, *overrides):
    return forge(compose_recipe([*overrides, f"output.dir={tmp_path / name}"])).output_dir


def _ved(directory):
    from transformers import VisionEncoderDecoderModel

    model, info = VisionEncoderDecoderModel.from_pretrained(directory, output_loading_info=True)
    assert {k: v for k, v in info.items() if v} == {}, info
    return model


def _same(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name


def _inputs(directory) -> dict:
    return json.loads((directory / "vedforge_manifest.json").read_text())["inputs"]


@pytest.fixture(scope="module")
def donut_like(tmp_path_factory):
    """A Donut-shaped VisionEncoderDecoderModel checkpoint: a Swin encoder and an MBart decoder."""
    root = tmp_path_factory.mktemp("donut")
    return forge(compose_recipe(["backend=pt", "encoder=swin_tiny", "decoder=mbart_tiny", "seed=3",
                                 f"output.dir={root / 'ved'}"])).output_dir


def test_the_decoder_of_a_vision_encoder_decoder_checkpoint_pairs_with_a_new_encoder(donut_like, tmp_path):
    out = _forge(tmp_path, "out", "backend=pt", "encoder=deit_tiny", "decoder=any",
                 f"decoder.name_or_path={donut_like}")
    _same(_ved(out).decoder.state_dict(), _ved(donut_like).decoder.state_dict())
    assert _inputs(out)["decoder"]["taken_from"] == "decoder"
    assert _inputs(out)["decoder"]["model_type"] == "mbart"


def test_the_encoder_of_a_vision_encoder_decoder_checkpoint_pairs_with_a_new_decoder(donut_like, tmp_path):
    out = _forge(tmp_path, "out", "backend=pt", "encoder=any", f"encoder.name_or_path={donut_like}",
                 "decoder=gpt2_tiny")
    _same(_ved(out).encoder.state_dict(), _ved(donut_like).encoder.state_dict())
    assert _inputs(out)["encoder"]["taken_from"] == "encoder"


# A decoder with a Flax port and one without: the tower is read by the Flax-layout engine and by
# the PyTorch view alike.
@pytest.mark.parametrize("decoder", ["gpt2_tiny", "trocr_tiny"])
def test_the_tower_of_a_llava_checkpoint_becomes_a_cross_attention_encoder(tmp_path, decoder):
    from transformers import LlavaForConditionalGeneration

    llava = _forge(tmp_path, "llava", "recipe=tiny_prefix_smoke")
    out = _forge(tmp_path, "out", "backend=pt", "encoder=any", f"encoder.name_or_path={llava}", f"decoder={decoder}")
    _same(_ved(out).encoder.state_dict(), LlavaForConditionalGeneration.from_pretrained(llava).model.vision_tower.state_dict())
    assert _inputs(out)["encoder"]["taken_from"] == "vision_config"


@needs_flax
def test_a_whole_model_as_a_flax_part_is_refused_with_the_way_that_works(donut_like, tmp_path):
    with pytest.raises(UnsupportedModelError, match="backend=pt"):
        _forge(tmp_path, "out", "backend=flax", "encoder=vit_tiny", "decoder=any", f"decoder.name_or_path={donut_like}")


def test_the_decoder_of_an_mbart_checkpoint_pairs_with_a_vision_encoder(tmp_path):
    """A sequence-to-sequence MBart checkpoint gives its decoder (as MBartForCausalLM holds it);
    its encoder stays behind, listed as unused."""
    from transformers import AutoConfig, MBartForConditionalGeneration

    from vedforge.core.resources import assets_dir

    config = AutoConfig.from_pretrained(assets_dir() / "mbart_tiny")
    torch.manual_seed(0)
    MBartForConditionalGeneration(config).save_pretrained(tmp_path / "mbart")
    for item in (assets_dir() / "mbart_tiny").iterdir():
        if item.name != "config.json":
            (tmp_path / "mbart" / item.name).write_bytes(item.read_bytes())
    out = _forge(tmp_path, "out", "encoder=vit_tiny", "decoder=any", f"decoder.name_or_path={tmp_path / 'mbart'}")
    from safetensors.torch import load_file

    stored = load_file(tmp_path / "mbart" / "model.safetensors")
    got = _ved(out).decoder.state_dict()
    # The decoder's token embeddings are stored once, as the shared table (tied in the checkpoint).
    assert torch.equal(got["model.decoder.embed_tokens.weight"], stored["model.shared.weight"])
    decoder_tensors = [name for name in stored if name.startswith("model.decoder.")]
    assert decoder_tensors and all(torch.equal(got[name], stored[name]) for name in decoder_tensors)
    manifest = json.loads((out / "vedforge_manifest.json").read_text())
    assert manifest["backend"] == "pt" and not manifest["new_tensors"]
