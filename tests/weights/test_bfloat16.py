"""bfloat16 without ml_dtypes: vedforge's conversions give ml_dtypes' (and torch's) bits on every
edge case, and the stored form is written exactly as ml_dtypes' bfloat16 is."""

from __future__ import annotations

import json
import struct
import sys

import numpy as np
import pytest

ml_dtypes = pytest.importorskip("ml_dtypes")

from vedforge.weights import bfloat16 as bf  # noqa: E402

ML = np.dtype(ml_dtypes.bfloat16)


def _f32(*bits: int) -> np.ndarray:
    return np.array(bits, np.uint32).view(np.float32)


def _ml_bits(values: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return values.astype(ml_dtypes.bfloat16).view(np.uint16)


# float32 bit patterns at the edges of bfloat16 rounding.
EDGES_F32 = _f32(
    0x00000000, 0x80000000,                          # +-0
    0x3F808000, 0x3F818000, 0xBF808000, 0xBF818000,  # ties: kept part even (stays), odd (rounds up)
    0x3F808001, 0x3F807FFF, 0x3F80FFFF,              # just above and below one half
    0x00000001, 0x80000001, 0x00008000, 0x00018000,  # float32 subnormals, ties among them
    0x00007FFF, 0x007FFFFF, 0x00800000, 0x00FF8000,  # largest subnormal, smallest normal
    0x7F7F7FFF, 0x7F7F8000, 0x7F7FFFFF, 0xFF7FFFFF,  # bfloat16's largest finite; float32's rounds to inf
    0x7F800000, 0xFF800000,                          # +-inf
    0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001,  # NaNs: quiet, signalling, both signs
    0x7FFFFFFF, 0x7FBFFFFF, 0x7F80FFFF,              # NaNs a carry would turn into others
)


def test_float32_edges_round_as_ml_dtypes_and_torch():
    ours = bf.bfloat16_bits(EDGES_F32)
    assert ours.dtype == np.uint16
    np.testing.assert_array_equal(ours, _ml_bits(EDGES_F32))
    torch = pytest.importorskip("torch")
    finite = ~np.isnan(EDGES_F32)
    theirs = torch.from_numpy(EDGES_F32[finite].copy()).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(ours[finite], theirs)


def test_a_nan_becomes_the_quiet_nan_of_its_sign():
    ours = bf.bfloat16_bits(_f32(0x7F800001, 0xFFFFFFFF, 0x7FC00000))
    np.testing.assert_array_equal(ours, [0x7FC0, 0xFFC0, 0x7FC0])
    assert np.isnan(bf.to_float(ours.view(bf.STORAGE))).all()


def test_random_float32_bit_patterns_round_as_ml_dtypes():
    bits = np.random.default_rng(0).integers(0, 2**32, size=1_000_000, dtype=np.uint64).astype(np.uint32)
    values = bits.view(np.float32)
    np.testing.assert_array_equal(bf.bfloat16_bits(values), _ml_bits(values))


def test_float64_rounds_once_as_ml_dtypes_not_through_float32():
    one = 1.0
    values = np.array([
        one + 2**-8 + 2**-30, -(one + 2**-8 + 2**-30),   # float32 would make these exact ties, and round down
        one + 2**-8 - 2**-30, one + 2**-8,               # below one half; a tie
        3.3961e38, 3.4e38, 1e39, 1e300, -1e300,          # around and past bfloat16's largest finite
        2.0**-133, 1.5 * 2.0**-134, 2.0**-134, 2.0**-135, 1e-300, -0.0,  # bfloat16's subnormals and below
        np.inf, -np.inf, np.nan, -np.nan,
    ])
    ours = bf.bfloat16_bits(values)
    np.testing.assert_array_equal(ours, _ml_bits(values))
    assert ours[0] == 0x3F81  # 1 + 2**-7: the float32 route would give 0x3F80


def test_random_float64_values_round_as_ml_dtypes():
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2**64, size=500_000, dtype=np.uint64)
    anywhere = bits.view(np.float64)
    with np.errstate(over="ignore"):
        near_float32 = (rng.standard_normal(500_000) * 10.0 ** rng.integers(-40, 39, 500_000)).astype(np.float32)
    # Every bfloat16 tie, nudged by less than float32 resolves.
    ties = near_float32.astype(np.float64) * (1 + rng.choice([-1, 0, 1], 500_000) * 2.0**-40)
    for values in (anywhere, near_float32.astype(np.float64), ties):
        np.testing.assert_array_equal(bf.bfloat16_bits(values), _ml_bits(values))


def test_float16_and_small_integers_round_as_ml_dtypes():
    halves = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    np.testing.assert_array_equal(bf.bfloat16_bits(halves), _ml_bits(halves))
    ints = np.array([0, 1, -1, 257, 2**24 + 2**16 + 1, -(2**31)], np.int32)
    np.testing.assert_array_equal(bf.bfloat16_bits(ints), _ml_bits(ints))


