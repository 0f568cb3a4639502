"""bfloat16 tensors without ml_dtypes.

numpy has no bfloat16. ml_dtypes adds one, but importing it takes about half a second, a large
part of a prefix forge of pretrained parts, and such a forge only moves bfloat16 bytes from file
to file, apart from a few tensors it computes (added vocabulary rows, a new projector). So
bfloat16 is held here in a 2-byte storage dtype, :data:`STORAGE`, and the few conversions the
forge needs are done bit by bit, rounding exactly as ml_dtypes rounds: the bytes written are
the same with either.

When ml_dtypes is already imported (jax imports it), its bfloat16 is the one used instead, so the
arrays vedforge hands out are those it handed out before. Every function here takes either.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

BFLOAT16 = "bfloat16"

# A structured dtype rather than plain uint16, so it names itself and no one mistakes its
# elements for integers (a safetensors U16 tensor is a uint16 one).
STORAGE = np.dtype([(BFLOAT16, np.uint16)])

_QUIET_NAN = 0x7FC0
_SIGN = 0x8000


def bfloat16_dtype() -> np.dtype:
    """The dtype bfloat16 arrays are made in: ml_dtypes' when something has imported it, else
    :data:`STORAGE`."""
    ml_dtypes = sys.modules.get("ml_dtypes")
    if ml_dtypes is not None and hasattr(ml_dtypes, BFLOAT16):
        return np.dtype(ml_dtypes.bfloat16)
    return STORAGE


def is_bfloat16(dtype: Any) -> bool:
    """Whether ``dtype`` (a dtype or anything ``np.dtype`` takes) is bfloat16, stored or ml_dtypes'."""
    dtype = np.dtype(dtype)
    return dtype == STORAGE or dtype.name == BFLOAT16


def dtype_name(dtype: Any) -> str:
    """The name of ``dtype`` as the file formats spell it (``float32``, ``bfloat16``)."""
    return BFLOAT16 if is_bfloat16(dtype) else np.dtype(dtype).name


def dtype_named(name: str) -> np.dtype:
    """The dtype a file format's dtype name stands for; bfloat16 as :func:`bfloat16_dtype`.

    Names numpy does not know (ml_dtypes' float8 types) are looked up in ml_dtypes.

    Raises:
        TypeError: no such dtype.
    """
    if name == BFLOAT16:
        return bfloat16_dtype()
    try:
        return np.dtype(name)
    except TypeError:
        import ml_dtypes

        if not hasattr(ml_dtypes, name):
            raise
        return np.dtype(getattr(ml_dtypes, name))


def to_float(array: Any, dtype: Any = np.float32) -> np.ndarray:
    """``array``'s values as floats of ``dtype``; bfloat16 exactly (each is a float32 whose low 16
    bits are zero)."""
    array = np.asarray(array)
    if not is_bfloat16(array.dtype):
        return array.astype(dtype)
    wide = array.view(np.uint16).astype(np.uint32)
    wide <<= 16
    values = wide.view(np.float32)
    if np.dtype(dtype) == np.float32:
        return values
    with np.errstate(invalid="ignore"):  # a signalling NaN widens to a quiet one, as in ml_dtypes
        return values.astype(dtype)


def cast(values: Any, dtype: Any) -> np.ndarray:
    """``values`` converted to ``dtype`` as ``values.astype(dtype, copy=False)`` converts them (so
    possibly ``values`` itself), bfloat16 on either side included: rounded to the nearest, ties
    to even, from any float, as ml_dtypes rounds; a NaN becomes the quiet NaN of its sign."""
    values, dtype = np.asarray(values), np.dtype(dtype)
    if is_bfloat16(dtype):
        if is_bfloat16(values.dtype):
            return values.view(dtype)
        return bfloat16_bits(values).view(dtype)
    if is_bfloat16(values.dtype):
        return to_float(values).astype(dtype, copy=False)
    return values.astype(dtype, copy=False)


def full(shape: tuple[int, ...], value: float, dtype: Any) -> np.ndarray:
    """``np.full(shape, value, dtype)``. ml_dtypes fills a bfloat16 array with ``value`` rounded
    to float32 and then to bfloat16 (twice rounded, unlike :func:`cast`), and so does this."""
    dtype = np.dtype(dtype)
    if not is_bfloat16(dtype):
        return np.full(shape, value, dtype)
    bits = bfloat16_bits(np.asarray(value, np.float64).astype(np.float32))
    return np.full(shape, bits, np.uint16).view(dtype)


def bfloat16_bits(values: Any) -> np.ndarray:
    """The bit patterns (uint16) of the bfloat16 values nearest ``values``, ties to even; a NaN
    becomes the quiet NaN of its sign.

    float32 rounds directly. float64 is first rounded to float32 with round-to-odd (truncated,
    its last bit set when inexact), which keeps what a second rounding needs: with 8 bits of
    bfloat16 precision and 24 of float32, the result is the bfloat16 nearest the float64 value
    itself, as ml_dtypes gives, not the one nearest its float32 rounding. Other types go through
    float64 (exact for float16 and for integers up to 2**53).
    """
    values = np.asarray(values)
    source = values if values.dtype in (np.float32, np.float64) else values.astype(np.float64)
    flat = source.reshape(-1)
    single = flat if flat.dtype == np.float32 else _round_to_odd_float32(flat)
    bits = single.view(np.uint32)
    # Adding 0x7FFF, plus 1 when the kept part is odd, carries into bit 16 exactly when the
    # dropped half is above one half, or is one half and the kept part odd; past the largest
    # finite value the carry reaches the infinity pattern, as rounding should.
    rounded = bits >> 16
    rounded &= 1
    rounded += 0x7FFF
    rounded += bits
    rounded >>= 16
    out = rounded.astype(np.uint16)
    nan = np.isnan(flat)
    if nan.any():
        out[nan] = np.where(np.signbit(flat[nan]), _QUIET_NAN | _SIGN, _QUIET_NAN)
    return out.reshape(source.shape)


def _round_to_odd_float32(double: np.ndarray) -> np.ndarray:
    """1-D ``double`` rounded to float32 towards zero, the last bit set where that was inexact.
    Values beyond float32's range become its largest finite value (odd, so still inexact); NaNs
    are left to the caller."""
    with np.errstate(over="ignore", invalid="ignore"):
        single = double.astype(np.float32)
    back = single.astype(np.float64)
    inexact = back != double
    bits = single.view(np.uint32)
    # Where float32 rounding went away from zero, one step back towards it (bit 31 is the sign).
    bits[inexact & (np.abs(back) > np.abs(double))] -= 1
    bits[inexact] |= 1
    return single


def ml_dtypes_array(array: Any) -> np.ndarray:
    """``array`` with bfloat16 in ml_dtypes' dtype, for libraries that know only that one
    (safetensors' numpy API, transformers' Flax conversion); other arrays as they are."""
    array = np.asarray(array)
    if array.dtype != STORAGE:
        return array
    import ml_dtypes

    return array.view(ml_dtypes.bfloat16)
