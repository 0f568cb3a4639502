"""Sweeps through Hydra's process-parallel launchers: each job writes only its own pair, the summary is complete."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests_support import run_cli


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
