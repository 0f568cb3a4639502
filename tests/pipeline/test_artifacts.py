"""Publication: a failed forge leaves nothing; an existing artifact is kept unless overwrite is set."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import local_recipe
from vedforge.core.errors import OutputError, VedforgeError
from vedforge.pipeline.runner import forge


def _fail_while_writing_weights(monkeypatch):
    import vedforge.weights.writer as writer

    real = writer.write_msgpack_file

    def write_then_fail(path, items, cancel=None):
        real(path, items[: len(items) // 2], cancel)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer, "write_msgpack_file", write_then_fail)


def test_failure_mid_write_leaves_no_artifact(tiny_checkpoints, tmp_path, monkeypatch):
    _fail_while_writing_weights(monkeypatch)
    with pytest.raises(OutputError, match="No space left on device .ENOSPC.. Nothing was published"):
        forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "out"))
    assert list(tmp_path.iterdir()) == []


def test_every_file_and_directory_is_synced_before_the_artifact_is_published(tiny_checkpoints, tmp_path, monkeypatch):
    import os

    import vedforge.pipeline.artifacts as artifacts

    synced: list[Path] = []
    for name in ("_fsync_file", "_fsync_dir"):
        real = getattr(artifacts, name)
        monkeypatch.setattr(artifacts, name, lambda path, real=real: (synced.append(Path(path)), real(path))[1])
    seen_at_publish: dict[str, set[Path]] = {}
    real_rename = os.rename

    def rename(src, dst):
        src = Path(src)
        if src.name.startswith(".out.partial-"):
            on_disk = {src} | set(src.rglob("*"))
            seen_at_publish["missing"] = on_disk - set(synced)
            seen_at_publish["all"] = on_disk
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    result = forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "out"))
    assert seen_at_publish["missing"] == set()
    assert any(p.name == "flax_model.msgpack" for p in seen_at_publish["all"])
    assert result.output_dir.parent in synced  # the rename itself is made durable


def test_a_failed_sync_publishes_nothing(tiny_checkpoints, tmp_path, monkeypatch):
    import vedforge.pipeline.artifacts as artifacts

    real = artifacts._fsync_file

    def fail_on_weights(path):
        if Path(path).name == "flax_model.msgpack":
            raise OSError(5, "Input/output error")
        real(path)

    monkeypatch.setattr(artifacts, "_fsync_file", fail_on_weights)
    with pytest.raises(OutputError, match="Input/output error .EIO.. Nothing was published"):
        forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "out"))
    assert list(tmp_path.iterdir()) == []


def test_existing_artifact_is_refused_without_overwrite(tiny_checkpoints, tmp_path):
    first = forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "out", "seed=1"))
    before = (first.output_dir / "flax_model.msgpack").read_bytes()
    with pytest.raises(OutputError, match="output.overwrite=true"):
        forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "out", "seed=2"))
    assert (first.output_dir / "flax_model.msgpack").read_bytes() == before


def test_failed_overwrite_keeps_the_previous_artifact(tiny_checkpoints, tmp_path, monkeypatch):
    first = forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "out", "seed=1"))
    files = {p.name: p.read_bytes() for p in first.output_dir.iterdir() if p.is_file()}
    _fail_while_writing_weights(monkeypatch)
    with pytest.raises(OutputError, match="already there is untouched"):
        forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "out", "seed=2", "output.overwrite=true"))
    assert {p.name: p.read_bytes() for p in first.output_dir.iterdir() if p.is_file()} == files
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_overwrite_replaces_once_complete(tiny_checkpoints, tmp_path):
    first = forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "out", "seed=1"))
    old = (first.output_dir / "flax_model.msgpack").read_bytes()
    (first.output_dir / "stale.txt").write_text("from the old artifact")
    second = forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "out", "seed=2", "output.overwrite=true"))
    assert second.output_dir == first.output_dir
    assert (second.output_dir / "flax_model.msgpack").read_bytes() != old
    assert not (second.output_dir / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_image_size_override_reaches_model_and_processor(tiny_checkpoints, tmp_path):
    # Random weights: the overridden architecture is drawn afresh.
    import numpy as np
    from transformers import AutoImageProcessor, VisionEncoderDecoderConfig

    cfg = local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "out", "+encoder.config_overrides.image_size=48",
                       "encoder.name_or_path=builtin:vit_tiny", "encoder.weights=random")
    out = forge(cfg).output_dir
    assert VisionEncoderDecoderConfig.from_pretrained(out).encoder.image_size == 48
    pixels = AutoImageProcessor.from_pretrained(out)(np.zeros((20, 30, 3), np.uint8), return_tensors="np").pixel_values
    assert pixels.shape == (1, 3, 48, 48)


def test_image_size_override_interpolates_pretrained_positions(tiny_checkpoints, tmp_path):
    import numpy as np

    from vedforge.weights.checkpoint import read_state

    result = forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "out", "+encoder.config_overrides.image_size=48"))
    forged = read_state(result.output_dir, pt_converter=None)
    original = read_state(tiny_checkpoints["vit"], pt_converter=None)
    new_pos = np.asarray(forged[("encoder", "embeddings", "position_embeddings")])
    old_pos = np.asarray(original[("embeddings", "position_embeddings")])
    assert old_pos.shape == (1, 17, 32) and new_pos.shape == (1, 37, 32)  # 4x4 -> 6x6 patches + class token
    assert (new_pos[:, 0] == old_pos[:, 0]).all()
    assert result.manifest["resized_tensors"] == {"encoder": ["encoder/embeddings/position_embeddings"]}


def test_safetensors_output_loads_in_stock_flax_with_the_same_weights(tiny_checkpoints, tmp_path):
    import numpy as np
    import transformers
    from flax.traverse_util import flatten_dict

    packed = forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "msgpack"))
    safe = forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "safe", "output.format=safetensors"))
    assert (safe.output_dir / "model.safetensors").is_file() and not (safe.output_dir / "flax_model.msgpack").exists()
    a = flatten_dict(transformers.FlaxVisionEncoderDecoderModel.from_pretrained(packed.output_dir).params)
    b = flatten_dict(transformers.FlaxVisionEncoderDecoderModel.from_pretrained(safe.output_dir).params)
    assert a.keys() == b.keys()
    assert all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)


def test_safetensors_larger_than_a_shard_is_refused_before_loading(tiny_checkpoints, tmp_path):
    with pytest.raises(VedforgeError, match="output.format=msgpack"):
        forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "out", "output.format=safetensors",
                           "output.max_shard_size=10KB"))
    assert list(tmp_path.iterdir()) == []


def test_staging_left_by_a_killed_forge_is_removed_by_the_next_forge_there(tiny_checkpoints, tmp_path):
    # What SIGKILL mid-write leaves: a hidden staging directory with half a checkpoint.
    leftover = tmp_path / ".out.partial-k1ll3d"
    leftover.mkdir()
    (leftover / "flax_model.msgpack").write_bytes(b"\x00" * 1024)
    other = tmp_path / ".other.partial-k1ll3d"  # another output's: not this forge's to remove
    other.mkdir()
    forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "out"))
    assert not leftover.exists() and other.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.partial-k1ll3d", "out"]
