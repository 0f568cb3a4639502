"""The model card tells the user who trains the model next what they need: the exact
``python -m vedforge.compat`` line where stock transformers needs the fixes, BEiT's drop path,
and what padding with eos does to label masking."""

from __future__ import annotations

import pytest

from conftest import compose_recipe
from vedforge.pipeline.runner import forge

COMPAT_LINE = "python -m vedforge.compat run_image_captioning_flax.py --model_name_or_path path/to/this/dir"


def _card(tmp_path, *overrides: str) -> tuple[str, dict]:
    result = forge(compose_recipe([*overrides, f"output.dir={tmp_path / 'out'}"]))
    return (result.output_dir / "README.md").read_text(), result.manifest


@pytest.mark.parametrize("encoder,decoder,needs", [
    ("beit_tiny", "gpt2_tiny", True),      # drop path 0.1
    ("vit_tiny", "bert_tiny", True),       # keyword decode
    ("clip_vision_tiny", "bart_tiny", True),
    ("vit_tiny", "bart_tiny", False),
])
def test_the_compat_line_is_printed_exactly_where_it_is_needed(tmp_path, encoder, decoder, needs):
    card, manifest = _card(tmp_path, f"encoder={encoder}", f"decoder={decoder}")
    assert manifest["needs_compat"] is needs
    assert (COMPAT_LINE in card) is needs
    assert ("drop_path_rate` 0.1" in card) is (encoder == "beit_tiny")
    assert (manifest["needs_drop_path_rng"] == 0.1) is (encoder == "beit_tiny")


def test_pad_equal_to_eos_is_explained_and_add_pad_named(tmp_path):
    card, manifest = _card(tmp_path, "decoder=gpt2_tiny")
    ids = manifest["token_ids"]
    assert ids["pad"] == ids["eos"]
    text = " ".join(card.split())
    assert f"Padding is end-of-sequence here** (both id {ids['eos']})" in text
    assert "masks every eos as well" in text and "token_policy=add_pad" in text


def test_no_pad_note_when_the_pad_token_is_its_own(tmp_path):
    card, manifest = _card(tmp_path, "decoder=gpt2_tiny", "token_policy=add_pad")
    assert manifest["token_ids"]["pad"] != manifest["token_ids"]["eos"]
    assert "Padding is end-of-sequence" not in card
