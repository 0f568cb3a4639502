"""With output.dir given, the artifact is the only place a forge writes: Hydra's records and the
log go into it, nothing into the working directory or the temporary directory."""

from __future__ import annotations

import json

from tests_support import run_cli
from vedforge.core.errors import EXIT_USER_ERROR


def _dirs(tmp_path):
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    return cwd, tmp


def test_output_dir_is_the_only_place_written(tmp_path):
    cwd, tmp = _dirs(tmp_path)
    out = tmp_path / "model"
    result = run_cli(f"output.dir={out}", "seed=3", cwd=cwd, env={"TMPDIR": str(tmp)})
    assert result.returncode == 0, result.stderr
    assert list(cwd.iterdir()) == [] and list(tmp.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "model", "tmp"]
    for record in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        assert (out / ".hydra" / record).is_file()
    assert "seed=3" in (out / ".hydra" / "overrides.yaml").read_text()
    log = (out / "vedforge.log").read_text()
    assert "Planning the forge" in log and "Forged vit + gpt2" in log

    # The records are not hashed in the manifest: the artifact verifies, and a second run into
    # the same directory is skipped as complete and adds its log to the first one's.
    manifest = json.loads((out / "vedforge_manifest.json").read_text())
    assert not [name for name in manifest["files"] if name.startswith(".hydra") or name.endswith(".log")]
    again = run_cli(f"output.dir={out}", "seed=3", cwd=cwd, env={"TMPDIR": str(tmp)})
    assert again.returncode == 0, again.stderr
    log = (out / "vedforge.log").read_text()
    assert log.count("Forged vit + gpt2") == 1 and "Already complete, skipped" in log
    verify = run_cli("verify", str(out), cwd=cwd, env={"TMPDIR": str(tmp)})
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert list(cwd.iterdir()) == [] and list(tmp.iterdir()) == []


def test_a_failed_forge_with_output_dir_writes_nothing_anywhere(tmp_path):
    cwd, tmp = _dirs(tmp_path)
    out = tmp_path / "model"
    result = run_cli(f"output.dir={out}", "token_policy.eos_token=99999", cwd=cwd, env={"TMPDIR": str(tmp)})
    assert result.returncode == EXIT_USER_ERROR and "out of range" in result.stderr
    assert not out.exists()
    assert list(cwd.iterdir()) == [] and list(tmp.iterdir()) == []


def test_without_output_dir_hydras_run_directory_holds_the_artifact(tmp_path):
    cwd, tmp = _dirs(tmp_path)
    result = run_cli("--cfg", "job", cwd=cwd, env={"TMPDIR": str(tmp)})
    assert result.returncode == 0 and "${hydra:runtime.output_dir}" in result.stdout
    assert list(tmp.iterdir()) == []
