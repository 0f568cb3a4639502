"""The tensors of a prefix (LLaVA-style) forge, named as the public llava-hf checkpoints name them.

``LlavaForConditionalGeneration.save_pretrained`` in transformers 4.57 writes, and the llava-hf
checkpoints on the hub hold, ``vision_tower.*`` (the tower's ``AutoModel``), ``multi_modal_projector.*``,
``language_model.model.*`` (the LM's base model) and ``language_model.lm_head.weight`` (left out
when tied to the input embeddings); transformers 4.57 and 5 map these names onto their classes.

Every tower and LM tensor is the checkpoint's own, by reference (the writer copies its bytes from
the input file), in the checkpoint's dtype. Only three kinds of tensor are made here: the
projector (seeded per tensor from the recipe seed), tower tensors the checkpoint lacks (a
pooler, say; initialised as transformers does), and the rows the added tokens give the input
embeddings and the output head, drawn as transformers' ``resize_token_embeddings`` draws them
(mean and covariance of the existing rows).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

import numpy as np

from vedforge.core.errors import VedforgeError
from vedforge.weights.bfloat16 import cast, to_float
from vedforge.weights.lazy_tensor import DeferredArray

TOWER, PROJECTOR, LM_BASE, LM_HEAD = "vision_tower.", "multi_modal_projector.", "language_model.model.", "language_model.lm_head."
# transformers' resize_token_embeddings(mean_resizing=True): new rows ~ N(mean, 1e-9 * covariance).
_RESIZE_EPSILON = 1e-9

GENERATION = ("numpy PCG64, one stream per tensor seeded by sha256(seed, 'prefix', tensor name); "
              "added vocabulary rows ~ N(mean, 1e-9 x covariance) of the existing rows, as transformers' "
              "resize_token_embeddings(mean_resizing=True)")


@dataclass
class PrefixReport:
    """Where each tensor of a prefix forge came from, per part (``encoder``, ``projector``, ``decoder``)."""

    from_checkpoint: dict[str, int] = field(default_factory=lambda: {"encoder": 0, "projector": 0, "decoder": 0})
    new: dict[str, list[str]] = field(default_factory=lambda: {"encoder": [], "projector": [], "decoder": []})
    new_count: dict[str, int] = field(default_factory=lambda: {"encoder": 0, "projector": 0, "decoder": 0})
    grown: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # name -> [old rows, new rows]
    grown_count: int = 0
    unused: dict[str, list[str]] = field(default_factory=lambda: {"encoder": [], "decoder": []})

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per part (tied tensors once), and the total and newly made ones."""
        counts = {part: self.from_checkpoint[part] + self.new_count[part] for part in ("encoder", "projector", "decoder")}
        counts["decoder"] += self.grown_count
        counts["new"] = sum(self.new_count.values()) + self.grown_count
        counts["total"] = counts["encoder"] + counts["projector"] + counts["decoder"]
        return counts


def _part(name: str) -> str:
    return "encoder" if name.startswith(TOWER) else "projector" if name.startswith(PROJECTOR) else "decoder"


def target_specs(config: Any) -> dict[str, Any]:
    """Every tensor ``LlavaForConditionalGeneration(config).save_pretrained`` writes: name -> shape.

    Read off the class (:func:`derive_target_specs`) the first time a configuration is planned, in
    the torch worker where this process hides torch (:mod:`vedforge.core.torch_worker`); from
    vedforge's cache of derivations after that (:mod:`vedforge.core.derived_cache`).
    """
    from vedforge.core.torch_worker import derived_from_classes
    from vedforge.families.introspect import config_data

    return derived_from_classes(
        "prefix-llava-tensors", {"config": config_data(config)}, lambda: derive_target_specs(config),
        "vedforge.architectures.prefix.tensors:target_specs_data", encode=_shape_rows,
        decode=lambda rows: {name: tuple(shape) for name, shape in rows})


def _shape_rows(specs: dict[str, Any]) -> list:
    return [[name, list(shape)] for name, shape in specs.items()]


def target_specs_data(config: dict[str, Any]) -> list:
    """:func:`derive_target_specs` of the config ``config`` holds, as JSON data."""
    from vedforge.families.introspect import config_from_data

    return _shape_rows(derive_target_specs(config_from_data(config)))


