"""Weights written while planning: adopted only when the plan agrees, and never left behind."""

from __future__ import annotations

import json
import logging
import os

import pytest

from conftest import FLAX, FLAX_ONLY_REASON, local_recipe
from tests_support import artifact_hashes

if not FLAX:
    pytest.skip(FLAX_ONLY_REASON, allow_module_level=True)

from vedforge.core.derived_cache import lookup, store
from vedforge.core.errors import VedforgeError
from vedforge.pipeline.early_weights import KIND, inputs_key, start_early_weights
from vedforge.pipeline.runner import forge

EARLY_LINE = "Writing the weights while planning"


@pytest.fixture
def cache(own_cache, monkeypatch):
    monkeypatch.setenv("VEDFORGE_REPLAY", "off")  # the early write is what a planned forge does
    return own_cache


def _siblings(out) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def test_second_forge_adopts_the_weights_written_while_planning(tiny_checkpoints, tmp_path, cache, caplog):
    caplog.set_level(logging.INFO, logger="vedforge")
    first = forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "first"))
    assert EARLY_LINE not in caplog.text  # nothing kept yet
    cfg = local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "second")
    assert lookup(KIND, inputs_key(cfg)) is not None
    caplog.clear()
    second = forge(cfg)
    assert EARLY_LINE in caplog.text and "written again" not in caplog.text
    assert artifact_hashes(second.output_dir) == artifact_hashes(first.output_dir)
    assert _siblings(second.output_dir) == []


def test_a_stale_job_is_never_published(tiny_checkpoints, tmp_path, cache, caplog):
    caplog.set_level(logging.INFO, logger="vedforge")
    reference = forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "reference"))
    cfg = local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "out")
    key = inputs_key(cfg)
    kept = lookup(KIND, key)
    kept["job"]["seed"] += 1  # what a forge of other new tensors would have kept
    store(KIND, key, kept)
    caplog.clear()
    result = forge(cfg)
    assert EARLY_LINE in caplog.text and "written again" in caplog.text
    assert artifact_hashes(result.output_dir) == artifact_hashes(reference.output_dir)
    assert lookup(KIND, key)["job"]["seed"] == kept["job"]["seed"] - 1  # the plan's job is kept again
    assert _siblings(result.output_dir) == []


def test_a_failed_plan_leaves_no_early_files(tiny_checkpoints, tmp_path, cache, monkeypatch):
    import vedforge.pipeline.runner as runner

    forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "first"))
    out = tmp_path / "out"
    seen = []

    def failing_plan(cfg):
        seen.extend(_siblings(out))  # the early write is under way while the plan runs
        raise VedforgeError("a refusal found while planning")

    monkeypatch.setattr(runner, "build_plan", failing_plan)
    with pytest.raises(VedforgeError, match="found while planning"):
        forge(local_recipe(tiny_checkpoints, "vit", "gpt2", out))
    assert len(seen) == 1 and seen[0].startswith(".out.early-")
    assert _siblings(out) == [] and not out.exists()


def test_no_early_write_into_a_destination_that_holds_files(tiny_checkpoints, tmp_path, cache, caplog):
    caplog.set_level(logging.INFO, logger="vedforge")
    forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "first"))
    out = tmp_path / "taken"
    out.mkdir()
    (out / "precious.txt").write_text("kept")
    caplog.clear()
    with pytest.raises(VedforgeError, match="already holds files"):
        forge(local_recipe(tiny_checkpoints, "vit", "gpt2", out))
    assert EARLY_LINE not in caplog.text
    assert _siblings(out) == [] and (out / "precious.txt").read_text() == "kept"


def test_leftovers_of_killed_forges_are_removed_and_running_ones_kept(tiny_checkpoints, tmp_path, cache):
    out = tmp_path / "out"
    dead = tmp_path / ".out.early-999999999-abc"  # no process has this pid
    alive = tmp_path / f".out.early-{os.getppid()}-abc"
    for leftover in (dead, alive):
        leftover.mkdir()
        (leftover / "flax_model.msgpack").write_bytes(b"partial")
    forge(local_recipe(tiny_checkpoints, "vit", "gpt2", out))
    assert not dead.exists() and alive.exists()


def test_inputs_are_keyed_only_for_local_checkpoints_and_by_their_files(tiny_checkpoints, tmp_path, cache):
    cfg = local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "out")
    key = inputs_key(cfg)
    assert key == inputs_key(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "elsewhere"))
    assert key != inputs_key(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "out", "seed=7"))
    hub = local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "out", "decoder.name_or_path=openai-community/gpt2")
    assert inputs_key(hub) is None and start_early_weights(hub) is None
    # A changed tokenizer file changes the key, though no weight changed.
    copy = tmp_path / "gpt2"
    copy.mkdir()
    for item in tiny_checkpoints["gpt2"].iterdir():
        (copy / item.name).write_bytes(item.read_bytes())
    changed = dict(tiny_checkpoints, gpt2=copy)
    before = inputs_key(local_recipe(changed, "vit", "gpt2", tmp_path / "out"))
    config = json.loads((copy / "tokenizer_config.json").read_text())
    config["model_max_length"] = 77
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    assert inputs_key(local_recipe(changed, "vit", "gpt2", tmp_path / "out")) != before
