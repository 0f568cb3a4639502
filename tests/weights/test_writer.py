"""The streaming writer must produce files that flax and stock transformers read unchanged."""

from __future__ import annotations

import pytest

from conftest import FLAX, FLAX_ONLY_REASON

# Flax-only: checkpoints saved by transformers' Flax classes, or the Flax model itself.
if not FLAX:
    pytest.skip(FLAX_ONLY_REASON, allow_module_level=True)

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import flax.serialization
import msgpack
import numpy as np
from flax.traverse_util import flatten_dict

from conftest import save_tiny_checkpoint
from vedforge.weights import writer as checkpoint_writer
from vedforge.weights.checkpoint import FLAX_INDEX, FLAX_WEIGHTS, read_msgpack, read_state
from vedforge.core.units import parse_size
from vedforge.weights.writer import write_flax_checkpoint

try:
    from ml_dtypes import bfloat16
except ImportError:  # pragma: no cover - ml_dtypes ships with jax
    bfloat16 = None

BIG = 10**9
REPO = Path(__file__).resolve().parents[2]


def _no_pt(tensors):
    raise AssertionError("a Flax checkpoint must never reach the PyTorch-layout converter")


def _assert_same_state(actual: dict, expected: dict) -> None:
    assert sorted(actual) == sorted(expected)
    for key, want in expected.items():
        got = np.asarray(actual[key])
        want = np.asarray(want)
        assert got.dtype == want.dtype, key
        assert got.shape == want.shape, key
        # Bytes, not values: the writer must be lossless, and -0.0 == 0.0 would hide a change.
        assert got.tobytes() == want.tobytes(), key


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _dir_digest(directory: Path) -> dict[str, str]:
    return {p.name: _sha256(p) for p in sorted(directory.iterdir())}


def _mixed_state() -> dict:
    rng = np.random.default_rng(0)
    state = {
        ("encoder", "layer", "0", "attention", "kernel"): rng.standard_normal((8, 12)).astype(np.float32),
        ("encoder", "layer", "0", "attention", "bias"): rng.standard_normal(12).astype(np.float32),
        ("encoder", "layer", "10", "attention", "kernel"): rng.standard_normal((8, 12)).astype(np.float16),
        ("encoder", "layer", "2", "ids"): rng.integers(-(2**31), 2**31 - 1, size=(3, 5), dtype=np.int32),
        ("encoder", "layernorm", "scale"): np.array([-0.0, 0.0, np.inf, -np.inf], dtype=np.float32),
        ("embeddings", "position_ids"): np.arange(7, dtype=np.int64)[None],
        # Not C-contiguous: must be stored in C order like flax does.
        ("embeddings", "transposed"): np.asfortranarray(rng.standard_normal((4, 6)).astype(np.float32)),
        ("mask",): np.array([True, False, True]),
        ("scalar",): np.array(3.5, dtype=np.float32),
        ("empty",): np.zeros((0, 3), dtype=np.float32),
    }
    if bfloat16 is not None:
        import jax.numpy as jnp

        # A jax array, as a state built from model.params holds.
        state[("decoder", "bf16", "kernel")] = jnp.asarray(rng.standard_normal((5, 4)), dtype=jnp.bfloat16)
        state[("decoder", "bf16", "bias")] = rng.standard_normal(4).astype(bfloat16)
    return state