def derive_target_specs(config: Any) -> dict[str, Any]:
    """Every tensor ``LlavaForConditionalGeneration(config).save_pretrained`` writes: name -> shape spec.

    The model is built on the meta device (nothing allocated) and its names are mapped back to
    the saved layout as transformers' ``save_pretrained`` does; the tied output head is left out.
    """
    import re

    import torch
    from transformers import LlavaForConditionalGeneration

    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    from vedforge.weights.saved_names import saved_names

    # transformers 4.57 maps the llava-hf names through the class's _checkpoint_conversion_mapping;
    # transformers 5 through its conversion mapping, which saved_names reverts (the class
    # attribute is gone there).
    mapping = getattr(LlavaForConditionalGeneration, "_checkpoint_conversion_mapping", None) or {}
    reverse = {v: k for k, v in mapping.items()}
    renamed = saved_names(model)
    tied = bool(getattr(config.text_config, "tie_word_embeddings", False))
    specs = {}
    for name, tensor in model.state_dict().items():
        if tied and name == "lm_head.weight":
            continue
        name = renamed[name]
        for pattern, replacement in reverse.items():
            name, hits = re.subn(pattern, replacement.lstrip("^"), name)
            if hits:
                break
        specs[name] = tuple(tensor.shape)
    return specs


def _stream(seed: int, name: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}\x00prefix\x00{name}".encode()).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest, "little")))


class NewTensor(DeferredArray):
    """A tensor the forge makes, drawn when the writer asks for it: ``normal`` (mean 0, ``std``),
    ``zeros``, ``ones`` or ``identity``; its values depend on the recipe seed and its name only."""

    __slots__ = ("name", "shape", "dtype", "kind", "std", "seed")

    def __init__(self, name: str, shape: tuple[int, ...], dtype: Any, kind: str, seed: int, std: float = 0.0):
        self.name, self.shape, self.dtype, self.kind, self.seed, self.std = name, tuple(shape), np.dtype(dtype), kind, seed, std

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        if self.kind == "zeros":
            data = np.zeros(self.shape, np.float32)
        elif self.kind == "ones":
            data = np.ones(self.shape, np.float32)
        elif self.kind == "identity":
            data = np.eye(*self.shape, dtype=np.float32)
        else:
            data = _stream(self.seed, self.name).standard_normal(self.shape, dtype=np.float32)
            data *= np.float32(self.std)
        data = cast(data, self.dtype)
        return data if dtype is None else cast(data, dtype)


# Rows per block: a block's float64 copies stay a few MiB (4 MiB at width 2048). The new rows sum
# block by block, so this is part of what fixes their bytes.
_ROWS = 256


def mean_resized_rows(old: Any, added: int, rng: np.random.Generator) -> np.ndarray:
    """``added`` new rows for the table ``old`` (any float dtype), as ``resize_token_embeddings`` draws them.

    transformers (4.57 and 5) samples N(mean, 1e-9 x covariance), the covariance divided by the
    row count n (not n - 1), when 1e-9 x covariance is positive definite, and repeats the mean
    otherwise (:func:`_covariance_is_positive_definite` decides that without forming the
    covariance). A sample is drawn here as ``mean + sqrt(1e-9 / n) x centred^T w`` with
    ``w ~ N(0, I_n)``: its covariance is ``1e-9 x centred^T centred / n``, exactly transformers'
    one, and it costs O(n x width) per row. The sums run in float64 in a fixed order (elementwise
    products, added up one row after another within a block, then block after block; never
    BLAS, whose kernels order and fuse the sums differently per CPU), so the bytes are the same
    on every machine. The table (an array, or anything with ``shape`` whose row slices are
    arrays) is read in blocks of rows, so it is never whole.
    """
    n, width = old.shape
    total = np.zeros(width, np.float64)
    low = np.full(width, np.inf)
    high = np.full(width, -np.inf)
    for start in range(0, n, _ROWS):
        block = to_float(old[start:start + _ROWS], np.float64)
        total += block.sum(axis=0)
        np.minimum(low, block.min(axis=0), out=low)
        np.maximum(high, block.max(axis=0), out=high)
    mean64 = total / n
    if not _covariance_is_positive_definite(old, total, low, high):
        return np.repeat(mean64[None, :], added, axis=0)
    weights = rng.standard_normal((n, added))
    rows = np.zeros((added, width), np.float64)
    scratch = np.empty((min(n, _ROWS), width), np.float64)
    for start in range(0, n, _ROWS):
        centred = to_float(old[start:start + _ROWS], np.float64)
        centred -= mean64
        product = scratch[:len(centred)]
        for row in range(added):
            np.multiply(centred, weights[start:start + _ROWS, row, None], out=product)
            rows[row] += product.sum(axis=0)
    return mean64[None, :] + np.sqrt(_RESIZE_EPSILON / n) * rows


