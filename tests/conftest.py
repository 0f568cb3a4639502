"""Shared fixtures: tiny real checkpoints on disk, and recipes composed with Hydra's compose API."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Derivations vedforge caches (vedforge.core.derived_cache) go to a folder of this test session,
# not the user's cache: every session starts cold, and its forges share what they derive.
os.environ.setdefault("VEDFORGE_CACHE", tempfile.mkdtemp(prefix="vedforge-test-cache-"))
# Tests of a forge's behaviour (its plan's refusals and warnings, what it calls) forge inputs
# other tests forged already: they plan every forge. tests/pipeline/test_replay.py turns replays on.
os.environ.setdefault("VEDFORGE_REPLAY", "off")

# The CLI, run in-process by some tests, tells transformers to leave out torch or jax for a run
# that does not need them (USE_TORCH=0, USE_FLAX=0), before transformers is first imported.
# transformers reads those once per process: import it here, with every framework, so a test
# that plans a prefix recipe in-process does not take Flax away from the tests after it.
import transformers  # noqa: E402,F401

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from vedforge.core.frameworks import flax_classes_available, transformers_version
from vedforge.core.resources import assets_dir, config_dir
from vedforge.recipe.schema import register_schema

FLAX = flax_classes_available()
FLAX_ONLY_REASON = (f"needs vedforge's Flax profile (transformers 4.57 with jax and flax); "
                    f"this environment has transformers {transformers_version()}")
# A test of the Flax route: skipped where transformers has no Flax classes (transformers 5).
needs_flax = pytest.mark.skipif(not FLAX, reason=FLAX_ONLY_REASON)
TRANSFORMERS_5 = int(transformers_version().split(".")[0]) >= 5

ENCODERS = ("vit", "beit", "dinov2", "clip")
DECODERS = ("gpt2", "bert", "roberta", "bart")
_METADATA_SUFFIXES = (".json", ".txt")


def save_tiny_checkpoint(name: str, role: str, dest: Path, *, seed: int = 1, safetensors: bool = False) -> Path:
    """Save the embedded tiny ``name`` with random weights as a real checkpoint directory.

    The weights are written by transformers' own ``save_pretrained`` so the forge reads
    exactly what a hub checkpoint would hold.
    """
    from tests_support import save_random_checkpoint
    from transformers import AutoConfig

    from vedforge.compat import register_clip_vision
    from vedforge.sources.loading import checkpoint_class

    register_clip_vision()
    src = assets_dir() / f"{name}_tiny"
    config = AutoConfig.from_pretrained(src)
    save_random_checkpoint(checkpoint_class(config, role), config, dest, seed=seed, safetensors=safetensors)
    _copy_metadata(src, dest)
    return dest


def _copy_metadata(src: Path, dest: Path) -> None:
    """The asset's tokenizer and processor files beside a saved checkpoint (its config is the saved one)."""
    for item in src.iterdir():
        if item.suffix in _METADATA_SUFFIXES and item.name != "config.json":
            shutil.copy(item, dest / item.name)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Every embedded tiny model saved as a checkpoint with weight files, keyed by family
    (saved by transformers' Flax classes: the tests that use them skip without Flax)."""
    if not FLAX:
        pytest.skip(FLAX_ONLY_REASON)
    root = tmp_path_factory.mktemp("checkpoints")
    paths = {name: save_tiny_checkpoint(name, "encoder", root / name) for name in ENCODERS}
    paths.update({name: save_tiny_checkpoint(name, "decoder", root / name) for name in DECODERS})
    return paths


@pytest.fixture(autouse=True)
def _framework_choice_stays_with_its_test() -> Iterator[None]:
    """A CLI run in-process sets USE_TORCH / USE_FLAX for its own run; the next test, and the
    processes it starts, must not inherit that choice."""
    saved = {name: os.environ.get(name) for name in ("USE_TORCH", "USE_FLAX")}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session", autouse=True)
def _schema() -> None:
    register_schema()


@pytest.fixture
def own_cache(tmp_path, monkeypatch) -> Path:
    """A cache of derivations (and weights jobs, and forge records) of this test's own, empty at its start."""
    path = tmp_path / "cache"
    monkeypatch.setenv("VEDFORGE_CACHE", str(path))
    return path


def compose_recipe(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose ``conf/config.yaml`` with ``overrides`` exactly as the CLI does."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def local_recipe(checkpoints: dict[str, Path], encoder: str, decoder: str, out: Path, *extra: str) -> DictConfig:
    """A recipe pairing two local tiny checkpoints, writing to ``out``."""
    return compose_recipe(
        [
            f"encoder.name_or_path={checkpoints[encoder]}",
            "encoder.weights=pretrained",
            f"decoder.name_or_path={checkpoints[decoder]}",
            "decoder.weights=pretrained",
            f"output.dir={out}",
            *extra,
        ]
    )


def save_torch_checkpoint(name: str, role: str, dest: Path, *, seed: int = 1) -> Path:
    """Save the embedded tiny ``name`` with random weights, as transformers' PyTorch
    ``save_pretrained`` writes it (``model.safetensors``), with its tokenizer or processor files."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    src = assets_dir() / f"{name}_tiny"
    config = AutoConfig.from_pretrained(src)
    torch.manual_seed(seed)
    model = (AutoModel if role == "encoder" else AutoModelForCausalLM).from_config(config)
    model.save_pretrained(dest)
    _copy_metadata(src, dest)
    return dest


@pytest.fixture(scope="session")
def tiny_torch_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Tiny checkpoints saved by transformers' PyTorch classes, with or without Flax: vit and swin
    (encoders), gpt2 and bart (decoders)."""
    pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("torch_checkpoints")
    paths = {name: save_torch_checkpoint(name, "encoder", root / name) for name in ("vit", "swin")}
    paths.update({name: save_torch_checkpoint(name, "decoder", root / name) for name in ("gpt2", "bart")})
    return paths
