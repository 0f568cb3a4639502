"""architecture=auto and backend=auto (the defaults): the pairing is chosen from its parts, said
in the plan, recorded in the manifest, and a named setting is kept (and refused if it cannot work)."""

from __future__ import annotations

import hashlib
import json

import pytest

from conftest import FLAX, compose_recipe, needs_flax
from tests_support import run_cli
from vedforge.core.errors import VedforgeError
from vedforge.pipeline.plan import SKIP, build_plan
from vedforge.pipeline.plan_report import plan_summary, render_text
from vedforge.pipeline.runner import forge


def _manifest(directory):
    return json.loads((directory / "vedforge_manifest.json").read_text())


def _plan(tmp_path, *overrides):
    return build_plan(compose_recipe([*overrides, f"output.dir={tmp_path / 'out'}"]))


@pytest.mark.parametrize("overrides, architecture, backend", [
    (["encoder=swin_tiny", "decoder=bart_tiny"], "cross_attention", "pt"),
    (["encoder=siglip_tiny", "decoder=qwen3_tiny"], "prefix", "pt"),
    (["encoder=vit_tiny", "decoder=llama_tiny"], "prefix", "pt"),
    (["encoder=vit_tiny", "decoder=trocr_tiny"], "cross_attention", "pt"),
    (["encoder=vit_tiny", "decoder=gpt2_tiny"], "cross_attention", "flax" if FLAX else "pt"),
])
def test_the_parts_choose_the_architecture_and_backend(tmp_path, overrides, architecture, backend):
    pytest.importorskip("torch")
    plan = _plan(tmp_path, *overrides)
    assert (plan.recipe.architecture, plan.recipe.backend) == (architecture, backend)
    summary = plan_summary(plan, tensors=False)
    assert summary["choices"]["architecture"]["value"] == architecture
    assert summary["choices"]["backend"]["value"] == backend and summary["choices"]["backend"]["why"]
    assert f"chosen: backend={backend} (" in render_text(summary)


def test_a_named_setting_is_kept_and_refused_with_its_reason_when_it_cannot_work(tmp_path):
    pytest.importorskip("torch")
    plan = _plan(tmp_path, "encoder=vit_tiny", "decoder=gpt2_tiny", "backend=pt")
    assert plan.recipe.backend == "pt" and "backend" not in plan.recipe.choices
    # Refused for the encoder, or, where transformers has no Flax classes, for the backend itself.
    with pytest.raises(VedforgeError, match="swin" if FLAX else "Flax classes"):
        _plan(tmp_path, "encoder=swin_tiny", "decoder=bart_tiny", "backend=flax")
    with pytest.raises(VedforgeError, match="cross-attention"):
        _plan(tmp_path, "encoder=vit_tiny", "decoder=qwen3_tiny", "architecture=cross_attention", "backend=pt")


def test_prefix_settings_ask_for_a_prefix_pairing(tmp_path):
    pytest.importorskip("torch")
    plan = _plan(tmp_path, "encoder=vit_tiny", "decoder=gpt2_tiny", "prefix.projector=linear")
    assert plan.recipe.architecture == "prefix"
    with pytest.raises(VedforgeError, match="one architecture"):
        _plan(tmp_path, "decoder=gpt2_tiny", "prefix.projector=linear", "cross_attention.init=zero")


@needs_flax
def test_the_chosen_forge_is_the_named_one_and_resumes_it(tmp_path):
    chosen = forge(compose_recipe([f"output.dir={tmp_path / 'auto'}"])).output_dir
    named = forge(compose_recipe(["backend=flax", "architecture=cross_attention",
                                  f"output.dir={tmp_path / 'named'}"])).output_dir

    def sha(path):
        return hashlib.sha256(path.read_bytes()).hexdigest()

    assert sha(chosen / "flax_model.msgpack") == sha(named / "flax_model.msgpack")
    auto, explicit = _manifest(chosen), _manifest(named)
    assert auto["recipe"] == explicit["recipe"] and auto["recipe"]["backend"]["name"] == "flax"
    assert auto["choices"]["backend"]["value"] == "flax" and "choices" not in explicit
    # The recorded recipe holds the choice, so either command line resumes the other's artifact.
    assert build_plan(compose_recipe([f"output.dir={named}"])).outcome == SKIP
    assert build_plan(compose_recipe(["backend=flax", f"output.dir={chosen}"])).outcome == SKIP


def test_the_seeds_pairings_just_work_from_the_command_line(tmp_path):
    pytest.importorskip("torch")
    for pair, weights in ((["encoder=swin_tiny", "decoder=bart_tiny"], "model.safetensors"),
                          (["encoder=siglip_tiny", "decoder=qwen3_tiny"], "model.safetensors")):
        out = tmp_path / "_".join(p.split("=")[1] for p in pair)
        result = run_cli(*pair, f"output.dir={out}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        assert (out / weights).is_file() and "chosen: backend=pt" in result.stderr + result.stdout
