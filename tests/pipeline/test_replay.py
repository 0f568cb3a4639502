"""A forge of inputs forged before, replayed from its record: the same bytes, or a planned forge."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from conftest import FLAX, FLAX_ONLY_REASON, local_recipe
from tests_support import artifact_hashes

if not FLAX:
    pytest.skip(FLAX_ONLY_REASON, allow_module_level=True)

import vedforge.pipeline.replay as replay
from vedforge.core.errors import VedforgeError
from vedforge.pipeline.runner import forge

REPLAYED = "Replaying the forge of these inputs"


@pytest.fixture
def replays(own_cache, monkeypatch):
    monkeypatch.setenv("VEDFORGE_REPLAY", "on")


def test_a_replayed_forge_is_the_planned_one_byte_for_byte(tiny_checkpoints, tmp_path, replays, caplog):
    caplog.set_level(logging.INFO, logger="vedforge")
    planned = forge(local_recipe(tiny_checkpoints, "vit", "bert", tmp_path / "planned"))
    assert REPLAYED not in caplog.text
    plan_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("plan: FORGE")]
    caplog.clear()
    replayed = forge(local_recipe(tiny_checkpoints, "vit", "bert", tmp_path / "replayed"))
    assert REPLAYED in caplog.text and "Planning the forge" not in caplog.text
    assert artifact_hashes(replayed.output_dir) == artifact_hashes(planned.output_dir)
    assert replayed.manifest == planned.manifest
    # The plan's block is said again, naming this forge's output directory.
    replayed_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("plan: FORGE")]
    assert replayed_lines == [line.replace(str(tmp_path / "planned"), str(tmp_path / "replayed")) for line in plan_lines]
    assert str(tmp_path / "replayed") in replayed_lines[0]


def test_weights_that_differ_from_the_record_are_planned_again(tiny_checkpoints, tmp_path, replays, caplog):
    caplog.set_level(logging.INFO, logger="vedforge")
    reference = forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "reference"))
    key = replay.record_key(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "out"))
    record = replay.lookup_record(key)
    name = "flax_model.msgpack"
    record["manifest"]["files"][name]["sha256"] = "0" * 64  # as if the checkpoint changed in place
    from vedforge.core.derived_cache import store

    store(replay.KIND, key, record)
    caplog.clear()
    result = forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "out"))
    assert REPLAYED in caplog.text and "planning this forge" in caplog.text and "Planning the forge" in caplog.text
    assert artifact_hashes(result.output_dir) == artifact_hashes(reference.output_dir)
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name or ".early-" in p.name]
    # The planned forge kept its own record again.
    assert replay.lookup_record(key)["manifest"]["files"][name]["sha256"] == reference.manifest["files"][name]["sha256"]


def test_edited_code_or_another_recipe_is_not_replayed(tiny_checkpoints, tmp_path, replays, monkeypatch):
    forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "a"))
    key = replay.record_key(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "b"))
    assert replay.lookup_record(key) is not None
    assert replay.record_key(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "b", "seed=3")) != key
    monkeypatch.setattr(replay, "_code_digest", "an edited checkout")
    assert replay.record_key(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "b")) != key


def test_destination_rules_hold_for_a_replay(tiny_checkpoints, tmp_path, replays, caplog):
    caplog.set_level(logging.INFO, logger="vedforge")
    forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "a"))
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "precious.txt").write_text("kept")
    with pytest.raises(VedforgeError, match="already holds files"):
        forge(local_recipe(tiny_checkpoints, "vit", "gpt2", taken))
    assert (taken / "precious.txt").read_text() == "kept"
    # output.resume over a complete artifact of the recipe is a skip, as when planned.
    again = forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "a", "output.resume=true"))
    assert again.skipped


def test_verify_plans_its_rebuild(tiny_checkpoints, tmp_path, replays, caplog):
    from vedforge.pipeline.verify import verify

    forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "a"))
    caplog.set_level(logging.INFO, logger="vedforge")
    caplog.clear()
    assert {check.status for check in verify(tmp_path / "a")} == {"ok"}
    assert REPLAYED not in caplog.text


def test_a_replayed_forge_imports_no_framework_nor_transformers(tiny_checkpoints, tmp_path):
    args = [f"encoder.name_or_path={tiny_checkpoints['vit']}", "encoder.weights=pretrained",
            f"decoder.name_or_path={tiny_checkpoints['gpt2']}", "decoder.weights=pretrained"]
    env = {"VEDFORGE_CACHE": str(tmp_path / "cache"), "VEDFORGE_REPLAY": "on", "HF_HUB_OFFLINE": "1",
           "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    imported = []
    for name in ("a", "b"):
        run = subprocess.run([sys.executable, "-X", "importtime", "-m", "vedforge", *args, f"output.dir={tmp_path / name}"],
                             cwd=tmp_path, env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-2000:]
        imported.append({line.split("|")[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")})
    assert "transformers" in imported[0]
    assert not {"transformers", "jax", "flax", "torch"} & imported[1]
    assert json.loads((tmp_path / "a" / "vedforge_manifest.json").read_text()) == \
        json.loads((tmp_path / "b" / "vedforge_manifest.json").read_text())
