"""Random weights for a ``weights: random`` part, generated tensor by tensor from the recipe seed.

transformers' Flax classes initialise a model by running ``module.init`` through XLA, which
compiles every initialiser of every shape (about 150 compilations for a tiny pair, seconds of
start-up). vedforge instead traces the checkpoint class abstractly (``jax.eval_shape`` on
abstract inputs: no backend starts, nothing is compiled) and records, for every parameter, the
initialiser its Flax module declares (``nn.Dense``'s ``kernel_init``, ``nn.Embed``'s
``embedding_init``, BEiT's layer-scale ``ones_with_scale``, ViT's truncated-normal variance
scaling...). Each tensor is then drawn with numpy from a stream of its own, keyed by the recipe
seed, the part's role and the tensor's path: the same distribution transformers' Flax
initialisation draws from, and the same bytes for the same recipe in every process.
"""

from __future__ import annotations

import hashlib
import inspect
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from vedforge.weights.bfloat16 import cast, dtype_name, dtype_named, full
from vedforge.weights.checkpoint import FlatState
from vedforge.weights.lazy_tensor import DeferredArray

Path_ = tuple[str, ...]

# How the weights of a random part are made, as the manifest records it.
GENERATOR = "numpy PCG64, one stream per tensor seeded by sha256(seed, role, tensor path)"

# Standard deviation of a standard normal truncated to (-2, 2), as jax.nn.initializers uses it.
_TRUNCATED_STD = 0.87962566103423978
TRUNCATED_STD = _TRUNCATED_STD


class UnknownInitializerError(RuntimeError):
    """A parameter's declared initialiser is not one vedforge can reproduce without XLA."""


@dataclass(frozen=True)
class Init:
    """A parameter's initial distribution.

    ``kind`` is ``constant`` (every value ``scale``), ``normal`` (std ``scale``),
    ``truncated_normal`` (a standard normal truncated to (``low``, ``high``), times ``scale``) or
    ``uniform`` (uniform on (-``scale``, ``scale``)), each shifted by ``mean``; ``unknown`` cannot
    be drawn. ``rows`` are ``(start, stop, value)`` ranges of leading-axis rows set to ``value``
    after the draw (an embedding's padding row, which PyTorch initialisation zeroes).
    """

    kind: str
    scale: float
    # Why the initialiser is unknown (kind ``unknown``): drawing such a tensor raises.
    reason: str = ""
    mean: float = 0.0
    low: float = -2.0
    high: float = 2.0
    rows: tuple[tuple[int, int, float], ...] = ()

    def describe(self) -> str:
        """A short human-readable form, e.g. ``normal(0.02)``."""
        extra = f", mean {self.mean:.6g}" if self.mean else ""
        if self.kind == "truncated_normal" and (self.low, self.high) != (-2.0, 2.0):
            extra += f", within ({self.low:.6g}, {self.high:.6g})"
        if self.rows:
            extra += ", rows " + ", ".join(f"{a}:{b}={v:g}" for a, b, v in self.rows)
        return f"{self.kind}({self.scale:.6g}{extra})"


def _closure(fn: Callable) -> dict[str, Any]:
    return dict(inspect.getclosurevars(fn).nonlocals)


def _fans(shape: tuple[int, ...], in_axis: Any, out_axis: Any, batch_axis: Any) -> tuple[float, float]:
    """``jax.nn.initializers._compute_fans``, for numbers."""
    def size(axes: Any) -> int:
        return shape[axes] if isinstance(axes, int) else math.prod(shape[i] for i in axes)

    in_size, out_size, batch = size(in_axis), size(out_axis), size(batch_axis)
    receptive = math.prod(shape) / in_size / out_size / batch
    return in_size * receptive, out_size * receptive


def describe_initializer(init_fn: Callable, init_args: tuple, shape: tuple[int, ...]) -> Init:
    """The distribution ``init_fn(key, *init_args)`` draws a tensor of ``shape`` from.

    Recognises what transformers' Flax models declare: ``jax.nn.initializers`` ``zeros``,
    ``ones``, ``normal`` and ``variance_scaling`` (so also ``lecun_normal``, flax's default
    Dense kernel), and BEiT's ``ones_with_scale``.

    Raises:
        UnknownInitializerError: any other initialiser.
    """
    import jax

    name = getattr(init_fn, "__qualname__", repr(init_fn))
    module = getattr(init_fn, "__module__", "") or ""
    if init_fn is jax.nn.initializers.zeros:
        return Init("constant", 0.0)
    if init_fn is jax.nn.initializers.ones:
        return Init("constant", 1.0)
    if name == "ones_with_scale" and module.startswith("transformers.") and len(init_args) >= 2:
        return Init("constant", float(init_args[1]))
    try:
        return _jax_closure_init(init_fn, name, module, shape)
    except (KeyError, TypeError, ValueError) as exc:
        # jax keeps an initialiser's settings in its closure; a jax that names them otherwise
        # is reported, not guessed at.
        raise UnknownInitializerError(f"initialiser {module}.{name} ({type(exc).__name__}: {exc})") from None