# --- parse_size -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10GB", 10 * 10**9),
        ("500MB", 500 * 10**6),
        ("2GiB", 2 * 2**30),
        ("1.5KB", 1500),
        (123, 123),
        (" 7 B ", 7),
        ("7", 7),
        ("3mib", 3 * 2**20),
    ],
)
def test_parse_size_accepts(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize(("text", "expected"), [("4.1GB", 4_100_000_000), ("2.01KB", 2010), ("8.12KB", 8120)])
def test_parse_size_decimal_sizes_are_exact(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "ten", "-1GB", "0", "5XB", 0, -5, "0.5B", "GB", "1 0GB"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


# --- round trip and determinism ---------------------------------------------------------


def test_round_trip_with_flax_and_vedforge_readers(tmp_path):
    state = _mixed_state()
    written = write_flax_checkpoint(tmp_path, state, max_shard_size=BIG)

    assert list(written) == [tmp_path / FLAX_WEIGHTS]
    # The hash computed while writing is the hash of the file on disk.
    assert written[tmp_path / FLAX_WEIGHTS] == hashlib.sha256((tmp_path / FLAX_WEIGHTS).read_bytes()).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == [FLAX_WEIGHTS]
    restored = flatten_dict(flax.serialization.msgpack_restore((tmp_path / FLAX_WEIGHTS).read_bytes()))
    _assert_same_state(restored, state)
    _assert_same_state(read_msgpack([tmp_path / FLAX_WEIGHTS]), state)


def test_output_matches_flax_serialization_of_the_sorted_tree(tmp_path):
    # msgpack_serialize packs dict keys in the dict's order; jax's tree_map rebuilds dicts
    # with sorted keys, so flax's bytes for a nested dict are the reference layout.
    state = _mixed_state()
    write_flax_checkpoint(tmp_path, state, max_shard_size=BIG)
    tree: dict = {}
    for path, arr in sorted(state.items()):
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = np.asarray(arr)
    assert (tmp_path / FLAX_WEIGHTS).read_bytes() == flax.serialization.msgpack_serialize(tree)


def test_insertion_order_does_not_change_the_bytes(tmp_path):
    state = _mixed_state()
    backwards = dict(reversed(list(state.items())))
    assert list(backwards) != list(state)
    for name, variant in (("a", state), ("b", backwards)):
        (tmp_path / name).mkdir()
        write_flax_checkpoint(tmp_path / name, variant, max_shard_size=BIG)
        (tmp_path / f"{name}-sharded").mkdir()
        write_flax_checkpoint(tmp_path / f"{name}-sharded", variant, max_shard_size=200)
    assert _dir_digest(tmp_path / "a") == _dir_digest(tmp_path / "b")
    assert len(list((tmp_path / "a-sharded").iterdir())) > 2
    assert _dir_digest(tmp_path / "a-sharded") == _dir_digest(tmp_path / "b-sharded")


_WRITE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np
    from vedforge.weights.writer import write_flax_checkpoint

    data = np.load(sys.argv[1])
    # A set's iteration order follows the string hash, so each hash seed inserts differently.
    names = list(set(data.files))
    state = {tuple(name.split("/")): data[name] for name in names}
    write_flax_checkpoint(Path(sys.argv[2]), state, max_shard_size=10**9)
    write_flax_checkpoint(Path(sys.argv[3]), state, max_shard_size=300)
    print(json.dumps(names))
    """
)


def test_bytes_do_not_depend_on_the_hash_seed(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {
        f"block/{i}/{leaf}": rng.standard_normal((4, i + 2)).astype(np.float32 if i % 2 else np.float16)
        for i in range(6)
        for leaf in ("kernel", "bias", "scale")
    }
    np.savez(tmp_path / "state.npz", **arrays)
    digests, orders = [], []
    for seed in ("1", "2"):
        single, sharded = tmp_path / f"single-{seed}", tmp_path / f"sharded-{seed}"
        single.mkdir()
        sharded.mkdir()
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run(
            [sys.executable, "-c", _WRITE_SCRIPT, str(tmp_path / "state.npz"), str(single), str(sharded)],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
        )
        assert run.returncode == 0, run.stderr
        orders.append(json.loads(run.stdout))
        digests.append((_dir_digest(single), _dir_digest(sharded)))
    # Otherwise the two runs would not have exercised different insertion orders.
    assert orders[0] != orders[1]
    assert len(digests[0][1]) > 2
    assert digests[0] == digests[1]


# --- stock transformers compatibility ---------------------------------------------------


@pytest.fixture(scope="module")
def gpt2_checkpoint(tmp_path_factory) -> Path:
    # One model saved here rather than the session-wide `tiny_checkpoints`, which saves
    # all eight families and alone costs more than this whole file.
    return save_tiny_checkpoint("gpt2", "decoder", tmp_path_factory.mktemp("gpt2") / "gpt2")


def _copy_metadata(src: Path, dest: Path) -> None:
    dest.mkdir()
    for item in src.iterdir():
        if item.suffix in (".json", ".txt") and not item.name.startswith("flax_model"):
            shutil.copy(item, dest / item.name)


def _stock_params(directory: Path) -> dict:
    from transformers import FlaxGPT2LMHeadModel

    return flatten_dict(FlaxGPT2LMHeadModel.from_pretrained(directory).params)


def test_stock_from_pretrained_loads_the_written_checkpoint(gpt2_checkpoint, tmp_path):
    # The reference is the file itself, not a second from_pretrained: from_pretrained fills a
    # missing weight from the same seeded init both times, which would hide a dropped tensor.
    original = flatten_dict(flax.serialization.msgpack_restore((gpt2_checkpoint / FLAX_WEIGHTS).read_bytes()))
    state = read_state(gpt2_checkpoint, _no_pt)
    _assert_same_state(state, original)

    out = tmp_path / "rewritten"
    _copy_metadata(gpt2_checkpoint, out)
    write_flax_checkpoint(out, state, max_shard_size=BIG)

    _assert_same_state(_stock_params(out), original)


def test_sharded_checkpoint_loads_in_stock_from_pretrained(gpt2_checkpoint, tmp_path):
    original = flatten_dict(flax.serialization.msgpack_restore((gpt2_checkpoint / FLAX_WEIGHTS).read_bytes()))
    limit = 8192
    out = tmp_path / "sharded"
    _copy_metadata(gpt2_checkpoint, out)
    written = write_flax_checkpoint(out, read_state(gpt2_checkpoint, _no_pt), max_shard_size=limit)

    shards = sorted(p for p in out.iterdir() if p.name.startswith("flax_model-"))
    n = len(shards)
    assert n > 2
    assert [p.name for p in shards] == [f"flax_model-{i:05d}-of-{n:05d}.msgpack" for i in range(1, n + 1)]
    assert not (out / FLAX_WEIGHTS).exists()
    assert sorted(written) == sorted([*shards, out / FLAX_INDEX])
    assert all(hashlib.sha256(p.read_bytes()).hexdigest() == digest for p, digest in written.items())

    index = json.loads((out / FLAX_INDEX).read_text())
    weight_map = index["weight_map"]
    names = {"/".join(k) for k in original}
    # A dict cannot name a tensor twice, so "exactly once" is: same key set, and every
    # tensor is stored in the shard the index names and in no other.
    assert set(weight_map) == names
    assert set(weight_map.values()) == {p.name for p in shards}
    assert index["metadata"]["total_size"] == sum(int(np.asarray(a).nbytes) for a in original.values())

    seen: dict[str, str] = {}
    for shard in shards:
        contents = flatten_dict(flax.serialization.msgpack_restore(shard.read_bytes()), sep="/")
        for name in contents:
            assert name not in seen, f"{name} stored in {seen.get(name)} and {shard.name}"
            seen[name] = shard.name
            assert weight_map[name] == shard.name
        size = sum(int(a.nbytes) for a in contents.values())
        assert size <= limit or len(contents) == 1, shard.name
    assert set(seen) == names

    oversized = ["/".join(k) for k, a in original.items() if a.nbytes > limit]
    assert oversized, "the test needs a tensor bigger than the shard limit"
    for name in oversized:
        assert list(weight_map.values()).count(weight_map[name]) == 1, name
    # Shards fill in sorted key order, like flax_shard_checkpoint fills in its key order.
    path_of = {k: tuple(k.split("/")) for k in weight_map}
    in_shard_order = sorted(weight_map, key=lambda k: (weight_map[k], path_of[k]))
    assert in_shard_order == sorted(weight_map, key=path_of.__getitem__)

    assert index == _stock_shard_index(original, limit)

    _assert_same_state(read_state(out, _no_pt), original)
    _assert_same_state(_stock_params(out), original)


def _stock_shard_index(state: dict, limit: int) -> dict:
    """The index transformers' own sharding gives ``state`` when its keys come in sorted order."""
    from flax.traverse_util import unflatten_dict
    from transformers.modeling_flax_utils import flax_shard_checkpoint

    _, index = flax_shard_checkpoint(unflatten_dict(dict(sorted(state.items()))), limit)
    return index


def test_shards_split_where_flax_shard_checkpoint_splits(tmp_path):
    limit = 1000
    f32 = lambda n: np.full(n, 1.5, dtype=np.float32)  # noqa: E731
    state = {
        # Fills the first shard to exactly the limit: a shard may reach it, not exceed it.
        ("a", "0"): f32(100), ("a", "1"): f32(100), ("a", "2"): f32(50),
        ("b", "0"): f32(10),
        # Bigger than the limit, between two small tensors: a shard of its own.
        ("b", "1"): f32(300),
        ("b", "2"): f32(10), ("c",): np.ones(960, dtype=np.int8),
    }
    write_flax_checkpoint(tmp_path, state, max_shard_size=limit)
    index = json.loads((tmp_path / FLAX_INDEX).read_text())
    assert index == _stock_shard_index(state, limit)
    assert len(set(index["weight_map"].values())) == 4


# --- chunking of large arrays -----------------------------------------------------------

CHUNK = 1024


def _chunk_cases():
    rng = np.random.default_rng(2)
    cases = [
        pytest.param(rng.standard_normal(CHUNK // 4).astype(np.float32), False, id="f32-at-limit"),
        pytest.param(rng.standard_normal(CHUNK // 4 + 1).astype(np.float32), True, id="f32-one-over"),
        pytest.param(rng.standard_normal((7, 143)).astype(np.float32), True, id="f32-2d-ragged"),
        pytest.param(rng.standard_normal((3, 5, 100)).astype(np.float16), True, id="f16-3d"),
        pytest.param(rng.integers(-128, 127, size=4099, dtype=np.int8), True, id="int8"),
    ]
    if bfloat16 is not None:
        cases.append(pytest.param(rng.standard_normal((30, 40)).astype(bfloat16), True, id="bf16"))
    return cases


@pytest.mark.parametrize(("arr", "chunked"), _chunk_cases())
def test_large_arrays_are_chunked_like_flax(arr, chunked, tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint_writer, "MAX_CHUNK_SIZE", CHUNK)
    write_flax_checkpoint(tmp_path, {("a",): arr}, max_shard_size=BIG)
    data = (tmp_path / FLAX_WEIGHTS).read_bytes()

    raw = msgpack.unpackb(data, raw=False)
    assert isinstance(raw["a"], dict) == chunked
    if chunked:
        assert raw["a"]["__msgpack_chunked_array__"] is True
        assert len(raw["a"]["chunks"]) == -(-arr.nbytes // CHUNK)

    # Restoring needs no patch: flax unchunks whatever it finds.
    restored = flax.serialization.msgpack_restore(data)
    _assert_same_state({("a",): restored["a"]}, {("a",): arr})

    monkeypatch.setattr(flax.serialization, "MAX_CHUNK_SIZE", CHUNK)
    assert data == flax.serialization.msgpack_serialize({"a": arr})


def test_chunked_array_inside_a_nested_sharded_state(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint_writer, "MAX_CHUNK_SIZE", CHUNK)
    state = _mixed_state()
    state[("encoder", "big", "kernel")] = np.random.default_rng(3).standard_normal((40, 33)).astype(np.float32)
    write_flax_checkpoint(tmp_path, state, max_shard_size=3000)
    assert (tmp_path / FLAX_INDEX).is_file()
    _assert_same_state(read_state(tmp_path, _no_pt), state)


# --- tensors copied file to file ---------------------------------------------------------


def _copy_calls(monkeypatch, mode: str) -> list[int]:
    """Count kernel copies; ``mode`` makes them work, fail as across file systems, or not exist."""
    calls: list[int] = []
    real = getattr(os, "copy_file_range", None)
    if mode == "absent":
        monkeypatch.delattr(os, "copy_file_range", raising=False)
        return calls
    if real is None:
        pytest.skip("this platform has no copy_file_range")

    def spy(src, dst, count, offset_src=None, offset_dst=None):
        calls.append(count)
        if mode == "cross-device":
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real(src, dst, count, offset_src, offset_dst)

    monkeypatch.setattr(os, "copy_file_range", spy)
    return calls


@pytest.mark.parametrize("mode", ["kernel-copy", "cross-device", "absent"])
def test_tensors_read_from_a_checkpoint_are_copied_byte_for_byte(mode, tmp_path, monkeypatch):
    state = _mixed_state()
    (tmp_path / "in").mkdir()
    write_flax_checkpoint(tmp_path / "in", state, max_shard_size=BIG)
    lazy = read_msgpack([tmp_path / "in" / FLAX_WEIGHTS])
    # In-memory tensors interleave with file ones, as new cross-attention does in a forge.
    lazy[("encoder", "layer", "0", "attention", "bias")] = state[("encoder", "layer", "0", "attention", "bias")]
    calls = _copy_calls(monkeypatch, mode)
    (tmp_path / "out").mkdir()
    written = write_flax_checkpoint(tmp_path / "out", lazy, max_shard_size=BIG)

    out = tmp_path / "out" / FLAX_WEIGHTS
    assert out.read_bytes() == (tmp_path / "in" / FLAX_WEIGHTS).read_bytes()
    assert written[out] == _sha256(out)
    if mode == "kernel-copy":
        # Every non-empty file tensor but the one replaced went through the kernel.
        assert len(calls) >= sum(1 for v in state.values() if np.asarray(v).nbytes) - 1
    elif mode == "cross-device":
        assert len(calls) == 1  # tried once, then read and write for the rest


@pytest.mark.parametrize("mode", ["kernel-copy", "absent"])
@pytest.mark.parametrize(("arr", "chunked"), _chunk_cases())
def test_file_tensors_over_the_chunk_limit_are_chunked_like_flax(arr, chunked, mode, tmp_path, monkeypatch):
    # Input written unchunked, output chunked: the file ranges are split at flax's chunk edges.
    (tmp_path / "in").mkdir()
    write_flax_checkpoint(tmp_path / "in", {("a",): arr}, max_shard_size=BIG)
    lazy = read_msgpack([tmp_path / "in" / FLAX_WEIGHTS])
    _copy_calls(monkeypatch, mode)
    monkeypatch.setattr(checkpoint_writer, "MAX_CHUNK_SIZE", CHUNK)
    write_flax_checkpoint(tmp_path, lazy, max_shard_size=BIG)
    monkeypatch.setattr(flax.serialization, "MAX_CHUNK_SIZE", CHUNK)
    assert (tmp_path / FLAX_WEIGHTS).read_bytes() == flax.serialization.msgpack_serialize({"a": arr})

    # And a chunked input (a list of pieces in the file) rewritten chunked gives the same bytes.
    (tmp_path / "again").mkdir()
    write_flax_checkpoint(tmp_path / "again", read_msgpack([tmp_path / FLAX_WEIGHTS]), max_shard_size=BIG)
    assert (tmp_path / "again" / FLAX_WEIGHTS).read_bytes() == (tmp_path / FLAX_WEIGHTS).read_bytes()


def test_a_checkpoint_truncated_after_indexing_is_reported(tmp_path):
    from vedforge.core.errors import CorruptCheckpointError

    (tmp_path / "in").mkdir()
    write_flax_checkpoint(tmp_path / "in", _mixed_state(), max_shard_size=BIG)
    source = tmp_path / "in" / FLAX_WEIGHTS
    lazy = read_msgpack([source])
    data = source.read_bytes()
    source.write_bytes(data[: len(data) // 2])
    (tmp_path / "out").mkdir()
    with pytest.raises(CorruptCheckpointError, match="ends inside a tensor"):
        write_flax_checkpoint(tmp_path / "out", lazy, max_shard_size=BIG)


def test_safetensors_output_matches_the_safetensors_library_and_loads_in_stock_flax(tmp_path, gpt2_checkpoint):
    import transformers
    from safetensors.numpy import load_file

    from vedforge.weights.writer import write_safetensors_checkpoint

    state = read_state(gpt2_checkpoint, _no_pt)
    out = tmp_path / "st"
    _copy_metadata(gpt2_checkpoint, out)
    written = write_safetensors_checkpoint(out, state)
    (path, digest), = written.items()
    assert path.name == "model.safetensors" and hashlib.sha256(path.read_bytes()).hexdigest() == digest
    loaded = load_file(str(path))
    assert set(loaded) == {".".join(k) for k in state}
    for key, value in state.items():
        assert np.array_equal(loaded[".".join(key)], np.asarray(value))
    model = transformers.FlaxGPT2LMHeadModel.from_pretrained(out)
    for key, value in flatten_dict(model.params).items():
        assert np.array_equal(np.asarray(value), np.asarray(state[key])), key
