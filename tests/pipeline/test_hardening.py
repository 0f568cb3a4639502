"""A real full disk, and secrets kept out of every file a run leaves behind."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests_support import run_cli
from vedforge.core.errors import EXIT_USER_ERROR


@pytest.fixture
def small_disk(tmp_path):
    """A 600 KiB tmpfs: room for one tiny artifact, not for a second one beside it."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_full_disk_keeps_the_earlier_artifact_and_says_so(small_disk, tmp_path):
    out = small_disk / "model"
    first = run_cli(f"output.dir={out}", "seed=1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    second = run_cli(f"output.dir={out}", "seed=2", "output.overwrite=true", cwd=tmp_path)
    message = " ".join(second.stderr.split())
    assert second.returncode == EXIT_USER_ERROR, second.stderr
    assert "No space left on device (ENOSPC)" in message and str(out) in message and "untouched" in message
    assert "Traceback" not in second.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert [p.name for p in small_disk.iterdir()] == ["model"]


def _files_containing(root: Path, secret: str) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and secret.encode() in path.read_bytes():
            hits.append(str(path.relative_to(root)))
    return hits


def test_a_hub_token_in_the_recipe_appears_in_no_file(tmp_path):
    secret = "hf_vedforgeTestSecret0123456789"
    result = run_cli(f"hub.token={secret}", f"output.dir={tmp_path / 'model'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "model" / ".hydra" / "overrides.yaml").is_file()
    assert _files_containing(tmp_path, secret) == []
    assert secret not in result.stdout + result.stderr


def test_a_hub_token_in_a_sweep_appears_in_no_file(tmp_path):
    secret = "hf_vedforgeSweepSecret9876543210"
    result = run_cli("-m", "encoder=vit_tiny,beit_tiny", f"hub.token={secret}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "sweep" / "multirun.yaml").is_file()
    assert _files_containing(tmp_path, secret) == []


def test_trust_remote_code_is_off_unless_set_and_recorded_when_on(tmp_path):
    import json

    off = run_cli(f"output.dir={tmp_path / 'off'}", cwd=tmp_path)
    on = run_cli(f"output.dir={tmp_path / 'on'}", "hub.trust_remote_code=true", cwd=tmp_path)
    assert off.returncode == on.returncode == 0
    assert json.loads((tmp_path / "off" / "vedforge_manifest.json").read_text())["recipe"]["hub"]["trust_remote_code"] is False
    assert json.loads((tmp_path / "on" / "vedforge_manifest.json").read_text())["recipe"]["hub"]["trust_remote_code"] is True
