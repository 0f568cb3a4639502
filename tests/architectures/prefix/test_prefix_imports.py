"""A prefix forge imports what it uses: torch and transformers' PyTorch classes, never jax or flax."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
from conftest import TRANSFORMERS_5  # noqa: E402
from test_prefix import save_torch_checkpoint  # noqa: E402


def _imported(run: subprocess.CompletedProcess) -> set[str]:
    """Top-level packages a ``python -X importtime`` run imported."""
    names = set()
    for line in run.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def _forge(tmp_path, tower, lm, out, cache, tower_weights="pretrained") -> set[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("USE_FLAX", "USE_JAX", "USE_TORCH")}
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "vedforge", "architecture=prefix", "backend=pt",
         f"encoder.name_or_path={tower}", f"encoder.weights={tower_weights}", f"decoder.name_or_path={lm}",
         "decoder.weights=pretrained", f"output.dir={out}"],
        cwd=tmp_path, env={**env, "HF_HUB_OFFLINE": "1", "VEDFORGE_CACHE": str(cache)}, capture_output=True,
        text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return _imported(run)


@pytest.mark.skipif(TRANSFORMERS_5, reason="transformers 5's configuration module imports torch itself")
def test_a_prefix_forge_of_pretrained_parts_loads_no_framework_in_its_own_process(tmp_path):
    tower = save_torch_checkpoint("vit_tiny", tmp_path / "vit")
    lm = save_torch_checkpoint("llama_tiny", tmp_path / "llama", causal_lm=True)
    cache = tmp_path / "cache"
    # The first forge of these configurations reads the PyTorch classes in the torch worker.
    first = _forge(tmp_path, tower, lm, tmp_path / "first", cache)
    assert "transformers" in first
    assert not first & {"torch", "jax", "jaxlib", "flax"}, sorted(first & {"torch", "jax", "jaxlib", "flax"})
    assert any((cache / "derived").rglob("*.json"))
    # The next reads what the first derived: no worker, the same files.
    second = _forge(tmp_path, tower, lm, tmp_path / "second", cache)
    assert not second & {"torch", "jax", "jaxlib", "flax"}
    for name in ("model.safetensors", "config.json", "tokenizer.json", "processor_config.json"):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes(), name


def test_a_prefix_forge_with_a_random_part_keeps_torch_for_drawing_it(tmp_path):
    lm = save_torch_checkpoint("llama_tiny", tmp_path / "llama", causal_lm=True)
    imported = _forge(tmp_path, "builtin:vit_tiny", lm, tmp_path / "out", tmp_path / "cache", tower_weights="random")
    assert "torch" in imported and not imported & {"jax", "jaxlib", "flax"}
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_importing_vedforge_changes_nothing_the_process_can_import_later():
    """The CLI hides jax or torch from transformers for its own run only: ``import vedforge`` sets nothing."""
    code = ("import os, vedforge, vedforge.pipeline.runner, vedforge.recipe.backends; "
            "print(os.environ.get('USE_FLAX'), os.environ.get('USE_TORCH'))")
    env = {k: v for k, v in os.environ.items() if k not in ("USE_FLAX", "USE_JAX", "USE_TORCH")}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert run.stdout.split() == ["None", "None"], run.stderr
