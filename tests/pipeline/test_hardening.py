"""A real full disk, and secrets kept out of every file a run leaves behind and everything it prints."""

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


# Not shaped like a Hugging Face token ("hf_" and 34 letters and digits), so only being told what
# the token is keeps it out.
CANARY = "hf_CANARY_vedforge_secret_5f2c9e"


def _sweep(*args: str) -> list[str]:
    return ["-m", *args, "hydra.sweep.dir=sweep"]


# Each case: command lines run in turn in one directory (cwd), with the exit code each must give.
SECRET_CASES = {
    "forge into output.dir": [([f"hub.token={CANARY}", "output.dir=model"], 0)],
    "forge into Hydra's run dir": [([f"hub.token={CANARY}"], 0)],
    "sweep": [(_sweep("encoder=vit_tiny,beit_tiny", f"hub.token={CANARY}"), 0)],
    "sweep with joblib": [(_sweep("encoder=vit_tiny,beit_tiny", f"++hub.token='{CANARY}'", "hydra/launcher=joblib",
                                  "hydra.launcher.n_jobs=2"), 0)],
    "sweep over tokens": [(_sweep(f"hub.token=choice({CANARY}_a,{CANARY}_b)"), 0)],
    "failing forge": [([f"hub.token={CANARY}", "encoder.name_or_path=/no/such/checkpoint", "output.dir=model"], 2),
                      ([f"hub.token={CANARY}", "encoder.name_or_path=/no/such/checkpoint"], 2)],
    "failing forge with tracebacks": [
        ([f"hub.token={CANARY}", "encoder.name_or_path=/no/such/checkpoint"], 2, {"VEDFORGE_DEBUG": "1"}),
        ([f"hub.token={CANARY}", "encoder.name_or_path=/no/such/checkpoint"], 2,
         {"VEDFORGE_DEBUG": "1", "HYDRA_FULL_ERROR": "1"})],
    "sweep with a failing pair": [(_sweep("encoder=vit_tiny", "decoder.name_or_path=builtin:gpt2_tiny,/no/such/checkpoint",
                                          f"hub.token={CANARY}"), 2)],
    "composition errors": [([f"hub.token={CANARY}", "seed=abc"], 2),
                           ([f"hub.token={CANARY}", "seed=abc"], 2, {"HYDRA_FULL_ERROR": "1"}),
                           ([f"hub.token=[{CANARY}"], 2),
                           (_sweep("encoder=vit_tiny,vit_huge", f"hub.token={CANARY}"), 2)],
    "plan": [(["plan", f"hub.token={CANARY}"], 0), (["plan", "--json", f"hub.token={CANARY}"], 0),
             (["plan", "-m", "encoder=vit_tiny,vit_huge", f"hub.token={CANARY}"], 2),
             (["plan", "-m", "--json", "encoder=vit_tiny,vit_huge", f"hub.token={CANARY}"], 2)],
    "printing the config": [([f"hub.token={CANARY}", "--cfg", "job"], 0), ([f"hub.token={CANARY}", "--cfg", "all"], 0),
                            ([f"hub.token={CANARY}", "--info", "config"], 0)],
}


@pytest.mark.parametrize("case", SECRET_CASES)
def test_a_hub_token_on_the_command_line_is_printed_and_written_nowhere(case, tmp_path):
    if "joblib" in case:
        pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    temp = tmp_path / "tmp"  # the private run directory of a forge with output.dir, among others
    temp.mkdir()
    printed = []
    for args, code, *env in SECRET_CASES[case]:
        result = run_cli(*args, cwd=tmp_path, env={"TMPDIR": str(temp), **(env[0] if env else {})})
        assert result.returncode == code, (args, result.stderr)
        printed.append(result.stdout + result.stderr)
    everything = "\n".join(printed)
    assert CANARY not in everything, everything
    if case.startswith("sweep"):  # Hydra's line for each job names its overrides
        assert "hub.token=<redacted>" in everything
    assert _files_containing(tmp_path, CANARY) == []


def test_a_hub_token_in_the_recipe_appears_in_no_file(tmp_path):
    result = run_cli(f"hub.token={CANARY}", f"output.dir={tmp_path / 'model'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "model" / ".hydra" / "overrides.yaml").is_file()
    assert _files_containing(tmp_path, CANARY) == []
    assert CANARY not in result.stdout + result.stderr


def test_a_hub_token_in_a_sweep_appears_in_no_file(tmp_path):
    result = run_cli("-m", "encoder=vit_tiny,beit_tiny", f"hub.token={CANARY}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "sweep" / "multirun.yaml").is_file()
    assert _files_containing(tmp_path, CANARY) == []
    assert CANARY not in result.stdout + result.stderr


def test_a_hub_token_in_a_recipe_file_is_printed_nowhere(tmp_path):
    # Shaped like a real token: --cfg prints the composed recipe before vedforge could read it.
    token = "hf_" + "Q7vX2mK9pL4sT8wZ1nB6cR3yF5gH0jD2aE"
    (tmp_path / "mine" / "recipe").mkdir(parents=True)
    (tmp_path / "mine" / "recipe" / "private.yaml").write_text(f"# @package _global_\nhub:\n  token: {token}\n")
    printed = []
    for flags, overrides in ((["--cfg", "job"], []), ([], ["output.dir=model"]), (["-m"], ["seed=1,2", "hydra.sweep.dir=sweep"])):
        result = run_cli("--config-dir", "mine", *flags, "recipe=private", *overrides, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        printed.append(result.stdout + result.stderr)
    assert "token: <redacted>" in printed[0]
    assert token not in "\n".join(printed)
    assert [p for p in _files_containing(tmp_path, token) if not p.startswith("mine/")] == []


def test_trust_remote_code_is_off_unless_set_and_recorded_when_on(tmp_path):
    import json

    off = run_cli(f"output.dir={tmp_path / 'off'}", cwd=tmp_path)
    on = run_cli(f"output.dir={tmp_path / 'on'}", "hub.trust_remote_code=true", cwd=tmp_path)
    assert off.returncode == on.returncode == 0
    assert json.loads((tmp_path / "off" / "vedforge_manifest.json").read_text())["recipe"]["hub"]["trust_remote_code"] is False
    assert json.loads((tmp_path / "on" / "vedforge_manifest.json").read_text())["recipe"]["hub"]["trust_remote_code"] is True
