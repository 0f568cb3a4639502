"""Reading checkpoint weights: every layout transformers writes, and damaged files."""

from __future__ import annotations

import pytest

from conftest import FLAX, FLAX_ONLY_REASON

# Flax-only: checkpoints saved by transformers' Flax classes, or the Flax model itself.
if not FLAX:
    pytest.skip(FLAX_ONLY_REASON, allow_module_level=True)

import json
import shutil
from pathlib import Path

import numpy as np
from flax.traverse_util import flatten_dict
from safetensors.numpy import save_file

from conftest import save_tiny_checkpoint
from vedforge.weights.checkpoint import (
    FLAX_INDEX,
    FLAX_WEIGHTS,
    SAFE_INDEX,
    SAFE_WEIGHTS,
    find_weight_files,
    read_state,
    safetensors_format,
)
from vedforge.core.errors import CorruptCheckpointError, NotACheckpointError
from vedforge.sources.loading import load_encoder_config, load_part_state
from vedforge.sources.resolve import ResolvedSource


def _no_pt(tensors):
    raise AssertionError("a Flax-layout checkpoint must never reach the PyTorch-layout converter")


def _assert_same_state(actual: dict, expected: dict) -> None:
    assert expected
    assert sorted(actual) == sorted(expected)
    for key, want in expected.items():
        got, want = np.asarray(actual[key]), np.asarray(want)
        assert got.dtype == want.dtype, key
        assert got.shape == want.shape, key
        assert got.tobytes() == want.tobytes(), key


def _with_metadata(src: Path, dest: Path) -> Path:
    dest.mkdir()
    for item in src.iterdir():
        if item.suffix in (".json", ".txt") and not item.name.startswith(("flax_model", "model.safetensors")):
            shutil.copy(item, dest / item.name)
    return dest


@pytest.fixture(scope="module")
def vit_dirs(tmp_path_factory) -> dict[str, Path]:
    """The same tiny ViT (same seed) saved by stock save_pretrained as msgpack and as safetensors."""
    root = tmp_path_factory.mktemp("vit")
    return {
        "msgpack": save_tiny_checkpoint("vit", "encoder", root / "msgpack", seed=3),
        "safetensors": save_tiny_checkpoint("vit", "encoder", root / "safetensors", seed=3, safetensors=True),
    }


@pytest.fixture(scope="module")
def vit_params(vit_dirs) -> dict:
    """The tiny ViT's parameters as the stock Flax class loads them."""
    from transformers import FlaxViTModel

    return flatten_dict(FlaxViTModel.from_pretrained(vit_dirs["msgpack"]).params)


# --- find_weight_files ------------------------------------------------------------------


def test_finds_flax_msgpack(vit_dirs):
    path = vit_dirs["msgpack"]
    assert find_weight_files(path) == ("msgpack", [path / FLAX_WEIGHTS])


def test_finds_stock_sharded_msgpack(vit_dirs, vit_params, tmp_path):
    from transformers import FlaxViTModel

    model = FlaxViTModel.from_pretrained(vit_dirs["msgpack"])
    model.save_pretrained(tmp_path, max_shard_size="10KB")
    shards = sorted(tmp_path.glob("flax_model-*.msgpack"))
    assert len(shards) > 2 and (tmp_path / FLAX_INDEX).is_file()

    layout, files = find_weight_files(tmp_path)
    assert layout == "msgpack"
    assert files == shards
    _assert_same_state(read_state(tmp_path, _no_pt), vit_params)


def test_finds_flax_safetensors(vit_dirs):
    path = vit_dirs["safetensors"]
    assert not (path / FLAX_WEIGHTS).exists()
    assert find_weight_files(path) == ("safetensors", [path / SAFE_WEIGHTS])
    assert safetensors_format(path / SAFE_WEIGHTS) == "flax"


