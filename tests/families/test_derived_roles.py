"""Records derived from transformers' classes for backend=pt, and refusals that say what transformers showed."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from transformers import AutoConfig  # noqa: E402

from vedforge.core.errors import UnsupportedModelError  # noqa: E402
from vedforge.families.registry import FAMILIES  # noqa: E402
from vedforge.families.roles import decoder_family, encoder_family, init_std, known_family  # noqa: E402


def _refusal(check, model_type: str, backend: str = "pt") -> str:
    with pytest.raises(UnsupportedModelError) as refused:
        check(AutoConfig.for_model(model_type), "'here'", backend)
    message = str(refused.value)
    assert "\n" not in message and f"'{model_type}'" in message and "not among" not in message
    return message


@pytest.mark.parametrize("model_type", ("mbart", "trocr", "marian", "pegasus", "camembert", "ernie",
                                        "bert-generation", "xglm"))
def test_a_causal_lm_with_cross_attention_gets_a_derived_record(model_type):
    family = decoder_family(AutoConfig.for_model(model_type), "'here'", "pt")
    assert model_type not in FAMILIES and family.model_type == model_type and family.role == "decoder"
    assert family.built_with == "pytorch" and family.cross_attention
    assert known_family(model_type) == family


def test_the_derived_init_std_is_the_one_the_config_names():
    assert init_std(AutoConfig.for_model("mbart", init_std=0.05)) == 0.05
    assert init_std(AutoConfig.for_model("electra", initializer_range=0.03)) == 0.03


def test_electra_is_assembled_from_the_pytorch_view_and_refused_by_flax_for_its_port():
    assert decoder_family(AutoConfig.for_model("electra"), "'here'", "pt").built_with == "pytorch"
    assert "fails inside its cross-attention" in _refusal(decoder_family, "electra", "flax")


@pytest.mark.parametrize("model_type, phrase", [
    ("t5", "sequence-to-sequence model with no causal-LM class"),
    ("distilbert", "has no causal-LM class"),
    ("llama", "without cross-attention layers (LlamaForCausalLM takes no encoder_hidden_states)"),
    ("qwen2", "architecture=prefix backend=pt"),
    ("opt", "without cross-attention"),
    ("vit", "is a vision model, not a text decoder"),
    ("gpt_bigcode", "cannot be built with cross-attention"),
    ("big_bird", "generate() fails with a cross-attention cache"),
    ("xmod", "needs a language id"),
    ("mega", "saves buffers beside its parameters"),
])
def test_a_decoder_is_refused_with_what_transformers_showed(model_type, phrase):
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if model_type not in CONFIG_MAPPING_NAMES:
        pytest.skip(f"this transformers has no {model_type}")
    assert phrase in _refusal(decoder_family, model_type)


def test_flax_refuses_a_decoder_pt_takes_with_the_way_to_forge_it():
    message = _refusal(decoder_family, "mbart", "flax")
    assert "backend=pt" in message and "gpt2" in message


def test_flax_refuses_a_decoder_without_cross_attention_for_that_reason():
    assert "without cross-attention" in _refusal(decoder_family, "mistral", "flax")


@pytest.mark.parametrize("model_type, tower", [
    ("dinov3_vit", False), ("ijepa", False), ("vit_msn", False), ("data2vec-vision", False), ("swinv2", False),
    ("yolos", False), ("chinese_clip", True),
])
def test_a_vision_model_gets_a_derived_record(model_type, tower):
    family = encoder_family(AutoConfig.for_model(model_type), "'here'", "pt")
    assert family.role == "encoder" and family.built_with == "pytorch" and family.vision_tower == tower
    assert family.torch_compat_fix is None


def test_a_feature_map_encoder_is_derived_with_the_fix_it_needs():
    family = encoder_family(AutoConfig.for_model("resnet"), "'here'", "pt")
    assert "feature map" in family.torch_compat_fix and "no hidden_size" in family.torch_compat_fix


@pytest.mark.parametrize("model_type, phrase", [
    ("gpt2", "is a text model, not a vision model"),
    ("bert", "is a text model, not a vision model"),
    ("sam_vision_model", "(batch, tokens, 768)"),
    ("siglip2_vision_model", "does not run on pixel_values alone"),
    ("aimv2", "vision tower is saved under names its vision model class (Aimv2VisionModel) does not load"),
])
def test_an_encoder_is_refused_with_what_transformers_showed(model_type, phrase):
    assert phrase in _refusal(encoder_family, model_type)


def test_flax_refuses_a_vision_model_without_a_flax_port_with_the_way_to_forge_it():
    assert "backend=pt" in _refusal(encoder_family, "dinov3_vit", "flax")


def test_torch_view_initialises_a_derived_decoder_as_transformers_does():
    from vedforge.architectures.cross_attention.torch_view import flax_initialiser

    config = AutoConfig.for_model("mbart", init_std=0.04)
    assert flax_initialiser(config, "decoder", ("model", "decoder", "layers", "0", "fc1", "kernel"), (4, 4)).scale == 0.04
    assert flax_initialiser(config, "decoder", ("model", "decoder", "layers", "0", "fc1", "bias"), (4,)).scale == 0.0
