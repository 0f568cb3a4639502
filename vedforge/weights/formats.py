"""The on-disk formats vedforge reads and writes: file names and codes, shared by the reader
(:mod:`vedforge.weights.checkpoint`, :mod:`vedforge.weights.lazy_tensor`) and the writer
(:mod:`vedforge.weights.writer`), so the two cannot drift apart."""

from __future__ import annotations

# transformers' file names (transformers.utils.FLAX_WEIGHTS_NAME and friends).
FLAX_WEIGHTS = "flax_model.msgpack"
FLAX_INDEX = "flax_model.msgpack.index.json"
SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"

# Flax's serialisation (flax.serialization): ndarrays travel as msgpack extension type 1, and
# arrays above MAX_CHUNK_SIZE bytes are split into a chunked dict.
MSGPACK_EXT_NDARRAY = 1
MAX_CHUNK_SIZE = 2**30

# safetensors dtype codes and the numpy dtype names they stand for.
SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                      "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "U16": "uint16", "U32": "uint32",
                      "U64": "uint64", "BOOL": "bool"}
SAFETENSORS_CODES = {name: code for code, name in SAFETENSORS_DTYPES.items()}