def _jax_closure_init(init_fn: Callable, name: str, module: str, shape: tuple[int, ...]) -> Init:
    if module.startswith("jax.") and name == "normal.<locals>.init":
        return Init("normal", float(_closure(init_fn)["stddev"]))
    if module.startswith("jax.") and name == "variance_scaling.<locals>.init":
        v = _closure(init_fn)
        fan_in, fan_out = _fans(shape, v["in_axis"], v["out_axis"], v["batch_axis"])
        denominator = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2,
                       "fan_geo_avg": (fan_in * fan_out) ** 0.5}[v["mode"]]
        variance = float(v["scale"]) / denominator
        if v["distribution"] == "truncated_normal":
            return Init("truncated_normal", math.sqrt(variance) / _TRUNCATED_STD)
        if v["distribution"] == "normal":
            return Init("normal", math.sqrt(variance))
        if v["distribution"] == "uniform":
            return Init("uniform", math.sqrt(3 * variance))
    raise UnknownInitializerError(f"initialiser {module}.{name}")


@contextmanager
def recorded_initializers() -> Iterator[dict[Path_, tuple[Callable, tuple]]]:
    """Record ``(init_fn, init_args)`` of every parameter Flax creates inside the block, by path.

    Every Flax parameter is created through ``flax.core.scope.Scope.param``, which knows the
    module path and the declared initialiser; the recorder wraps it for the duration of a trace
    (a forge traces on one thread; the wrapper only records and passes everything on).
    """
    from flax.core import scope as flax_scope

    recorded: dict[Path_, tuple[Callable, tuple]] = {}
    original = flax_scope.Scope.param

    def param(self, name, init_fn, *init_args, **init_kwargs):
        recorded.setdefault(tuple(self.path) + (name,), (init_fn, init_args))
        return original(self, name, init_fn, *init_args, **init_kwargs)

    flax_scope.Scope.param = param
    try:
        yield recorded
    finally:
        flax_scope.Scope.param = original


def traced_part(cls: Any, config: Any) -> dict[Path_, tuple[Any, Init]]:
    """Every parameter of Flax class ``cls`` built from ``config``: its shape spec and initialiser.

    The class is constructed inside ``jax.eval_shape`` with ``_do_init=False``, so its own
    ``init_weights`` runs on abstract values: its PRNG key is a tracer, no array is made, no
    backend starts and nothing is compiled.

    A parameter whose initialiser cannot be reproduced gets an ``unknown`` :class:`Init`.
    """
    import jax
    import jax.numpy as jnp
    from flax.traverse_util import flatten_dict

    shapes: dict[str, Any] = {}

    def build():
        shapes["tree"] = cls(config, _do_init=False).params_shape_tree
        return jnp.zeros(())

    with recorded_initializers() as recorded:
        jax.eval_shape(build)
    out: dict[Path_, tuple[Any, Init]] = {}
    for path, spec in flatten_dict(shapes["tree"]).items():
        # A tied head re-applies a module under a scope of its own; only the tree's paths count.
        init_fn, init_args = recorded.get(path, (None, ()))
        try:
            if init_fn is None:
                raise UnknownInitializerError("no initialiser was recorded")
            out[path] = (spec, describe_initializer(init_fn, init_args, tuple(spec.shape)))
        except UnknownInitializerError as exc:
            # Refused only if drawn: a tensor the combined model leaves unused (a full CLIP
            # checkpoint's text tower and logit scale) is never generated.
            out[path] = (spec, Init("unknown", 0.0, f"{cls.__name__} parameter {'/'.join(path)}: {exc}"))
    return out


def _stream(seed: int, role: str, path: Path_) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}\x00{role}-weights\x00{'/'.join(path)}".encode()).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest, "little")))


