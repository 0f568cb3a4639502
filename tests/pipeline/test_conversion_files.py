"""What the file route of ``vedforge convert`` knows about transformers' configs and tokenizers
(vedforge.pipeline.conversion_files) agrees with the installed transformers."""

from __future__ import annotations

import json

import pytest

from vedforge.core.resources import assets_dir
from vedforge.pipeline.conversion_files import (
    GENERATION_PARAMETERS,
    SEQ2SEQ_DECODERS,
    SIZE_NAMES,
    ConfigView,
    resaved_special_tokens_map,
)


def _asset_config(model_type: str):
    """(config.json data, transformers' config) of the tiny asset of ``model_type``."""
    from transformers import AutoConfig

    name = {"clip_vision_model": "clip", "xlm-roberta": "roberta", "roberta-prelayernorm": "roberta"}.get(
        model_type, model_type)
    folder = assets_dir() / f"{name}_tiny"
    data = json.loads((folder / "config.json").read_text())
    if model_type == "clip_vision_model":
        data = {**data["vision_config"], "model_type": model_type}
    elif data["model_type"] != model_type:
        data = {**data, "model_type": model_type}
    config_class = type(AutoConfig.for_model(model_type))
    return data, config_class.from_dict(data)


@pytest.mark.parametrize("model_type", sorted(SIZE_NAMES))
def test_the_config_view_reads_the_sizes_transformers_reads(model_type):
    from vedforge.families.registry import family_of

    data, config = _asset_config(model_type)
    view = ConfigView(data)
    family = family_of(model_type)
    names = ["hidden_size", "num_hidden_layers"]
    if family is not None and family.role == "decoder":
        names.append(family.decoder_layer_attribute)
    for name in names:
        if name in SIZE_NAMES[model_type] or name in data:
            assert getattr(view, name) == getattr(config, name), name


@pytest.mark.parametrize("model_type", sorted(SIZE_NAMES))
def test_seq2seq_decoders_are_those_whose_config_defaults_to_encoder_decoder(model_type):
    from transformers import AutoConfig

    assert (model_type in SEQ2SEQ_DECODERS) == bool(AutoConfig.for_model(model_type).is_encoder_decoder)


def test_the_generation_parameters_cover_those_transformers_moves():
    from transformers import GenerationConfig, PretrainedConfig

    if hasattr(PretrainedConfig, "_get_global_generation_defaults"):  # transformers 4
        moved = set(PretrainedConfig._get_global_generation_defaults())
    else:
        moved = set(GenerationConfig._get_default_generation_params()) - {"use_cache"}
    assert moved <= GENERATION_PARAMETERS


def test_a_special_token_named_by_its_text_is_saved_as_its_added_token():
    added = {"content": "<pad>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    config = {"added_tokens_decoder": {"3": {**added, "special": True}}, "pad_token": "<pad>"}
    assert json.loads(resaved_special_tokens_map({"pad_token": "<pad>"}, config)) == {"pad_token": added}
    # Anything the tokenizer would resolve otherwise is left to transformers.
    assert resaved_special_tokens_map({"pad_token": "<unk>"}, {**config, "pad_token": "<unk>"}) is None
    assert resaved_special_tokens_map({"pad_token": "<pad>", "eos_token": "<pad>"}, config) is None
    assert resaved_special_tokens_map({"pad_token": "<pad>", "additional_special_tokens": ["<x>"]}, config) is None