def test_every_bfloat16_widens_to_the_float32_ml_dtypes_and_torch_give():
    patterns = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
    ours = bf.to_float(patterns.view(bf.STORAGE))
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours.view(np.uint32), patterns.view(ML).astype(np.float32).view(np.uint32))
    torch = pytest.importorskip("torch")
    theirs = torch.from_numpy(patterns.view(np.int16).copy()).view(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(ours.view(np.uint32), theirs.view(np.uint32))
    with np.errstate(invalid="ignore"):
        wide = patterns.view(ML).astype(np.float64)
    np.testing.assert_array_equal(bf.to_float(patterns.view(ML), np.float64).view(np.uint64), wide.view(np.uint64))


def test_cast_relabels_between_the_two_forms_and_rounds_into_either():
    values = np.random.default_rng(2).standard_normal((3, 5)).astype(np.float32)
    stored, theirs = bf.cast(values, bf.STORAGE), bf.cast(values, ML)
    assert stored.dtype == bf.STORAGE and theirs.dtype == ML
    assert stored.tobytes() == theirs.tobytes() == values.astype(ML).tobytes()
    assert bf.cast(stored, ML).dtype == ML and bf.cast(theirs, bf.STORAGE).tobytes() == stored.tobytes()
    np.testing.assert_array_equal(bf.cast(stored, np.float64), values.astype(ML).astype(np.float64))
    np.testing.assert_array_equal(bf.cast(values, np.float16), values.astype(np.float16))
    assert bf.cast(np.float64(1 + 2**-8 + 2**-30), bf.STORAGE).view(np.uint16) == 0x3F81


def test_full_fills_as_numpy_fills_an_ml_dtypes_array():
    # ml_dtypes fills through float32 (twice rounded), where a cast rounds once.
    for value in (1 + 2**-8 + 2**-30, 0.1, 1e-6, -3.75, 3.4e38, 1e-40, 0.0, 1.0):
        ours = bf.full((2, 3), value, bf.STORAGE)
        assert ours.dtype == bf.STORAGE and ours.shape == (2, 3)
        assert ours.tobytes() == np.full((2, 3), value, ML).tobytes(), value
    np.testing.assert_array_equal(bf.full((2,), 0.5, np.float32), np.full((2,), 0.5, np.float32))


def test_an_assigned_scalar_rounds_as_numpy_assigns_it_to_an_ml_dtypes_array():
    for value in (1 + 2**-8 + 2**-30, 0.1, -2.5e-39):
        theirs = np.zeros(2, ML)
        theirs[1:] = value
        ours = np.zeros(2, bf.STORAGE)
        ours[1:] = bf.cast(np.float64(value), bf.STORAGE)
        assert ours.tobytes() == theirs.tobytes(), value


def test_names_and_the_form_bfloat16_arrays_are_made_in(monkeypatch):
    assert bf.is_bfloat16(bf.STORAGE) and bf.is_bfloat16(ML) and bf.is_bfloat16(ml_dtypes.bfloat16)
    assert not bf.is_bfloat16(np.uint16) and not bf.is_bfloat16(np.float16)
    assert bf.dtype_name(bf.STORAGE) == bf.dtype_name(ML) == "bfloat16"
    assert bf.dtype_name(np.float32) == "float32"
    assert bf.dtype_named("float16") == np.float16
    assert bf.dtype_named("bfloat16") == ML  # ml_dtypes is imported here
    assert bf.dtype_named("float8_e4m3fn") == np.dtype(ml_dtypes.float8_e4m3fn)
    with pytest.raises(TypeError):
        bf.dtype_named("float7")
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # as in a process that never imported it
    assert bf.bfloat16_dtype() == bf.STORAGE and bf.dtype_named("bfloat16") == bf.STORAGE


def test_ml_dtypes_array_hands_libraries_their_bfloat16():
    stored = bf.cast(np.array([1.5, -2.0], np.float32), bf.STORAGE)
    assert bf.ml_dtypes_array(stored).dtype == ML
    np.testing.assert_array_equal(bf.ml_dtypes_array(stored).astype(np.float32), [1.5, -2.0])
    plain = np.arange(3, dtype=np.uint16)
    assert bf.ml_dtypes_array(plain) is plain


def _safetensors_header(path) -> dict:
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + size])


def test_the_stored_form_is_written_as_ml_dtypes_bfloat16_is(tmp_path):
    from vedforge.weights.lazy_tensor import index_msgpack, index_safetensors
    from vedforge.weights.writer import write_flax_checkpoint, write_pytorch_checkpoint

    values = np.random.default_rng(3).standard_normal((4, 6)).astype(np.float32)
    files = {}
    for form in (bf.STORAGE, ML):
        out = tmp_path / form.name
        out.mkdir()
        tensors = {"w": bf.cast(values, form), "u": np.arange(4, dtype=np.uint16)}
        write_pytorch_checkpoint(out, tensors, 10**9)
        write_flax_checkpoint(out, {(k,): v for k, v in tensors.items()}, 10**9)
        files[form.name] = {name: (out / name).read_bytes() for name in ("model.safetensors", "flax_model.msgpack")}
        header = _safetensors_header(out / "model.safetensors")
        assert (header["w"]["dtype"], header["u"]["dtype"]) == ("BF16", "U16")
        read = index_safetensors(out / "model.safetensors")[0]["w"]
        assert bf.is_bfloat16(read.dtype) and np.asarray(read).tobytes() == values.astype(ML).tobytes()
        assert bf.is_bfloat16(index_msgpack(out / "flax_model.msgpack")["w"].dtype)
    assert files[bf.STORAGE.name] == files[ML.name]
