"""Exact reproducibility: byte-identical forges across processes and hash seeds, and ``vedforge verify``."""

from __future__ import annotations

import json

from tests_support import run_cli


def _forge(tmp_path, name, hash_seed, *extra):
    out = tmp_path / name
    result = run_cli("encoder=dinov2_tiny", "decoder=roberta_tiny", "seed=11", f"output.dir={out}", *extra,
                     cwd=tmp_path, env={"PYTHONHASHSEED": str(hash_seed)})
    assert result.returncode == 0, result.stderr
    return out


def test_same_recipe_in_two_processes_with_different_hash_seeds_is_byte_identical(tmp_path):
    a, b = _forge(tmp_path, "a", 1), _forge(tmp_path, "b", 2)
    files_a = json.loads((a / "vedforge_manifest.json").read_text())["files"]
    files_b = json.loads((b / "vedforge_manifest.json").read_text())["files"]
    assert "flax_model.msgpack" in files_a
    assert files_a == files_b
    assert (a / "flax_model.msgpack").read_bytes() == (b / "flax_model.msgpack").read_bytes()


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
