"""The tensor names vedforge writes are the names transformers 4.57 saves, under 4.57 and under 5.x."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from conftest import TRANSFORMERS_5  # noqa: E402
from vedforge.core.resources import assets_dir  # noqa: E402
from vedforge.weights.saved_names import buffers_saved_by_4_57, saved_names  # noqa: E402

RECORDED = json.loads((Path(__file__).parent.parent / "data" / "saved_names_4_57.json").read_text())


def _model(name: str):
    from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, VisionEncoderDecoderConfig,
                              VisionEncoderDecoderModel)

    if name.startswith("ved_"):
        encoder = _model(name.split("_")[1]).config
        decoder = AutoConfig.from_pretrained(assets_dir() / "gpt2_tiny")
        decoder.is_decoder, decoder.add_cross_attention = True, True
        with torch.device("meta"):
            return VisionEncoderDecoderModel(VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder))
    if name.endswith("_full"):
        with torch.device("meta"):
            return AutoModel.from_config(AutoConfig.from_pretrained(assets_dir() / f"{name[:-5]}_tiny"))
    config = AutoConfig.from_pretrained(assets_dir() / f"{name}_tiny")
    if name in ("clip", "siglip"):
        config = config.vision_config
    cls = AutoModelForCausalLM if name in ("gpt2", "bert", "roberta", "bart", "llama", "qwen2", "gemma") else AutoModel
    with torch.device("meta"):
        return cls.from_config(config)


@pytest.mark.parametrize("name", sorted(RECORDED["names"]))
def test_saved_names_are_the_names_transformers_4_57_saves(name):
    recorded = set(RECORDED["names"][name])
    model = _model(name)
    renamed = saved_names(model)
    assert set(renamed) == set(model.state_dict())
    # transformers 5 no longer saves Swin's relative_position_index buffers; vedforge writes them as 4.57 did.
    kept = buffers_saved_by_4_57(model, renamed)
    assert bool(kept) == (TRANSFORMERS_5 and "swin" in name)
    assert set(renamed.values()) | set(kept) == recorded


def test_saved_names_are_the_identity_where_transformers_does_not_rename():
    model = _model("gpt2")
    assert all(saved == name for name, saved in saved_names(model).items())


def test_llava_target_names_are_the_llava_hf_layout():
    from transformers import AutoConfig, LlavaConfig

    from vedforge.architectures.prefix.tensors import target_specs

    vision = AutoConfig.from_pretrained(assets_dir() / "vit_tiny")
    text = AutoConfig.from_pretrained(assets_dir() / "llama_tiny")
    names = set(target_specs(LlavaConfig(vision_config=vision, text_config=text)))
    assert "vision_tower.encoder.layer.0.attention.attention.query.weight" in names
    assert "language_model.model.layers.0.self_attn.q_proj.weight" in names
    assert "multi_modal_projector.linear_1.weight" in names
    assert not any(n.startswith(("model.", "vision_tower.layers.")) for n in names)
