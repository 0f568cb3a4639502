"""Helpers shared by the tests: checkpoint builders, and a watch on which weights files are opened."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def save_random_checkpoint(cls, config, dest: Path, *, seed: int, safetensors: bool = False) -> None:
    """Save a randomly initialised ``cls(config)`` with transformers' own ``save_pretrained``.

    The weights are drawn by vedforge's seeded generator (the distributions of transformers'
    Flax init, checked in test_random_init), so building a test checkpoint compiles nothing;
    the file is the one transformers writes for those parameters.
    """
    import numpy as np
    from flax.traverse_util import unflatten_dict

    from vedforge.families.random_init import UnknownInitializerError, random_part_state

    params = {}
    for path, tensor in random_part_state(lambda: cls, config, seed=seed, role="checkpoint", choice=cls.__name__).items():
        try:
            params[path] = np.asarray(tensor)
        except UnknownInitializerError:
            # A full CLIP model's logit scale starts at a constant from its config.
            assert path == ("logit_scale",), path
            params[path] = np.full(tensor.shape, config.logit_scale_init_value, tensor.dtype)
    model = cls(config, _do_init=False)
    dest.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # BART's seq2seq config keeps forced_bos_token_id, which save_pretrained warns about.
        warnings.simplefilter("ignore", UserWarning)
        model.save_pretrained(dest, params=unflatten_dict(params), safe_serialization=safetensors)


def resized_checkpoint(checkpoints: dict[str, Path], name: str, dest: Path, **config_changes) -> Path:
    """A copy of tiny checkpoint ``name`` whose config is changed and whose weights are re-initialised to fit."""
    from transformers import AutoConfig

    from vedforge.sources.loading import checkpoint_class

    config = AutoConfig.from_pretrained(checkpoints[name])
    for key, value in config_changes.items():
        setattr(config, key, value)
    cls = checkpoint_class(config, "decoder" if name in ("gpt2", "bert", "roberta", "bart") else "encoder")
    save_random_checkpoint(cls, config, dest, seed=3)
    for item in checkpoints[name].iterdir():
        if item.name not in ("config.json", "flax_model.msgpack", "generation_config.json"):
            shutil.copy(item, dest / item.name)
    return dest


def save_torch_siglip_checkpoint(dest: Path, *, seed: int, tower_only: bool = False) -> Path:
    """Save the embedded tiny SigLIP with random weights as transformers' PyTorch classes do
    (SigLIP has no Flax port): a full two-tower ``SiglipModel``, or with ``tower_only`` a bare
    ``SiglipVisionModel``, plus its image processor."""
    import torch
    from transformers import AutoConfig, AutoImageProcessor, SiglipModel, SiglipVisionModel

    from vedforge.core.resources import assets_dir

    src = assets_dir() / "siglip_tiny"
    config = AutoConfig.from_pretrained(src)
    torch.manual_seed(seed)
    model = SiglipVisionModel(config.vision_config) if tower_only else SiglipModel(config)
    model.save_pretrained(dest)
    AutoImageProcessor.from_pretrained(src).save_pretrained(dest)
    return dest


_WEIGHT_SUFFIXES = (".msgpack", ".safetensors", ".bin", ".h5", ".ckpt")


@contextmanager
def no_weight_file_opened() -> Iterator[list[str]]:
    """Record every weights file opened (by ``open``, ``io.open`` or ``os.open``) inside the block."""
    import builtins
    import io

    opened: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def is_weights(path: object) -> bool:
        return isinstance(path, (str, bytes, os.PathLike)) and os.fsdecode(path).endswith(_WEIGHT_SUFFIXES)

    def recording_open(file, *args, **kwargs):
        if is_weights(file):
            opened.append(os.fsdecode(file))
        return real_open(file, *args, **kwargs)

    def recording_os_open(path, *args, **kwargs):
        if is_weights(path):
            opened.append(os.fsdecode(path))
        return real_os_open(path, *args, **kwargs)

    builtins.open = io.open = recording_open
    os.open = recording_os_open
    try:
        yield opened
    finally:
        builtins.open = io.open = real_open
        os.open = real_os_open


def artifact_hashes(directory: Path) -> dict[str, str]:
    """Every file of an artifact but its run log, by sha256: what two forges of one recipe share."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != "vedforge.log"}


