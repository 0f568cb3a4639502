"""vedforge's output holds what the classic script's does: same tensors, config and tokenizer files."""

from __future__ import annotations

import pytest

from conftest import FLAX, FLAX_ONLY_REASON

# Flax-only: checkpoints saved by transformers' Flax classes, or the Flax model itself.
if not FLAX:
    pytest.skip(FLAX_ONLY_REASON, allow_module_level=True)

import json
import re
import sys
from pathlib import Path

import numpy as np
from flax.serialization import msgpack_restore
from flax.traverse_util import flatten_dict

from conftest import local_recipe
from vedforge.pipeline.runner import forge

# The classic flow exactly as the benchmark runs it.
_BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "forge_bench.py"
_CLASSIC = re.search(r"CLASSIC = r'''(.*?)'''", _BENCH.read_text(), re.S)


def _classic(encoder, decoder, out, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["classic", str(encoder), str(decoder), str(out)])
    exec(_CLASSIC.group(1), {})


def test_same_tensors_config_and_tokenizer_files_as_the_classic_script(tiny_checkpoints, tmp_path, monkeypatch):
    _classic(tiny_checkpoints["vit"], tiny_checkpoints["gpt2"], tmp_path / "classic", monkeypatch)
    ours = forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "ours")).output_dir
    classic = tmp_path / "classic"

    for name in ("preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "vocab.json", "merges.txt"):
        assert (ours / name).read_bytes() == (classic / name).read_bytes(), name
    # The classic config names no bos although its generation config does (Seq2SeqTrainer then
    # warns and rewrites it); ours adds exactly that id.
    config_ours = json.loads((ours / "config.json").read_text())
    config_classic = json.loads((classic / "config.json").read_text())
    assert {k: v for k, v in config_ours.items() if k != "bos_token_id"} == config_classic
    assert "bos_token_id" not in config_classic
    assert config_ours["bos_token_id"] == json.loads((ours / "generation_config.json").read_text())["bos_token_id"]

    # The classic generation config is the stale one (no token ids); ours adds exactly those.
    gen_ours = json.loads((ours / "generation_config.json").read_text())
    gen_classic = json.loads((classic / "generation_config.json").read_text())
    assert {k: v for k, v in gen_ours.items() if k not in gen_classic} == {
        "decoder_start_token_id": gen_ours["decoder_start_token_id"], "pad_token_id": gen_ours["pad_token_id"]}
    assert {k: gen_ours[k] for k in gen_classic} == gen_classic

    a = flatten_dict(msgpack_restore((ours / "flax_model.msgpack").read_bytes()))
    b = flatten_dict(msgpack_restore((classic / "flax_model.msgpack").read_bytes()))
    assert a.keys() == b.keys()
    new = {tuple(n.split("/")) for names in json.loads((ours / "vedforge_manifest.json").read_text())["new_tensors"].values()
           for n in names}
    assert new and all(a[k].shape == b[k].shape and a[k].dtype == b[k].dtype for k in a)
    # Every tensor the checkpoints provide is the same; only the new cross-attention is drawn differently.
    assert all(np.array_equal(a[k], b[k]) for k in a if k not in new)
