"""Checked-in recipes: every one composes with its revisions and seed pinned; the offline ones forge."""

from __future__ import annotations

import json

import pytest

from conftest import compose_recipe
from tests_support import run_cli
from vedforge.core.resources import group_options, recipes_dir
from vedforge.pipeline.runner import forge

RECIPES = group_options("recipe")
OFFLINE = {"tiny_smoke", "tiny_sweep_smoke"}


def test_the_documented_recipes_exist():
    assert {"vit_gpt2_captioning", "beit_roberta_captioning", "clip_vision_gpt2", "tiny_smoke",
            "compare_small_captioners"} <= set(RECIPES)


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_composes_and_pins_its_inputs(name):
    cfg = compose_recipe([f"recipe={name}"])
    text = (recipes_dir() / f"{name}.yaml").read_text()
    assert f"seed: {cfg.seed}" in text
    for role in ("encoder", "decoder"):
        node = cfg[role]
        if not node.name_or_path.startswith("builtin:") and "sweeper" not in text:
            assert node.revision, f"{name}: {role} revision not pinned"


def test_tiny_smoke_forges_with_the_recipes_seed(tmp_path):
    result = forge(compose_recipe(["recipe=tiny_smoke", f"output.dir={tmp_path / 'out'}"]))
    assert result.manifest["recipe"]["seed"] == 1234
    assert (result.output_dir / "flax_model.msgpack").is_file()


def test_offline_sweep_recipe_forges_every_pair(tmp_path):
    result = run_cli("-m", "recipe=tiny_sweep_smoke", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())
    assert summary["forged"] == 4
    assert {row["pair"] for row in summary["rows"]} == {
        "vit_tiny__gpt2_tiny", "vit_tiny__bert_tiny", "clip_vision_tiny__gpt2_tiny", "clip_vision_tiny__bert_tiny"
    }


def test_a_users_own_recipe_directory(tmp_path):
    mine = tmp_path / "mine" / "recipe"
    mine.mkdir(parents=True)
    (mine / "my_pair.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /decoder: bert_tiny\nseed: 99\n"
    )
    out = tmp_path / "out"
    result = run_cli("--config-dir", str(tmp_path / "mine"), "recipe=my_pair", f"output.dir={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "vedforge_manifest.json").read_text())
    assert manifest["recipe"]["seed"] == 99 and manifest["inputs"]["decoder"]["model_type"] == "bert"