def _covariance_is_positive_definite(old: Any, total: np.ndarray, low: np.ndarray, high: np.ndarray) -> bool:
    """Whether the covariance of the rows of ``old`` is positive definite, as transformers decides
    it, in O(n x width) (``total``, ``low``, ``high``: each column's sum, least and largest value).

    In exact arithmetic the covariance ``centred^T centred / n`` is positive definite exactly
    when the centred table has full column rank, and 1e-9 x it then too. Three things make the
    rank short, and each is found here without the covariance: no more rows than columns (the
    n centred rows sum to zero, so they span at most n - 1 dimensions), a constant column (a
    zero centred column), and two equal columns (equal centred columns). Anything else is taken
    as full rank, as random tables with more rows than columns are, and as trained vocabularies
    (tens of thousands of rows for a few thousand columns) are expected to be.

    transformers decides with a float32 Cholesky factorisation of 1e-9 x covariance. It agrees
    with the above wherever its answer does not depend on rounding. On random tables of width 4
    to 512 it always succeeds from width + 2 rows on (and nearly always at width + 1), never
    with width - 5 rows or fewer, and it fails on a column of zeros. Where the covariance is
    singular in exact arithmetic but its float32 rounding is not exactly so (width - 4 to width
    rows, equal columns, a constant column whose float32 mean is inexact, other linear
    dependences), the last pivots of the factorisation are rounding noise: it succeeds or fails
    by the data and by the CPU's summation order (20 to 50 % of random such tables succeed; a
    constant column of 0.1 nearly always does), so no rule can match it there, and the mean
    returned here is the exact-arithmetic answer. A singular case not found here (a general
    linear dependence) draws from the degenerate normal, which is what transformers draws when
    its factorisation succeeds. A full-rank table too ill-conditioned for a float32
    factorisation (the rare failures at width + 1 rows) is drawn from, where transformers
    repeats the mean.
    """
    n, width = old.shape
    if n <= width or bool(np.any(low == high)):
        return False
    return not _has_equal_columns(old, total, low, high)


def _has_equal_columns(old: Any, total: np.ndarray, low: np.ndarray, high: np.ndarray) -> bool:
    """Whether two columns of ``old`` are equal. Equal columns have bit-equal sums (each column is
    summed row by row in the same order), least and largest values; only the columns sharing
    these with another are read again, and compared by a digest of their values."""
    keys = np.stack([total, low, high], axis=1) + 0.0
    _, group, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    suspects = np.flatnonzero(counts[group] > 1)
    if suspects.size == 0:
        return False
    digests = [hashlib.sha256() for _ in suspects]
    for start in range(0, old.shape[0], _ROWS):
        # + 0.0 turns -0.0 into 0.0: equal values, equal bytes.
        block = np.ascontiguousarray((to_float(old[start:start + _ROWS], np.float64) + 0.0)[:, suspects].T)
        for digest, column in zip(digests, block):
            digest.update(column.tobytes())
    seen = {(int(group[column]), digest.digest()) for column, digest in zip(suspects, digests)}
    return len(seen) < suspects.size


