"""Exact reproducibility: byte-identical forges across processes and hash seeds, and ``vedforge verify``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests_support import run_cli

# What records the run rather than the model: Hydra's records and the log (stage times included).
RUN_RECORDS = (".hydra", "vedforge.log")


def _forge(tmp_path, name, hash_seed, *extra):
    out = tmp_path / name
    result = run_cli("encoder=dinov2_tiny", "decoder=roberta_tiny", "seed=11", f"output.dir={out}", *extra,
                     cwd=tmp_path, env={"PYTHONHASHSEED": str(hash_seed)})
    assert result.returncode == 0, result.stderr
    return out


def artifact_files(directory: Path) -> dict[str, bytes]:
    """Every file of an artifact but the run's records, by relative path."""
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and p.relative_to(directory).parts[0] not in RUN_RECORDS}


def assert_byte_identical(a: Path, b: Path) -> None:
    files_a, files_b = artifact_files(a), artifact_files(b)
    assert {"vedforge_manifest.json", "README.md", "config.json"} <= set(files_a)
    assert set(files_a) == set(files_b)
    assert [name for name in files_a if files_a[name] != files_b[name]] == []


def test_same_recipe_in_two_processes_with_different_hash_seeds_is_byte_identical(tmp_path):
    a, b = _forge(tmp_path, "a", 1), _forge(tmp_path, "b", 2)
    assert "flax_model.msgpack" in artifact_files(a)
    assert_byte_identical(a, b)


@pytest.mark.parametrize("recipe", [(), ("recipe=tiny_prefix_smoke",)], ids=["default", "tiny_prefix_smoke"])
def test_every_file_of_two_forges_of_one_recipe_is_byte_identical(tmp_path, recipe):
    if recipe and importlib.util.find_spec("torch") is None:
        pytest.skip("tiny_prefix_smoke needs the torch extra")
    outs = []
    for name in ("a", "b"):
        result = run_cli(*recipe, f"output.dir={tmp_path / name}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        outs.append(tmp_path / name)
    assert_byte_identical(*outs)
    manifest = json.loads((outs[0] / "vedforge_manifest.json").read_text())
    assert "timings_s" not in manifest
    # The run's times are in its log instead.
    log = (outs[0] / "vedforge.log").read_text()
    assert "Stage times: plan" in log and "total" in log


def _as_older_artifact(out: Path) -> dict:
    """Give a forge's manifest the stage times manifests held before they moved to the log."""
    manifest_path = out / "vedforge_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["timings_s"] = {"plan": 0.5, "fetch": 0.0, "load": 0.2, "assemble": 0.1, "write_weights": 0.3,
                             "write": 0.1, "total": 1.2}
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def test_an_artifact_whose_manifest_holds_timings_still_verifies_and_resumes(tmp_path):
    from conftest import compose_recipe
    from vedforge.pipeline.artifacts import complete_artifact
    from vedforge.pipeline.runner import forge

    overrides = ["encoder=dinov2_tiny", "decoder=roberta_tiny", "seed=11", f"output.dir={tmp_path / 'model'}"]
    out = forge(compose_recipe(overrides)).output_dir
    manifest = _as_older_artifact(out)
    assert complete_artifact(out, manifest["recipe"]) == manifest
    again = forge(compose_recipe(overrides))
    assert again.skipped and again.manifest == manifest

    good = run_cli("verify", str(out), cwd=tmp_path)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "All" in good.stdout and "match" in good.stdout


def test_verify_passes_on_a_good_dir_and_reports_an_altered_weight_file(tmp_path):
    out = _forge(tmp_path, "model", 3, "output.max_shard_size=100KB")
    good = run_cli("verify", str(out), cwd=tmp_path)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "All" in good.stdout and "match" in good.stdout

    shard = sorted(out.glob("flax_model-*.msgpack"))[1]
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF
    shard.write_bytes(bytes(data))
    bad = run_cli("verify", str(out), cwd=tmp_path)
    assert bad.returncode == 1
    report = " ".join(bad.stdout.split())
    assert f"{shard.name} (altered)" in report and "1 of" in report


def test_verify_refuses_a_directory_without_manifest(tmp_path):
    result = run_cli("verify", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "vedforge_manifest.json" in result.stderr and "Traceback" not in result.stderr


def test_verify_reports_a_deleted_file_as_missing(tmp_path):
    out = _forge(tmp_path, "model", 3)
    (out / "vocab.json").unlink()
    result = run_cli("verify", str(out), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    report = " ".join(result.stdout.split())
    assert "1 of" in report and "vocab.json (missing)" in report, report
    assert "altered" not in report


def test_verify_says_a_path_that_does_not_exist_does_not_exist(tmp_path):
    result = run_cli("verify", str(tmp_path / "no" / "such"), cwd=tmp_path)
    message = " ".join(result.stderr.split())
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"'{tmp_path / 'no' / 'such'}' does not exist" in message and "vedforge_manifest.json" not in message, message
