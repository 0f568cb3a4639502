"""Which runs import torch, what a missing torch says, and sweeps that mix backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import compose_recipe
from vedforge.recipe.backends import needs_flax, sweep_needs_flax, sweep_needs_torch
from vedforge.core.errors import EXIT_USER_ERROR

# Runs the CLI in-process, then reports whether torch was imported; TORCH_BLOCKED makes
# `import torch` fail as it does where torch is not installed.
_PROBE = """
import atexit, sys
if "{blocked}" == "1":
    sys.modules["torch"] = None
atexit.register(lambda: print("TORCH_IMPORTED=" + str("torch" in sys.modules and sys.modules["torch"] is not None)))
sys.argv = ["vedforge", *{args!r}]
from vedforge.cli.main import main
main()
"""


def _probe(tmp_path: Path, *args: str, blocked: bool = False, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("VEDFORGE_DEBUG", "USE_TORCH")}
    environment.update({"HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu", **(env or {})})
    code = _PROBE.format(blocked="1" if blocked else "0", args=list(args))
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=environment, capture_output=True, text=True,
                          timeout=300)


def test_a_flax_forge_never_imports_torch(tmp_path):
    pytest.importorskip("torch")  # only meaningful where torch is installed
    result = _probe(tmp_path, f"output.dir={tmp_path / 'out'}")
    assert result.returncode == 0, result.stderr
    assert "TORCH_IMPORTED=False" in result.stdout
    assert (tmp_path / "out" / "flax_model.msgpack").is_file()


def test_a_pytorch_forge_does_import_torch(tmp_path):
    pytest.importorskip("torch")
    result = _probe(tmp_path, "backend=pt", f"output.dir={tmp_path / 'out'}")
    assert result.returncode == 0, result.stderr
    assert "TORCH_IMPORTED=True" in result.stdout
    assert (tmp_path / "out" / "model.safetensors").is_file()


@pytest.mark.parametrize("override", ["backend=pt", "output.pytorch=true"])
def test_missing_torch_fails_at_once_saying_how_to_install_it(tmp_path, override):
    result = _probe(tmp_path, override, f"output.dir={tmp_path / 'out'}", blocked=True)
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert override in message and 'pip install "vedforge[torch]"' in message and "backend=flax" in message
    assert not (tmp_path / "out").exists()


def test_use_torch_0_with_backend_pt_is_explained(tmp_path):
    pytest.importorskip("torch")
    result = _probe(tmp_path, "backend=pt", f"output.dir={tmp_path / 'out'}", env={"USE_TORCH": "0"})
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    assert "USE_TORCH=0" in " ".join(result.stderr.split())


@pytest.mark.parametrize(
    "overrides, params, expected",
    [
        (["encoder=vit_tiny,beit_tiny"], {}, False),
        (["backend=flax,pt"], {}, True),
        (["backend=choice(pt,flax)"], {}, True),
        (["output.pytorch=true,false"], {}, True),
        (["+backend.name=pt"], {}, True),
        ([], {"backend": "flax,pt"}, True),
        ([], {"decoder": "gpt2_tiny,bert_tiny"}, False),
        (["token_policy=explicit"], {}, False),
    ],
)
def test_a_sweep_imports_torch_only_if_some_job_writes_pytorch(overrides, params, expected):
    assert sweep_needs_torch(compose_recipe(), overrides, params) is expected


@pytest.mark.parametrize(
    "base, overrides, params, expected",
    [
        ([], [], {}, True),  # cross-attention traces Flax classes, whatever the backend
        (["backend=pt"], [], {}, True),
        (["recipe=tiny_prefix_smoke"], [], {}, False),
        (["recipe=tiny_prefix_smoke"], ["architecture=prefix,cross_attention"], {}, True),
        ([], ["architecture=prefix"], {}, False),
        ([], [], {"architecture": "prefix"}, False),
    ],
)
def test_only_runs_with_a_cross_attention_job_let_transformers_import_jax(base, overrides, params, expected):
    cfg = compose_recipe(base)
    assert sweep_needs_flax(cfg, overrides, params) is expected
    if not overrides and not params:
        assert needs_flax(cfg) is expected


def test_base_recipe_with_backend_pt_needs_torch():
    assert sweep_needs_torch(compose_recipe(["backend=pt"]), [], {}) is True


def test_a_sweep_mixes_backends_and_the_summary_says_which(tmp_path):
    pytest.importorskip("torch")
    sweep = tmp_path / "sweep"
    result = _probe(tmp_path, "-m", "backend=flax,pt", "encoder=vit_tiny,swin_tiny", f"hydra.sweep.dir={sweep}")
    summary = json.loads((sweep / "summary.json").read_text())
    rows = {row["pair"]: row for row in summary["rows"]}
    assert rows["swin_tiny__gpt2_tiny__backend=flax"]["status"] == "failed"
    assert "backend=pt" in rows["swin_tiny__gpt2_tiny__backend=flax"]["error"]
    assert result.returncode == EXIT_USER_ERROR  # the one refused pair; the others are complete
    for pair in ("vit_tiny__gpt2_tiny__backend=flax", "vit_tiny__gpt2_tiny__backend=pt", "swin_tiny__gpt2_tiny__backend=pt"):
        assert rows[pair]["status"] == "forged", rows[pair]
        assert rows[pair]["backend"] == pair.rsplit("=", 1)[1]
        out = Path(rows[pair]["output_dir"])
        assert (out / "model.safetensors").is_file() == pair.endswith("pt")
        assert (out / "flax_model.msgpack").is_file() == pair.endswith("flax")
    assert "| backend |" in (sweep / "summary.md").read_text()


@pytest.mark.parametrize("overrides, named", [
    (["output.format=safetensors"], ["output.format=safetensors"]),
    (["output.pytorch=true"], ["output.pytorch=true"]),
    (["output.format=safetensors", "output.pytorch=true"], ["output.format=safetensors", "output.pytorch=true"]),
])
def test_flax_output_settings_with_backend_pt_are_refused(tmp_path, overrides, named):
    """backend=pt always writes PyTorch model.safetensors; the Flax output choices would be ignored."""
    from vedforge.core.errors import RecipeError
    from vedforge.pipeline.runner import forge

    with pytest.raises(RecipeError) as refused:
        forge(compose_recipe(["backend=pt", *overrides, f"output.dir={tmp_path / 'out'}"]))
    message = str(refused.value)
    assert "\n" not in message
    for setting in named:
        assert setting in message
    assert "backend=flax" in message and "backend=pt always writes PyTorch model.safetensors" in message
    assert not (tmp_path / "out").exists()