class GrownTensor(DeferredArray):
    """A checkpoint's embedding table or output head with rows added for new tokens, made when the
    writer asks for it. The writer streams it (:meth:`parts`): the old rows go file to file, and
    only row blocks of the table are read, to draw the new rows."""

    __slots__ = ("name", "source", "shape", "dtype", "seed")

    def __init__(self, name: str, source: Any, rows: int, seed: int):
        self.name, self.source, self.seed = name, source, seed
        self.shape = (rows,) + tuple(source.shape[1:])
        self.dtype = np.dtype(source.dtype)

    def new_rows(self) -> np.ndarray:
        """The added rows, as transformers' ``resize_token_embeddings`` draws them."""
        added = self.shape[0] - self.source.shape[0]
        rng = _stream(self.seed, self.name)
        if len(self.shape) == 1:  # an output head's bias: N(mean, (1e-9 x std)^2), as transformers
            values = to_float(np.asarray(self.source))
            extra = values.mean() + 1e-9 * values.std(ddof=1) * rng.standard_normal(added)
        else:
            extra = mean_resized_rows(_rows_of(self.source), added, rng)
        return cast(extra, self.dtype)

    def parts(self) -> list[Any]:
        """The tensor's bytes in order, for the writer: the old rows where they lie in the
        checkpoint file (kernel-copied) or as an array, then the new rows."""
        if _plain_file_tensor(self.source):
            return [*self.source.file_ranges(), self.new_rows()]
        return [np.asarray(self.source), self.new_rows()]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        data = np.empty(self.shape, self.dtype)
        rows = self.source.shape[0]
        data[:rows] = np.asarray(self.source)
        data[rows:] = self.new_rows()
        return data if dtype is None else cast(data, dtype)


def _plain_file_tensor(source: Any) -> bool:
    from vedforge.weights.lazy_tensor import LazyTensor

    return type(source) is LazyTensor


class _FileRows:
    """Row blocks of a 2-D checkpoint tensor, each read from its file when sliced."""

    def __init__(self, tensor: Any):
        self.tensor, self.shape, self.dtype = tensor, tuple(tensor.shape), np.dtype(tensor.dtype)

    def __getitem__(self, rows: slice) -> np.ndarray:
        import os

        from vedforge.weights.lazy_tensor import read_exactly

        start, stop, _ = rows.indices(self.shape[0])
        out = np.empty((stop - start,) + self.shape[1:], self.dtype)
        row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        fd = os.open(self.tensor.path, os.O_RDONLY)
        try:
            read_exactly(fd, memoryview(out.reshape(-1).view(np.uint8)), self.tensor.offset + start * row_bytes,
                         self.tensor.path)
        finally:
            os.close(fd)
        return out


def _rows_of(source: Any) -> Any:
    """What :func:`mean_resized_rows` slices: row blocks read on demand from a checkpoint file,
    or the array itself."""
    return _FileRows(source) if _plain_file_tensor(source) else np.asarray(source)


def _lookup(state: Mapping[str, Any], candidates: Iterable[str]) -> Optional[str]:
    return next((c for c in candidates if c in state), None)