def _sharded_safetensors(params: dict, dest: Path) -> list[Path]:
    # Stock Flax save_pretrained writes msgpack shards even when asked for safetensors, so
    # this layout (as PyTorch-side tools write it) is built by hand.
    names = sorted(".".join(k) for k in params)
    half = len(names) // 2
    parts = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    by_name = {".".join(k): np.asarray(v) for k, v in params.items()}
    for file, members in parts.items():
        save_file({n: by_name[n] for n in members}, str(dest / file), metadata={"format": "flax"})
    weight_map = {n: file for file, members in parts.items() for n in members}
    (dest / SAFE_INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return [dest / f for f in sorted(parts)]


def test_finds_sharded_safetensors(vit_params, tmp_path):
    shards = _sharded_safetensors(vit_params, tmp_path)
    assert find_weight_files(tmp_path) == ("safetensors", shards)
    _assert_same_state(read_state(tmp_path, _no_pt), vit_params)


def test_no_weights_names_the_directory(tmp_path):
    with pytest.raises(NotACheckpointError) as info:
        find_weight_files(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert ".bin" not in str(info.value)


def test_config_only_directory_is_not_a_checkpoint(vit_dirs, tmp_path):
    path = _with_metadata(vit_dirs["msgpack"], tmp_path / "config-only")
    with pytest.raises(NotACheckpointError) as info:
        read_state(path, _no_pt)
    assert str(path) in str(info.value)
    assert "config.json" in str(info.value)


def test_pytorch_bin_only_is_explained(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(NotACheckpointError) as info:
        find_weight_files(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    assert "pytorch_model.bin" in message
    assert "PyTorch .bin" in message


# --- Flax-layout safetensors ------------------------------------------------------------


def test_flax_safetensors_read_like_the_msgpack_save(vit_dirs, vit_params):
    from_safetensors = read_state(vit_dirs["safetensors"], _no_pt)
    from_msgpack = read_state(vit_dirs["msgpack"], _no_pt)
    _assert_same_state(from_safetensors, from_msgpack)
    _assert_same_state(from_msgpack, vit_params)


# --- PyTorch-layout safetensors ---------------------------------------------------------


def flax_to_pytorch_names(params: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """Name and lay out Flax ViT parameters the way the PyTorch ViT's state dict does.

    The inverse of ``rename_key_and_reshape_tensor`` in transformers'
    modeling_flax_pytorch_utils, for the layers a ViT has. The PyTorch ``ViTModel`` names
    its tensors without a prefix (``embeddings.cls_token``); models with a head put the
    base model under ``vit.``, which the Flax conversion strips for a base-model target.
    """
    out = {}
    for path, value in params.items():
        arr = np.asarray(value)
        *head, leaf = path
        if leaf == "kernel" and arr.ndim == 4:  # conv: (H, W, in, out) -> (out, in, H, W)
            leaf, arr = "weight", arr.transpose(3, 2, 0, 1)
        elif leaf == "kernel":  # dense: (in, out) -> (out, in)
            leaf, arr = "weight", arr.T
        elif leaf in ("scale", "embedding"):  # LayerNorm and Embed
            leaf = "weight"
        out[prefix + ".".join((*head, leaf))] = np.ascontiguousarray(arr)
    return out


def _pytorch_checkpoint(vit_dirs, vit_params, dest: Path, *, prefix: str = "", metadata: dict | None = None) -> Path:
    _with_metadata(vit_dirs["msgpack"], dest)
    save_file(flax_to_pytorch_names(vit_params, prefix), str(dest / SAFE_WEIGHTS), metadata=metadata)
    return dest


def _initialised_converter(path: Path):
    from transformers import AutoConfig, FlaxViTModel
    from transformers.modeling_flax_pytorch_utils import convert_pytorch_state_dict_to_flax

    model = FlaxViTModel(AutoConfig.from_pretrained(path), seed=0)
    return lambda tensors: flatten_dict(convert_pytorch_state_dict_to_flax(tensors, model))


@pytest.mark.parametrize(
    ("prefix", "metadata"),
    [("", {"format": "pt"}), ("vit.", {"format": "pt"}), ("", None)],
    ids=["pt", "pt-with-head-prefix", "no-metadata-means-pt"],
)
def test_pytorch_safetensors_go_through_the_converter(vit_dirs, vit_params, tmp_path, prefix, metadata):
    path = _pytorch_checkpoint(vit_dirs, vit_params, tmp_path / "pt", prefix=prefix, metadata=metadata)
    seen = {}
    convert = _initialised_converter(path)

    def converter(tensors):
        seen.update(tensors)
        return convert(tensors)

    state = read_state(path, converter)
    assert sorted(seen) == sorted(flax_to_pytorch_names(vit_params, prefix))
    _assert_same_state(state, vit_params)


def test_load_part_state_reads_pytorch_safetensors(vit_dirs, vit_params, tmp_path):
    path = _pytorch_checkpoint(vit_dirs, vit_params, tmp_path / "pt", metadata={"format": "pt"})
    source = ResolvedSource("encoder", str(path), "local", path)
    part = load_encoder_config(source, {})
    state = load_part_state(source, part, random_weights=False, seed=0)
    _assert_same_state({k: np.asarray(v) for k, v in state.items()}, vit_params)


# --- damaged files ----------------------------------------------------------------------


def _expect_corrupt(path: Path, names: Path) -> str:
    with pytest.raises(CorruptCheckpointError) as info:
        read_state(path, _no_pt)
    assert str(names) in str(info.value)
    return str(info.value)


def test_truncated_msgpack(vit_dirs, tmp_path):
    path = _with_metadata(vit_dirs["msgpack"], tmp_path / "ckpt")
    data = (vit_dirs["msgpack"] / FLAX_WEIGHTS).read_bytes()
    (path / FLAX_WEIGHTS).write_bytes(data[: len(data) // 2])
    _expect_corrupt(path, path / FLAX_WEIGHTS)


@pytest.mark.parametrize(
    "garbage",
    [b"this is not a checkpoint at all", bytes(range(256)) * 8, b"\xc1", b"\x05", b"\x93\x01\x02\x03"],
    ids=["text", "binary", "invalid-byte", "bare-int", "list"],
)
def test_garbage_msgpack(garbage, vit_dirs, tmp_path):
    path = _with_metadata(vit_dirs["msgpack"], tmp_path / "ckpt")
    (path / FLAX_WEIGHTS).write_bytes(garbage)
    _expect_corrupt(path, path / FLAX_WEIGHTS)


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_damaged_safetensors(how, vit_dirs, tmp_path):
    path = _with_metadata(vit_dirs["safetensors"], tmp_path / "ckpt")
    data = (vit_dirs["safetensors"] / SAFE_WEIGHTS).read_bytes()
    damaged = bytes(range(256)) * 8 if how == "garbage" else data[: len(data) // 2]
    (path / SAFE_WEIGHTS).write_bytes(damaged)
    _expect_corrupt(path, path / SAFE_WEIGHTS)


def test_damaged_second_safetensors_shard(vit_params, tmp_path):
    shards = _sharded_safetensors(vit_params, tmp_path)
    data = shards[1].read_bytes()
    shards[1].write_bytes(data[: len(data) // 2])
    _expect_corrupt(tmp_path, shards[1])


def _sharded_msgpack(vit_dirs, dest: Path) -> Path:
    from transformers import FlaxViTModel

    FlaxViTModel.from_pretrained(vit_dirs["msgpack"]).save_pretrained(dest, max_shard_size="10KB")
    assert (dest / FLAX_INDEX).is_file()
    return dest


def test_shard_index_that_is_not_json(vit_dirs, tmp_path):
    path = _sharded_msgpack(vit_dirs, tmp_path / "ckpt")
    (path / FLAX_INDEX).write_text('{"weight_map": {"a/b": ')
    _expect_corrupt(path, path / FLAX_INDEX)


def test_shard_index_without_weight_map(vit_dirs, tmp_path):
    path = _sharded_msgpack(vit_dirs, tmp_path / "ckpt")
    (path / FLAX_INDEX).write_text(json.dumps({"metadata": {"total_size": 1}}))
    _expect_corrupt(path, path / FLAX_INDEX)


@pytest.mark.parametrize(
    "weight_map",
    [["flax_model-00001-of-00002.msgpack"], None, {"a/b": 5}],
    ids=["list", "null", "non-string-file"],
)
def test_shard_index_with_malformed_weight_map(weight_map, vit_dirs, tmp_path):
    path = _sharded_msgpack(vit_dirs, tmp_path / "ckpt")
    (path / FLAX_INDEX).write_text(json.dumps({"weight_map": weight_map}))
    _expect_corrupt(path, path / FLAX_INDEX)


def test_shard_index_naming_a_missing_shard(vit_dirs, tmp_path):
    path = _sharded_msgpack(vit_dirs, tmp_path / "ckpt")
    index = json.loads((path / FLAX_INDEX).read_text())
    missing = sorted(set(index["weight_map"].values()))[-1]
    (path / missing).unlink()
    message = _expect_corrupt(path, path / FLAX_INDEX)
    assert missing in message


def test_one_truncated_shard_is_named(vit_dirs, tmp_path):
    path = _sharded_msgpack(vit_dirs, tmp_path / "ckpt")
    shard = sorted(path.glob("flax_model-*.msgpack"))[1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    _expect_corrupt(path, shard)