def run_cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m vedforge ARGS`` offline in ``cwd`` and return the finished process."""
    environment = {k: v for k, v in os.environ.items() if k != "VEDFORGE_DEBUG"}
    environment.update({"HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "vedforge", *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=300
    )


def add_to_cache(
    cache: Path, repo_id: str, commit: str, src: Path, *, refs: tuple[str, ...] = ("main",),
    subfolder: str = "", symlinks: bool = True,
) -> Path:
    """Put the files of ``src`` into ``cache`` as snapshot ``commit`` of model repo ``repo_id``.

    With ``symlinks`` the layout is the one huggingface_hub writes: content-addressed files
    under ``blobs/`` and relative symlinks to them under ``snapshots/<commit>/``.
    """
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    for item in sorted(p for p in src.rglob("*") if p.is_file()):
        target = snapshot / subfolder / item.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        if symlinks:
            blob = repo_dir / "blobs" / hashlib.sha256(item.read_bytes()).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            if not blob.exists():
                shutil.copyfile(item, blob)
            target.symlink_to(os.path.relpath(blob, target.parent))
        else:
            shutil.copyfile(item, target)
    for ref in refs:
        (repo_dir / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        # huggingface_hub reads refs with f.read(): a trailing newline would break the lookup.
        (repo_dir / "refs" / ref).write_text(commit)
    return snapshot


def flax_source_from_pytorch(pt_forge: Path, dest: Path, *, fmt: str = "msgpack", max_shard_size: str = "5GB",
                             keep_pytorch: bool = False) -> Path:
    """The Flax checkpoint a Flax forge of ``pt_forge``'s recipe writes, made without Flax.

    ``pt_forge`` is a ``backend=pt`` forge. Its PyTorch tensors go back to their Flax paths and
    layout (vedforge.architectures.cross_attention.torch_view, the inverse of the conversion
    every forge and ``vedforge convert`` apply), and vedforge's own writer writes them as
    ``flax_model.msgpack`` (sharded past ``max_shard_size``) or Flax-layout ``model.safetensors``:
    the files a Flax forge writes, where transformers has no Flax classes (transformers 5).
    With ``keep_pytorch`` the PyTorch file stays beside them, as ``output.pytorch=true`` leaves it.
    """
    import numpy as np
    import torch
    from safetensors.numpy import load_file
    from transformers import VisionEncoderDecoderConfig, VisionEncoderDecoderModel

    from vedforge.architectures.cross_attention.torch_view import flax_view
    from vedforge.core.units import parse_size
    from vedforge.weights.writer import write_flax_checkpoint, write_safetensors_checkpoint

    shutil.copytree(pt_forge, dest, ignore=shutil.ignore_patterns("model*.safetensors*", "vedforge.log", ".hydra"))
    config = VisionEncoderDecoderConfig.from_pretrained(pt_forge)
    with torch.device("meta"):
        model = VisionEncoderDecoderModel(config)
    by_name = {saved: (path, axes) for path, (saved, _, axes) in flax_view(model).items()}
    params = {}
    for name, tensor in load_file(pt_forge / "model.safetensors").items():
        if name in by_name:
            path, axes = by_name[name]
            params[path] = np.ascontiguousarray(np.transpose(tensor, axes)) if axes else tensor
    if fmt == "safetensors":
        write_safetensors_checkpoint(dest, params)
    else:
        write_flax_checkpoint(dest, params, parse_size(max_shard_size))
    if keep_pytorch:
        shutil.copy(pt_forge / "model.safetensors", dest / "model.safetensors")
    return dest
