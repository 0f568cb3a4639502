"""A prefix forge imports what it uses: torch and transformers' PyTorch classes, never jax or flax, and
not ml_dtypes for bfloat16 checkpoints."""

from __future__ import annotations

import json
import os
import struct
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


# `python -m vedforge` with ml_dtypes imported first, as it is in a process that imported jax.
_AFTER_ML_DTYPES = ["-c", "import runpy, ml_dtypes; runpy.run_module('vedforge', run_name='__main__', alter_sys=True)"]


def _forge(tmp_path, tower, lm, out, cache, tower_weights="pretrained", *, ml_dtypes_first=False) -> set[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("USE_FLAX", "USE_JAX", "USE_TORCH")}
    run = subprocess.run(
        [sys.executable, "-X", "importtime", *(_AFTER_ML_DTYPES if ml_dtypes_first else ["-m", "vedforge"]),
         "architecture=prefix", "backend=pt",
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


def test_a_prefix_forge_of_bfloat16_parts_imports_no_ml_dtypes_and_writes_what_ml_dtypes_would(tmp_path):
    # bfloat16 tower and LM: their tensors are copied, the projector and the two grown tables
    # (untied embeddings and head) are computed in bfloat16.
    tower = save_torch_checkpoint("vit_tiny", tmp_path / "vit", dtype=torch.bfloat16)
    lm = save_torch_checkpoint("llama_tiny", tmp_path / "llama", dtype=torch.bfloat16, causal_lm=True)
    cache = tmp_path / "cache"
    outs = {name: tmp_path / name for name in ("first", "second", "with_ml_dtypes")}
    first = _forge(tmp_path, tower, lm, outs["first"], cache)  # reads the classes in the torch worker
    second = _forge(tmp_path, tower, lm, outs["second"], cache)
    assert "ml_dtypes" not in first | second
    assert not (first | second) & {"jax", "jaxlib", "flax"}
    # Where ml_dtypes is already imported, its bfloat16 is the one used: the same bytes.
    assert "ml_dtypes" in _forge(tmp_path, tower, lm, outs["with_ml_dtypes"], cache, ml_dtypes_first=True)
    files = {name: json.loads((out / "vedforge_manifest.json").read_text())["files"] for name, out in outs.items()}
    hashes = [{n: f["sha256"] for n, f in listed.items() if n != "README.md"} for listed in files.values()]
    assert hashes[0] == hashes[1] == hashes[2]
    header = safetensors_header(outs["first"] / "model.safetensors")
    assert {entry["dtype"] for name, entry in header.items() if name != "__metadata__"} == {"BF16"}


def safetensors_header(path) -> dict:
    """The JSON header of a safetensors file."""
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + size])


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