def draw(init: Init, shape: tuple[int, ...], dtype: Any, rng: np.random.Generator) -> np.ndarray:
    """A tensor of ``shape`` drawn from ``init`` with ``rng``."""
    dtype = np.dtype(dtype)
    if init.kind == "unknown":
        raise UnknownInitializerError(f"{init.reason}; vedforge cannot draw it")
    if init.kind == "constant":
        values = full(shape, init.scale, dtype)
    else:
        if init.kind == "uniform":
            values = rng.uniform(-1.0, 1.0, shape).astype(np.float32)
        else:
            values = rng.standard_normal(shape, dtype=np.float32)
            if init.kind == "truncated_normal":
                # Redraw what falls outside (low, high): the truncated normal jax draws by inversion.
                low, high = np.float32(init.low), np.float32(init.high)
                outside = (values <= low) | (values >= high)
                while outside.any():
                    values[outside] = rng.standard_normal(int(outside.sum()), dtype=np.float32)
                    outside = (values <= low) | (values >= high)
        values *= np.float32(init.scale)  # in place: a large part's embedding can reach a GB
        if init.mean:
            values += np.float32(init.mean)
    values = cast(values, dtype)
    for start, stop, value in init.rows:
        values[start:stop] = cast(np.float64(value), dtype)
    return values


class SeededTensor(DeferredArray):
    """A tensor of a random part, drawn when the writer asks for it: its values depend only on
    the recipe seed, the part's role and its path, so holding it until then buys nothing."""

    __slots__ = ("path", "shape", "dtype", "init", "seed", "role")

    def __init__(self, path: Path_, shape: tuple[int, ...], dtype: Any, init: Init, seed: int, role: str):
        self.path, self.shape, self.dtype = tuple(path), tuple(shape), np.dtype(dtype)
        self.init, self.seed, self.role = init, seed, role

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        data = draw(self.init, self.shape, self.dtype, _stream(self.seed, self.role, self.path))
        return data if dtype is None else cast(data, dtype)


def part_initialisers(load_class: Callable[[], Any], config: Any, role: str, *, choice: str = "checkpoint class"
                      ) -> tuple[str, dict[Path_, tuple[Any, Init]]]:
    """The name of the Flax class ``load_class()`` returns for ``config``, and every parameter's shape
    spec and initialiser (:func:`traced_part`). ``choice`` names how ``load_class`` picks the class
    from the config (it is part of the cache key).

    Traced the first time a configuration is drawn and read from vedforge's cache of derivations
    (:mod:`vedforge.core.derived_cache`) after that: ``load_class`` is called, and jax and flax are
    imported, only on a miss.
    """
    from vedforge.core.derived_cache import derived
    from vedforge.weights.lazy_tensor import TensorSpec

    def trace() -> tuple[str, dict[Path_, tuple[Any, Init]]]:
        cls = load_class()
        return cls.__name__, traced_part(cls, config)

    def encode(result: tuple[str, dict[Path_, tuple[Any, Init]]]) -> dict[str, Any]:
        name, table = result
        return {"class": name, "tensors": [[list(path), list(spec.shape), dtype_name(spec.dtype), init.kind,
                                             init.scale, init.reason] for path, (spec, init) in table.items()]}

    def decode(value: dict[str, Any]) -> tuple[str, dict[Path_, tuple[Any, Init]]]:
        return value["class"], {tuple(path): (TensorSpec(tuple(shape), dtype_named(dtype)), Init(kind, float(scale), reason))
                                for path, shape, dtype, kind, scale, reason in value["tensors"]}

    return derived("flax-initialisers", 1, {"role": role, "class": choice, "config": config.to_dict()}, trace,
                   encode=encode, decode=decode)


def random_part_state(load_class: Callable[[], Any], config: Any, *, seed: int, role: str,
                      choice: str = "checkpoint class") -> FlatState:
    """The tensors of a randomly initialised Flax ``load_class()(config)``, in that class's layout,
    unevaluated (:func:`part_initialisers`).

    Converting a tensor whose initialiser is unknown raises :class:`UnknownInitializerError`.
    """
    _, table = part_initialisers(load_class, config, role, choice=choice)
    return {path: SeededTensor(path, spec.shape, spec.dtype, init, seed, role) for path, (spec, init) in table.items()}


def describe_generation(class_name: str, seed: int) -> dict[str, Any]:
    """The manifest's record of how a random part's weights were made."""
    return {
        "method": "seeded per tensor, without XLA",
        "generator": GENERATOR,
        "distributions": f"the initialisers transformers' {class_name} declares for each parameter",
        "seed": seed,
    }
