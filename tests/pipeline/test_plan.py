"""The plan: built from configs alone, equal to what the forge then does, and the place of every
refusal that needs no weights."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FLAX, compose_recipe, local_recipe, needs_flax
from tests_support import no_weight_file_opened
from vedforge.core.errors import BackendError, OutputError, UnsupportedModelError, VedforgeError
from vedforge.pipeline.plan import FORGE, SKIP, build_plan
from vedforge.pipeline.plan_report import plan_summary
from vedforge.pipeline.runner import forge


def _manifest_files(manifest: dict, layout_files: list[str]) -> dict[str, int]:
    return {name: manifest["files"][name]["bytes"] for name in layout_files}


def _forged_and_planned(plan, cfg):
    """Forge ``cfg`` and check that ``plan`` counted its parameters and named its new tensors as
    the forge does; the manifest and the plan summary, for further checks."""
    manifest = forge(cfg).manifest
    assert plan.parameters == manifest["parameters"]
    assert plan.total_parameters == manifest["parameters"]["total"]
    summary = plan_summary(plan)
    new = {part: sorted(names) for part, names in summary["tensors"]["new"].items()}
    assert new == {part: sorted(names) for part, names in manifest["new_tensors"].items()}
    return manifest, summary


@pytest.mark.parametrize("encoder,decoder,extra", [
    ("vit", "gpt2", ("token_policy=add_pad",)),
    ("swin", "bart", ("output.max_shard_size=40KB",)),
])
def test_pt_plan_of_pytorch_checkpoints_is_what_the_forge_does(tiny_torch_checkpoints, tmp_path, encoder, decoder, extra):
    # With or without Flax classes: PyTorch checkpoints, a PyTorch forge.
    cfg = local_recipe(tiny_torch_checkpoints, encoder, decoder, tmp_path / "out", "backend=pt", *extra)
    with no_weight_file_opened() as opened:
        plan = build_plan(cfg)
    assert opened == [] and plan.outcome == FORGE
    manifest, summary = _forged_and_planned(plan, cfg)
    assert summary["token_ids"] == manifest["token_ids"]
    for layout in summary["weight_layouts"]:
        written = _manifest_files(manifest, layout["files"])
        weights = [name for name in layout["files"] if not name.endswith(".json")]
        assert 0 <= sum(written[name] for name in weights) - layout["bytes"] < 0.05 * layout["bytes"] + 4096


@pytest.mark.parametrize("encoder,decoder,extra", [
    ("vit", "gpt2", ("+encoder.config_overrides.image_size=48",)),
    ("clip", "bart", ("token_policy=add_pad",)),
    ("beit", "roberta", ("output.pytorch=true",)),
    ("dinov2", "bert", ("output.max_shard_size=40KB",)),
])
def test_plan_reads_no_weights_and_its_numbers_are_the_forged_manifests(tiny_checkpoints, tmp_path, encoder, decoder, extra):
    cfg = local_recipe(tiny_checkpoints, encoder, decoder, tmp_path / "out", *extra)
    with no_weight_file_opened() as opened:
        plan = build_plan(cfg)
    assert opened == [] and plan.outcome == FORGE
    assert not (tmp_path / "out").exists()
    # The plan is what the forge reports afterwards, number for number.
    manifest, summary = _forged_and_planned(plan, cfg)
    assert summary["tensors"]["resized"] == manifest["resized_tensors"]
    assert summary["token_ids"] == manifest["token_ids"]
    assert [layout["layout"] for layout in summary["weight_layouts"]] == manifest["weight_layouts"]
    for layout in summary["weight_layouts"]:
        written = _manifest_files(manifest, layout["files"])
        weights = [name for name in layout["files"] if not name.endswith(".json")]
        # The files hold the planned tensor bytes plus their (small) headers.
        assert 0 <= sum(written[name] for name in weights) - layout["bytes"] < 0.05 * layout["bytes"] + 4096
    for role in ("encoder", "decoder"):
        read = summary[role]["read_bytes"]
        assert read == sum(p.stat().st_size for p in tiny_checkpoints[encoder if role == "encoder" else decoder].iterdir()
                           if p.suffix in (".msgpack", ".safetensors"))
        assert summary[role]["download_bytes"] == 0
    assert summary["write_bytes"] == sum(layout["bytes"] for layout in summary["weight_layouts"])


def test_sharded_plan_names_the_shards_the_forge_writes(tiny_checkpoints, tmp_path):
    cfg = local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "out", "output.max_shard_size=30KB")
    plan = build_plan(cfg)
    (layout,) = plan.layouts
    assert len(layout.files) > 2 and layout.files[-1] == "flax_model.msgpack.index.json"
    forged = forge(cfg).output_dir
    assert sorted(p.name for p in forged.glob("flax_model*")) == sorted(layout.files)


def test_plan_of_a_complete_artifact_is_a_skip_that_reads_nothing(tiny_checkpoints, tmp_path):
    cfg = local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "out")
    manifest = forge(cfg).manifest
    with no_weight_file_opened() as opened:
        plan = build_plan(cfg)
    # Resuming hashes the artifact's own files; no input checkpoint is opened.
    assert [p for p in opened if not p.startswith(str(tmp_path / "out"))] == []
    assert plan.outcome == SKIP and plan.previous == manifest


def _refusals(checkpoints: dict[str, Path], tmp_path: Path) -> dict[str, tuple[list[str], type, str]]:
    """Each weight-free refusal: overrides, the error class, and a phrase of its message."""
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory")
    full = tmp_path / "full"
    full.mkdir()
    (full / "something.txt").write_text("x")
    locked = tmp_path / "locked"
    (tmp_path / ".locked.lock").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "since": "now"}))
    read_only = tmp_path / "read_only"
    read_only.mkdir(mode=0o555)
    return {
        # No one can create a directory there (mkdir fails with ENOENT), root included.
        "output cannot be created": (["output.dir=/proc/vedforge-test/out"], OutputError,
                                     "'/proc/vedforge-test/out' cannot be created"),
        "read-only parent": ([f"output.dir={read_only}/out"], OutputError, f"Cannot write in '{read_only}'"),
        "output is a file": ([f"output.dir={a_file}"], OutputError, "is a file, not a directory"),
        "output under a file": ([f"output.dir={a_file}/sub/out"], OutputError, "is a file, not a directory"),
        "existing output": ([f"output.dir={full}"], OutputError, "already holds files"),
        "locked output": ([f"output.dir={locked}"], OutputError, "is writing to"),
        "safetensors too large": (["output.format=safetensors", "output.max_shard_size=1KB"], VedforgeError,
                                  "exceeds output.max_shard_size=1KB"),
        "unsupported pairing": (["backend=flax", "encoder.name_or_path=builtin:swin_tiny", "encoder.weights=random"],
                                UnsupportedModelError, "backend=flax cannot forge it"),
        "zero init where inexact": ([f"decoder.name_or_path={checkpoints['bert']}", "cross_attention.init=zero"],
                                    VedforgeError, "cross_attention.init=zero cannot"),
        "missing torch": (["backend=pt"], BackendError, "needs PyTorch"),
    }


REFUSALS = ("output is a file", "output under a file", "output cannot be created", "read-only parent", "existing output",
            "locked output", "safetensors too large", "unsupported pairing", "zero init where inexact", "missing torch")


@pytest.mark.parametrize("case", REFUSALS)
def test_every_weight_free_refusal_happens_at_plan_time(tiny_checkpoints, tmp_path, monkeypatch, case):
    if case == "output cannot be created" and not Path("/proc/self").is_dir():
        pytest.skip("needs Linux's /proc")
    if case == "read-only parent" and os.geteuid() == 0:
        pytest.skip("root writes in a read-only directory")
    overrides, error, phrase = _refusals(tiny_checkpoints, tmp_path)[case]
    if case == "missing torch":
        monkeypatch.setenv("USE_TORCH", "0")  # hides torch from the forge, as if not installed
    settings = {"encoder.name_or_path": tiny_checkpoints["vit"], "encoder.weights": "pretrained",
                "decoder.name_or_path": tiny_checkpoints["gpt2"], "decoder.weights": "pretrained",
                "output.dir": tmp_path / "out"}
    settings.update(override.split("=", 1) for override in overrides)
    cfg = compose_recipe([f"{key}={value}" for key, value in settings.items()])
    with no_weight_file_opened() as opened, pytest.raises(error, match=re.escape(phrase)):
        build_plan(cfg)
    assert opened == []
    # The forge refuses the same way, before its fetch stage starts.
    monkeypatch.setattr("vedforge.architectures.cross_attention.CrossAttention.fetch",
                        lambda self, plan: pytest.fail("the forge fetched before refusing"))
    with pytest.raises(error, match=re.escape(phrase)):
        forge(cfg)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".*.probe-*"))  # checking the destination leaves nothing behind


def test_the_forge_holds_its_output_lock_before_it_fetches(tiny_checkpoints, tmp_path, monkeypatch):
    from vedforge.architectures.cross_attention import CrossAttention

    out = tmp_path / "new" / "out"
    real_fetch = CrossAttention.fetch
    locked_while_fetching = []

    def fetch(self, plan):
        locked_while_fetching.append((tmp_path / "new" / ".out.lock").is_file())
        return real_fetch(self, plan)

    monkeypatch.setattr(CrossAttention, "fetch", fetch)
    result = forge(local_recipe(tiny_checkpoints, "vit", "gpt2", out))
    assert locked_while_fetching == [True]
    assert result.output_dir == out and not (tmp_path / "new" / ".out.lock").exists()


def test_plan_refuses_siglip_for_flax_with_the_reason_and_reads_nothing(tmp_path):
    pytest.importorskip("torch")
    cfg = compose_recipe(["encoder=siglip_tiny", "backend=flax", f"output.dir={tmp_path / 'out'}"])
    # Without Flax classes (transformers 5) backend=flax itself is refused, with the install command.
    with no_weight_file_opened() as opened, pytest.raises(UnsupportedModelError if FLAX else BackendError) as refused:
        build_plan(cfg)
    message = str(refused.value)
    if FLAX:
        assert "'siglip'" in message and "no Flax implementation" in message and "backend=pt" in message
    else:
        assert 'pip install "vedforge[flax]"' in message and "backend=pt" in message
    assert opened == [] and not (tmp_path / "out").exists()
    # The same recipe with backend=pt plans a forge of the vision tower alone.
    plan = build_plan(compose_recipe(["encoder=siglip_tiny", "backend=pt", f"output.dir={tmp_path / 'out'}"]))
    assert plan.outcome == FORGE and plan.config.encoder.model_type == "siglip_vision_model"
    assert plan.encoder.family.built_with == "pytorch"
    assert not any("text_model" in name for name in plan.encoder.shapes)


def _run_plan(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("USE_TORCH", None)
    return subprocess.run([sys.executable, "-m", "vedforge", "plan", *args], capture_output=True, text=True, env=env,
                          timeout=600)


@pytest.mark.skipif(FLAX, reason="the plan of an environment without Flax classes")
def test_plan_command_without_flax_plans_pt_and_refuses_flax_with_the_install_command(tmp_path):
    sweep = tmp_path / "sweep"
    result = _run_plan("-m", "--json", "backend=pt,flax", "encoder=vit_tiny", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 2, result.stderr
    pairs = {p["pair"]: p for p in json.loads(result.stdout)["pairs"]}
    outcomes = sorted((p["outcome"], p.get("reason") or "") for p in pairs.values())
    assert [o for o, _ in outcomes] == ["forge", "refused"]
    assert 'pip install "vedforge[flax]"' in outcomes[1][1]
    assert not sweep.exists()
    # A bare plan plans the embedded default as a PyTorch model, and says so.
    text = _run_plan(f"output.dir={tmp_path / 'one'}")
    assert text.returncode == 0, text.stderr
    assert "backend=pt" in text.stderr and "model.safetensors" in text.stdout
    assert not (tmp_path / "one").exists()


@needs_flax
def test_plan_command_prints_a_sweep_with_totals_and_exits_2_for_a_refused_pair(tmp_path):
    sweep = tmp_path / "sweep"
    result = _run_plan("-m", "--json", "backend=flax", "encoder=vit_tiny,swin_tiny", "decoder=gpt2_tiny",
                       f"hydra.sweep.dir={sweep}")
    assert result.returncode == 2, result.stderr
    data = json.loads(result.stdout)
    pairs = {p["pair"]: p for p in data["pairs"]}
    vit, swin = "vit_tiny__gpt2_tiny__backend=flax", "swin_tiny__gpt2_tiny__backend=flax"
    assert set(pairs) == {vit, swin}
    assert pairs[vit]["outcome"] == "forge"
    assert pairs[vit]["output_dir"] == str(sweep / vit)
    assert pairs[swin]["outcome"] == "refused" and "backend=pt" in pairs[swin]["reason"]
    assert data["totals"] == {"pairs": 2, "forge": 1, "skipped": 0, "refused": 1, "download_bytes": 0,
                              "write_bytes": pairs[vit]["write_bytes"]}
    assert not sweep.exists()  # a plan writes nothing, not even Hydra's records

    text = _run_plan(f"output.dir={tmp_path / 'one'}")
    assert text.returncode == 0, text.stderr
    assert f"FORGE -> {tmp_path / 'one'}" in text.stdout and "flax_model.msgpack" in text.stdout
    assert not (tmp_path / "one").exists()


def test_a_random_option_pointed_at_a_checkpoint_with_weights_says_they_are_not_read(tiny_torch_checkpoints, tmp_path,
                                                                                     caplog):
    pytest.importorskip("torch")
    checkpoint = tiny_torch_checkpoints["vit"]
    overrides = ["backend=pt", "encoder=vit_tiny", f"encoder.name_or_path={checkpoint}"]
    with caplog.at_level("WARNING", logger="vedforge"):
        build_plan(compose_recipe([*overrides, f"output.dir={tmp_path / 'random'}"]))
    notes = [r.getMessage() for r in caplog.records if "are not read" in r.getMessage()]
    assert len(notes) == 1 and str(checkpoint) in notes[0] and "encoder.weights=pretrained" in notes[0], notes
    caplog.clear()
    with caplog.at_level("WARNING", logger="vedforge"):
        build_plan(compose_recipe([*overrides, "encoder.weights=pretrained", f"output.dir={tmp_path / 'read'}"]))
    assert not [r for r in caplog.records if "are not read" in r.getMessage()]