def assemble_prefix(specs: Mapping[str, tuple[int, ...]], tower_state: Mapping[str, Any], lm_state: Mapping[str, Any], *,
                    lm_prefix: str, vocab: tuple[int, int], projector: str, dtype: Any, seed: int,
                    tower_std: float, lm_std: float, lm_head: str = "lm_head", head_from: Optional[str] = None,
                    dry_run: bool = False) -> tuple[dict[str, Any], PrefixReport]:
    """Fill every saved tensor of the LLaVA model: ``(name -> tensor, report)``.

    Args:
        specs: :func:`target_specs`.
        tower_state, lm_state: the checkpoints' tensors by their own names (lazy, or shapes in a dry run).
            Each part is found wherever its checkpoint nests it (``vit.`` in a ViTForImageClassification
            checkpoint, ``vision_tower.`` or ``language_model.`` in a LLaVA one):
            :func:`vedforge.weights.nesting.nesting_prefix`.
        lm_prefix: the causal LM's base-model prefix (``model.`` for Llama, ``transformer.`` for GPT-2).
        lm_head: the causal LM's output projection (``lm_head``; GPT-NeoX's ``embed_out``).
        vocab: the LM's vocabulary rows before and after the added tokens.
        projector: ``mlp2x_gelu`` or ``linear`` (the second Linear starts as the identity).
        head_from: the saved name of the input embeddings when the output head is written as an
            untied copy of them (a tied LM whose head transformers 5 cannot tie): the head then
            starts equal to the embeddings, added rows included.
        dtype: the dtype of the new projector tensors (the LM's).

    Raises:
        VedforgeError: a checkpoint lacks an LM tensor, or has a tensor of another shape.
    """
    from vedforge.weights.nesting import nesting_prefix

    report = PrefixReport()
    out: dict[str, Any] = {}
    _, tower_at = nesting_prefix([(n[len(TOWER):],) for n in specs if n.startswith(TOWER)], tower_state)
    lm_form, lm_at = nesting_prefix([(lm_prefix + n[len(LM_BASE):], n[len(LM_BASE):]) for n in specs
                                     if n.startswith(LM_BASE)], lm_state)
    lm_base_at = lm_at + (lm_prefix if lm_form == 0 else "")
    used = {"encoder": set(), "decoder": set()}
    old_rows, new_rows = vocab
    for name, shape in sorted(specs.items()):
        part = _part(name)
        if part == "projector":
            leaf = name.rsplit(".", 1)[-1]
            kind = "zeros" if leaf == "bias" else ("identity" if projector == "linear" and ".linear_2." in name else "normal")
            out[name] = NewTensor(name, shape, dtype, kind, seed, lm_std)
            report.new["projector"].append(name)
            report.new_count["projector"] += int(np.prod(shape))
            continue
        if part == "encoder":
            rest = name[len(TOWER):]
            state, source = tower_state, _lookup(tower_state, [tower_at + rest])
        elif name.startswith(LM_HEAD):
            rest = name[len(LM_HEAD):]
            state, source = lm_state, _lookup(lm_state, [f"{lm_at}{lm_head}.{rest}", f"{lm_head}.{rest}"])
            if source is None and head_from is not None:
                source = _lookup(lm_state, [lm_base_at + head_from[len(LM_BASE):]])
        else:
            rest = name[len(LM_BASE):]
            state, source = lm_state, _lookup(lm_state, [lm_base_at + rest])
        if source is None:
            if part == "decoder":
                raise VedforgeError(
                    f"The language model checkpoint has no tensor for '{name}' (looked for '{lm_base_at}{rest}'); "
                    "it does not hold the weights its config describes.")
            out[name] = _new_tower_tensor(name, shape, tower_std, seed)
            report.new["encoder"].append(name)
            report.new_count["encoder"] += int(np.prod(shape))
            continue
        used[part].add(source)
        tensor = state[source]
        have = tuple(tensor.shape)
        if have == shape:
            out[name] = tensor
            report.from_checkpoint[part] += int(np.prod(have))
        elif part == "decoder" and have[0] == old_rows and shape[0] == new_rows and have[1:] == shape[1:]:
            # A head copied from the embeddings draws the embeddings' new rows (same stream name).
            stream = head_from if head_from is not None and name.startswith(LM_HEAD) else name
            out[name] = _ShapeOnly(shape, tensor.dtype) if dry_run else GrownTensor(stream, tensor, new_rows, seed)
            report.from_checkpoint[part] += int(np.prod(have))
            report.grown[name] = [old_rows, new_rows]
            report.grown_count += int(np.prod(shape)) - int(np.prod(have))
        else:
            raise VedforgeError(
                f"The {'language model' if part == 'decoder' else 'vision tower'} checkpoint tensor '{source}' has shape "
                f"{have}, but the LLaVA model needs {shape} for '{name}'; a config override probably changed a "
                "pretrained dimension.")
    report.unused = {"encoder": sorted(set(tower_state) - used["encoder"]),
                     "decoder": sorted(set(lm_state) - used["decoder"])}
    return out, report


def _new_tower_tensor(name: str, shape: tuple[int, ...], std: float, seed: int) -> NewTensor:
    """A tower tensor its checkpoint lacks (a ViT pooler in a classifier's checkpoint), as
    transformers' ``_init_weights`` starts it."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "bias":
        return NewTensor(name, shape, np.float32, "zeros", seed)
    if len(shape) == 1 and "norm" in name.lower():
        return NewTensor(name, shape, np.float32, "ones", seed)
    if leaf == "weight" and len(shape) >= 2:
        return NewTensor(name, shape, np.float32, "normal", seed, std)
    raise VedforgeError(f"The vision tower checkpoint has no tensor for '{name}', and vedforge knows no initialiser for it.")


class _ShapeOnly:
    """A grown tensor's shape in a dry run (a plan): nothing is read."""

    def __init__(self, shape: tuple[int, ...], dtype: Any):
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
