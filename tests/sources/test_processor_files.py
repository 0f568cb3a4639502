"""The encoder's image processor, carried as its file: clients load the same processor the encoder ships."""

from __future__ import annotations

import json

import pytest

from vedforge.core.errors import VedforgeError
from vedforge.core.resources import assets_dir
from vedforge.sources.loading import fit_processor_to_image_size
from vedforge.sources.processor_files import read_processor_files
from vedforge.sources.resolve import ResolvedSource

ENCODER_ASSETS = sorted(p.parent.name for p in assets_dir().glob("*/preprocessor_config.json"))


def _loaded(folder):
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(folder)


@pytest.mark.parametrize("asset", ENCODER_ASSETS)
def test_the_saved_processor_loads_as_the_encoders_own(tmp_path, asset):
    files = read_processor_files(assets_dir() / asset, asset)
    files.save_pretrained(tmp_path)
    assert (tmp_path / "preprocessor_config.json").read_bytes() == (assets_dir() / asset / "preprocessor_config.json").read_bytes()
    assert _loaded(tmp_path).to_dict() == _loaded(assets_dir() / asset).to_dict()


@pytest.mark.parametrize("asset", ENCODER_ASSETS)
def test_an_image_size_override_makes_the_processor_emit_that_size(tmp_path, asset):
    import numpy as np
    from PIL import Image

    files = read_processor_files(assets_dir() / asset, asset)
    if "pad_size" in files.settings:
        pytest.skip("a detection processor pads to its pad_size: its output size is not one image size")
    files.fit_to_image_size(48)
    files.save_pretrained(tmp_path)
    processor = _loaded(tmp_path)
    image = Image.fromarray(np.zeros((37, 45, 3), np.uint8))
    assert tuple(processor(image, return_tensors="np")["pixel_values"].shape[-2:]) == (48, 48)
    # The prefix route fits the loaded processor: the same processor, and it saves that size too.
    source = ResolvedSource("encoder", asset, "local", assets_dir() / asset)
    rebuilt = fit_processor_to_image_size(_loaded(assets_dir() / asset), source, 48)
    assert rebuilt.to_dict() == processor.to_dict()
    rebuilt.save_pretrained(tmp_path / "rebuilt")
    assert tuple(_loaded(tmp_path / "rebuilt")(image, return_tensors="np")["pixel_values"].shape[-2:]) == (48, 48)


def test_the_image_processor_inside_a_multimodal_processors_file_is_carried(tmp_path):
    # transformers 5 saves a LLaVA checkpoint's image processor inside processor_config.json.
    settings = json.loads((assets_dir() / "clip_tiny" / "preprocessor_config.json").read_text())
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "processor_config.json").write_text(json.dumps(
        {"processor_class": "LlavaProcessor", "image_processor": settings, "patch_size": 4}))
    files = read_processor_files(tmp_path / "src", "llava")
    files.save_pretrained(tmp_path)
    assert _loaded(tmp_path).to_dict() == _loaded(assets_dir() / "clip_tiny").to_dict()


def test_an_int_size_of_an_older_processor_takes_the_new_size(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "preprocessor_config.json").write_text(json.dumps(
        {"feature_extractor_type": "ViTFeatureExtractor", "size": 224, "do_resize": True}))
    files = read_processor_files(tmp_path / "src", "old")
    files.fit_to_image_size(32)
    assert files.to_dict()["size"] == 32
    files.save_pretrained(tmp_path)
    processor = _loaded(tmp_path)
    assert processor.size == {"height": 32, "width": 32}


@pytest.mark.parametrize("content, says", [
    (None, "there is no preprocessor_config.json"),
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "holds a list"),
])
def test_a_missing_or_broken_processor_file_is_refused_naming_it(tmp_path, content, says):
    if content is not None:
        (tmp_path / "preprocessor_config.json").write_text(content)
    with pytest.raises(VedforgeError) as caught:
        read_processor_files(tmp_path, "the encoder 'x'")
    assert says in str(caught.value) and "the encoder 'x'" in str(caught.value)
    assert "\n" not in str(caught.value)
