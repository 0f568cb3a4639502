"""Multirun sweeps: readable pair directories, a complete summary despite failures, shared loading, resume."""

from __future__ import annotations

import json

import pytest

from conftest import FLAX
from tests_support import run_cli
from vedforge.core.errors import EXIT_USER_ERROR
from vedforge.sweeps.summary import job_subdir


# The default backend where transformers has Flax classes; backend=pt where it has none (5.x).
BACKEND = [] if FLAX else ["backend=pt"]
WEIGHTS = "flax_model.msgpack" if FLAX else "model.safetensors"


def test_job_subdir_names_the_pair_and_other_recipe_overrides():
    assert job_subdir("vit", "gpt2", ["decoder=gpt2", "encoder=vit"]) == "vit__gpt2"
    assert job_subdir("vit", "gpt2", ["decoder=gpt2", "encoder=vit", "seed=1"]) == "vit__gpt2__seed=1"
    assert job_subdir("vit", "gpt2", ["decoder.name_or_path=builtin:x"]) == "vit__gpt2__decoder.name_or_path=builtin:x"
    assert job_subdir("vit", "gpt2", ["output.overwrite=true", "hub.offline=true", "seed=2"]) == "vit__gpt2__seed=2"


def test_sweep_pair_directories_carry_no_override_punctuation(tmp_path):
    result = run_cli("-m", "encoder=beit_tiny", "+encoder.config_overrides.drop_path_rate=0.0,0.1",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", *BACKEND, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    pairs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if (p / "vedforge_manifest.json").is_file())
    backend = "" if FLAX else "backend=pt__"
    assert pairs == [f"beit_tiny__gpt2_tiny__{backend}encoder.config_overrides.drop_path_rate=0.0",
                     f"beit_tiny__gpt2_tiny__{backend}encoder.config_overrides.drop_path_rate=0.1"]
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())
    assert sorted(row["pair"] for row in summary["rows"]) == pairs


@pytest.fixture(scope="module")
def failing_sweep(tmp_path_factory):
    """A 2x2 sweep in which the pairs with the missing builtin decoder fail."""
    root = tmp_path_factory.mktemp("sweep")
    args = ["-m", "encoder=vit_tiny,beit_tiny", "decoder.name_or_path=builtin:gpt2_tiny,builtin:nope",
            f"hydra.sweep.dir={root / 'sweep'}", *BACKEND]
    return root, args, run_cli(*args, cwd=root)


def test_one_failing_pair_does_not_lose_the_others(failing_sweep):
    root, _, result = failing_sweep
    sweep = root / "sweep"
    assert result.returncode == EXIT_USER_ERROR
    assert "decoder.name_or_path=builtin:nope" in " ".join(result.stderr.split())
    summary = json.loads((sweep / "summary.json").read_text())
    rows = {row["pair"]: row for row in summary["rows"]}
    assert len(rows) == 4
    good = [r for r in rows.values() if "gpt2_tiny" in r["pair"] and "nope" not in r["pair"]]
    bad = [r for r in rows.values() if "nope" in r["pair"]]
    assert len(good) == 2 and len(bad) == 2
    for row in good:
        assert row["status"] == "forged" and row["parameters"] > 0 and row["artifact_bytes"] > 0
        assert (sweep / row["pair"] / WEIGHTS).is_file()
    for row in bad:
        assert row["status"] == "failed" and "nope" in row["error"] and row["output_dir"] is None
        assert not (sweep / row["pair"] / WEIGHTS).exists()
    assert sorted(summary["failed"]) == sorted(r["pair"] for r in bad)
    table = (sweep / "summary.md").read_text()
    assert all(pair in table for pair in rows)


def test_each_checkpoint_is_read_once_per_sweep(failing_sweep):
    root, _, _ = failing_sweep
    summary = json.loads((root / "sweep" / "summary.json").read_text())
    # Two encoders, one loadable decoder: 2 + 1 reads for two forged pairs (not 2 x 2).
    assert summary["checkpoint_loads"] == {"encoder": 2, "decoder": 1}


def test_rerunning_the_sweep_skips_complete_pairs(failing_sweep):
    root, args, _ = failing_sweep
    sweep = root / "sweep"
    before = {p: p.stat().st_mtime_ns for p in sweep.glob(f"*__*/{WEIGHTS}")}
    again = run_cli(*args, cwd=root)
    assert again.returncode == EXIT_USER_ERROR  # the bad pairs still fail
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["skipped"] == 2 and summary["forged"] == 0
    assert summary["checkpoint_loads"] == {"encoder": 0, "decoder": 0}
    assert {p: p.stat().st_mtime_ns for p in sweep.glob(f"*__*/{WEIGHTS}")} == before


def test_resume_false_forges_again(failing_sweep):
    root, args, _ = failing_sweep
    again = run_cli(*args, "output.resume=false", "output.overwrite=true", cwd=root)
    summary = json.loads((root / "sweep" / "summary.json").read_text())
    assert again.returncode == EXIT_USER_ERROR
    assert summary["forged"] == 2 and summary["skipped"] == 0


def test_altered_artifact_is_not_skipped(tiny_checkpoints, tmp_path):
    from conftest import local_recipe
    from vedforge.core.errors import OutputError
    from vedforge.pipeline.runner import forge

    first = forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "out"))
    assert forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "out")).skipped
    weights = first.output_dir / "flax_model.msgpack"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    with pytest.raises(OutputError):  # damaged: neither skipped nor silently replaced
        forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "out"))


def test_pairs_sharing_one_output_dir_are_refused_alike_by_the_plan_and_the_sweep(tmp_path):
    """The first pair to name an output directory forges it; `vedforge plan -m` and the sweep both
    refuse the later ones, with the same reason, and the sweep forges none of them."""
    shared = tmp_path / "shared"
    args = ["-m", "seed=1,2,3", f"output.dir={shared}", f"hydra.sweep.dir={tmp_path / 'sweep'}", *BACKEND]
    plan = run_cli("plan", "--json", *args, cwd=tmp_path)
    assert plan.returncode == EXIT_USER_ERROR, plan.stderr
    planned = {p["pair"]: p for p in json.loads(plan.stdout)["pairs"]}
    first, *later = sorted(planned)
    assert planned[first]["outcome"] == "forge"
    for pair in later:
        assert planned[pair]["outcome"] == "refused"
        assert f"also the output directory of the pair {first}" in planned[pair]["reason"]
    assert not shared.exists() and not (tmp_path / "sweep").exists()

    sweep = run_cli(*args, cwd=tmp_path)
    assert sweep.returncode == EXIT_USER_ERROR, sweep.stderr
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())
    rows = {row["pair"]: row for row in summary["rows"]}
    assert set(rows) == set(planned)
    assert rows[first]["status"] == "forged"
    for pair in later:
        assert rows[pair]["status"] == "failed" and rows[pair]["error"] == planned[pair]["reason"]
    # Only the first pair was forged (planned once), and the refusals were logged before it was.
    lines = (sweep.stdout + sweep.stderr).splitlines()
    planning = [line[:25] for line in lines if "Planning the forge" in line]  # [date time,ms]
    refusing = [line[:25] for line in lines if "will not be forged" in line]
    assert len(planning) == 1 and len(refusing) == len(later) and max(refusing) <= planning[0]
    manifest = json.loads((shared / "vedforge_manifest.json").read_text())
    assert manifest["seed"] == 1
