"""Sweeps through Hydra's process-parallel launchers: each job writes only its own pair, the summary is complete."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from tests_support import run_cli
from vedforge.core.errors import EXIT_USER_ERROR
from vedforge.sweeps.launchers import LAUNCHER_EXTRAS, missing_launcher


def _sweep(tmp_path, *launcher_args):
    result = run_cli("-m", "encoder=vit_tiny,beit_tiny", "decoder=gpt2_tiny,bert_tiny",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", *launcher_args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())
    assert summary["forged"] == 4 and not summary["failed"]
    for row in summary["rows"]:
        assert (tmp_path / "sweep" / row["pair"] / "vedforge_manifest.json").is_file()
    return summary


# Each starts a pool of fresh interpreters (about 20 s): run with -m slow, as CI does.
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None,
                    reason="pip install vedforge[joblib]")
def test_joblib_sweep(tmp_path):
    _sweep(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
                    reason="pip install vedforge[submitit]")
def test_submitit_local_sweep(tmp_path):
    _sweep(tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10")


def test_a_launcher_that_is_not_installed_names_its_extra(monkeypatch):
    import vedforge.sweeps.launchers

    monkeypatch.setattr(vedforge.sweeps.launchers, "_installed", lambda module: module != "ray")
    message = missing_launcher(["-m", "encoder=vit_tiny", "hydra/launcher=ray"])
    assert "hydra/launcher=ray" in message and "ray cannot be imported" in message
    assert "pip install 'vedforge[ray]'" in message
    assert missing_launcher(["-m", "hydra/launcher=joblib", "seed=1"]) is None
    assert missing_launcher(["hydra/launcher=basic", "launcher=ray"]) is None


def test_every_listed_launcher_is_an_extra_of_the_package():
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    extras = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {extra for _, extra in LAUNCHER_EXTRAS.values()} <= set(extras)


def test_cli_refuses_a_missing_launcher_before_hydra_starts(tmp_path):
    # The plugin hidden from this interpreter, as if vedforge[ray] were not installed.
    code = ("import sys; sys.modules['hydra_plugins.hydra_ray_launcher'] = None; "
            "sys.argv = ['vedforge', '-m', 'hydra/launcher=ray']; from vedforge.cli.main import entry; entry()")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == EXIT_USER_ERROR
    assert "pip install 'vedforge[ray]'" in " ".join(result.stderr.split()) and "Traceback" not in result.stderr
    assert not (tmp_path / "multirun").exists()
