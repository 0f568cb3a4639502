"""A prefix forge imports what it uses: torch and transformers' PyTorch classes, never jax or flax."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
from test_prefix import save_torch_checkpoint  # noqa: E402


def _imported(run: subprocess.CompletedProcess) -> set[str]:
    """Top-level packages a ``python -X importtime`` run imported."""
    names = set()
    for line in run.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def test_a_prefix_forge_of_pretrained_parts_loads_no_jax_or_flax(tmp_path):
    tower = save_torch_checkpoint("vit_tiny", tmp_path / "vit")
    lm = save_torch_checkpoint("llama_tiny", tmp_path / "llama", causal_lm=True)
    env = {k: v for k, v in os.environ.items() if k not in ("USE_FLAX", "USE_JAX", "USE_TORCH")}
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "vedforge", "architecture=prefix", "backend=pt",
         f"encoder.name_or_path={tower}", "encoder.weights=pretrained", f"decoder.name_or_path={lm}",
         "decoder.weights=pretrained", f"output.dir={tmp_path / 'out'}"],
        cwd=tmp_path, env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    imported = _imported(run)
    assert "torch" in imported and "transformers" in imported
    assert not imported & {"jax", "jaxlib", "flax"}


def test_importing_vedforge_changes_nothing_the_process_can_import_later():
    """The CLI hides jax or torch from transformers for its own run only: ``import vedforge`` sets nothing."""
    code = ("import os, vedforge, vedforge.pipeline.runner, vedforge.recipe.backends; "
            "print(os.environ.get('USE_FLAX'), os.environ.get('USE_TORCH'))")
    env = {k: v for k, v in os.environ.items() if k not in ("USE_FLAX", "USE_JAX", "USE_TORCH")}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert run.stdout.split() == ["None", "None"], run.stderr
