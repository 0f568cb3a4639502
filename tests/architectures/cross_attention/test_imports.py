"""A cross-attention forge of pretrained parts imports what it uses: a Flax forge no jax, flax or
torch once its configuration's tree is derived; a PyTorch forge no jax or flax."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FLAX, FLAX_ONLY_REASON

FRAMEWORKS = {"jax", "jaxlib", "flax", "torch"}


def _forge(tmp_path: Path, out: Path, cache: Path, *overrides: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``python -X importtime -m vedforge`` with ``overrides``; the run and the top-level
    packages it imported."""
    env = {k: v for k, v in os.environ.items() if k not in ("USE_FLAX", "USE_JAX", "USE_TORCH")}
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "vedforge", *overrides, f"output.dir={out}",
                          "hydra.output_subdir=null"],
                         cwd=tmp_path, env={**env, "HF_HUB_OFFLINE": "1", "VEDFORGE_CACHE": str(cache)},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    names = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in run.stderr.splitlines()
             if line.startswith("import time:") and "|" in line}
    return run, names


def _parts(tiny_checkpoints: dict[str, Path], encoder: str = "vit", decoder: str = "gpt2") -> list[str]:
    return [f"encoder.name_or_path={tiny_checkpoints[encoder]}", "encoder.weights=pretrained",
            f"decoder.name_or_path={tiny_checkpoints[decoder]}", "decoder.weights=pretrained"]


@pytest.mark.skipif(not FLAX, reason=FLAX_ONLY_REASON)
def test_a_flax_forge_of_pretrained_parts_loads_no_framework_once_its_tree_is_derived(tmp_path, tiny_checkpoints):
    cache = tmp_path / "cache"
    first, first_imported = _forge(tmp_path, tmp_path / "first", cache, *_parts(tiny_checkpoints), "backend=flax")
    # The first forge of this configuration traces the tree with transformers' Flax classes.
    assert {"jax", "flax"} <= first_imported
    second, imported = _forge(tmp_path, tmp_path / "second", cache, *_parts(tiny_checkpoints), "backend=flax")
    assert "transformers" in imported
    assert not imported & FRAMEWORKS, sorted(imported & FRAMEWORKS)
    # The tree read back gives the same model, byte for byte.
    for name in ("flax_model.msgpack", "config.json", "preprocessor_config.json", "tokenizer.json"):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes(), name


@pytest.mark.skipif(not FLAX, reason=FLAX_ONLY_REASON)
def test_a_cache_entry_that_is_not_a_tree_is_derived_again(tmp_path, tiny_checkpoints):
    cache = tmp_path / "cache"
    _forge(tmp_path, tmp_path / "first", cache, *_parts(tiny_checkpoints), "backend=flax")
    for entry in (cache / "derived" / "flax-tree").glob("*.json"):
        entry.write_text('{"kind": "flax-tree", "value": [["only", "a"], "path"]}')
    _, imported = _forge(tmp_path, tmp_path / "second", cache, *_parts(tiny_checkpoints), "backend=flax")
    assert "jax" in imported  # traced again
    assert ((tmp_path / "first" / "flax_model.msgpack").read_bytes()
            == (tmp_path / "second" / "flax_model.msgpack").read_bytes())


def test_a_pytorch_forge_of_pretrained_parts_loads_no_jax_or_flax(tmp_path, tiny_checkpoints):
    pytest.importorskip("torch")
    run, imported = _forge(tmp_path, tmp_path / "out", tmp_path / "cache", *_parts(tiny_checkpoints, "beit", "bert"),
                           "backend=pt")
    assert {"torch", "transformers"} <= imported
    assert not imported & {"jax", "jaxlib", "flax"}, sorted(imported & {"jax", "jaxlib", "flax"})
    assert (tmp_path / "out" / "model.safetensors").is_file()
