"""Where transformers has no Flax classes (transformers 5; under 4.57, ``USE_FLAX=0`` hides them the
same way): a bare ``vedforge`` forges the embedded default as a PyTorch model and says so, and what
needs Flax is refused in one paragraph that names the command installing the Flax profile."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests_support import run_cli

NO_FLAX = {"USE_FLAX": "0"}
INSTALL = 'pip install "vedforge[flax]"'


def _python(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, **NO_FLAX, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_a_bare_vedforge_forges_the_embedded_default_as_a_pytorch_model(tmp_path):
    pytest.importorskip("torch")
    result = run_cli(f"output.dir={tmp_path / 'out'}", cwd=tmp_path, env=NO_FLAX)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert (out / "model.safetensors").is_file() and not (out / "flax_model.msgpack").exists()
    manifest = json.loads((out / "vedforge_manifest.json").read_text())
    assert manifest["backend"] == "pt" and manifest["recipe"]["encoder"]["name_or_path"] == "builtin:vit_tiny"
    said = [line for line in (out / "vedforge.log").read_text().splitlines() if "No Flax classes here" in line]
    assert len(said) == 1 and "backend=pt" in said[0] and INSTALL in said[0]


def test_backend_flax_is_refused_in_one_paragraph_with_the_install_command(tmp_path):
    result = run_cli("backend=flax", "encoder=vit_tiny", f"output.dir={tmp_path / 'out'}", cwd=tmp_path, env=NO_FLAX)
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split("vedforge: error: ", 1)[1].split())
    assert message.startswith("backend=flax") and INSTALL in message and "backend=pt" in message
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_vedforge_compat_is_refused_at_import_with_the_same_paragraph(tmp_path):
    probe = ("import vedforge.core.errors as e\n"
             "try:\n    import vedforge.compat\n"
             "except e.FlaxUnavailableError as exc:\n"
             "    assert isinstance(exc, ImportError); print(exc)\n"
             "else:\n    raise SystemExit('imported')\n")
    result = _python("-c", probe, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("vedforge.compat") and INSTALL in result.stdout and "\n" not in result.stdout.strip()
    script = tmp_path / "train.py"
    script.write_text("print('ran')\n")
    run = _python("-m", "vedforge.compat", str(script), cwd=tmp_path)
    assert run.returncode != 0 and "ran" not in run.stdout
    assert "FlaxUnavailableError" in run.stderr and INSTALL in run.stderr
