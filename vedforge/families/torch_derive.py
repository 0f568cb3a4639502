"""The initialiser of every parameter of a transformers PyTorch class, read off the class's own code.

The class is built on the meta device (nothing is allocated) and its own initialisation is run
again there, ``initialize_weights``: ``_init_weights`` on every module in ``Module.apply`` order,
sub-models dispatching to their own. Meta tensors hold no values, so what is kept is what was
*called*: every ``torch.nn.init`` function (and transformers 5's guarded copies of them, which
call the originals through ``transformers.initialization.TORCH_INIT_FUNCTIONS``), every in-place
tensor method (``.data.normal_(...)``, ``.zero_()``, ``.fill_()``...) and every tensor factory
(``nn.Parameter(torch.zeros(...))``), by the storage it writes to. A parameter's initialiser is
the last whole-tensor call on its storage, plus any constant rows written after it (an
embedding's padding row). A storage is a reliable identity here: ``param.data``, slices and
``.to`` of a tensor already in its dtype are new Python objects over the same storage, and every
meta tensor made gets a storage of its own.

What is not recognised becomes an ``unknown`` :class:`~vedforge.families.random_init.Init` naming
the call, refused only if the tensor is ever drawn.
"""

from __future__ import annotations

import copy
import inspect
import math
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Callable, Iterator, Optional

import numpy as np

from vedforge.families.random_init import Init

# The torch.nn.init functions recorded as calls of their own (what they call inside is not recorded).
_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                   "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
                   "sparse_")
# Truncation bounds, in standard deviations, beyond which a truncated normal is a normal.
_NEVER_REACHED = 20.0
# In-place tensor methods that change no value.
_NOT_WRITING = frozenset({"requires_grad_", "share_memory_", "retain_grad", "_fix_weakref", "record_stream"})
# Tensor factories: their result starts the record of a new storage.
_FACTORIES = frozenset({"zeros", "ones", "full", "empty", "randn", "rand", "zeros_like", "ones_like", "full_like",
                        "empty_like", "randn_like", "rand_like", "new_zeros", "new_ones", "new_full", "new_empty",
                        "tensor", "arange", "empty_strided"})
# Operations whose result holds the values of their (first) input.
_VALUE_KEEPING = frozenset({"to", "type", "float", "contiguous", "clone", "detach", "cpu", "_to_copy"})


@dataclass
class _Write:
    """One call writing ``numel`` values of a storage from element ``offset`` on."""

    offset: int
    numel: int
    contiguous: bool
    init: Init


def _storage(tensor: Any) -> int:
    # The storage's address: freed storages' addresses come back, but every tensor made inside a
    # recording starts a fresh record (InitRecorder._new), so a new tensor never inherits old calls.
    try:
        return tensor.untyped_storage()._cdata
    except (RuntimeError, NotImplementedError):  # a tensor without a storage (sparse, nested)
        return -id(tensor)


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _call_init(name: str, tensor: Any, bound: dict[str, Any]) -> Init:
    """The distribution ``torch.nn.init.<name>`` (arguments ``bound``) fills ``tensor`` from."""
    import torch

    if name in ("zeros_", "zero_"):
        return Init("constant", 0.0)
    if name == "ones_":
        return Init("constant", 1.0)
    if name in ("constant_", "fill_"):
        value = _number(bound.get("val", bound.get("value")))
        return Init("constant", value) if value is not None else Init("unknown", 0.0, f"{name} with a tensor value")
    if name == "normal_":
        mean, std = _number(bound.get("mean", 0.0)), _number(bound.get("std", 1.0))
        if mean is None or std is None:
            return Init("unknown", 0.0, "normal_ with tensor arguments")
        return Init("normal", std, mean=mean) if std > 0 else Init("constant", mean)
    if name == "uniform_":
        low = _number(bound.get("a", bound.get("from", 0.0)))
        high = _number(bound.get("b", bound.get("to", 1.0)))
        if low is None or high is None:
            return Init("unknown", 0.0, "uniform_ with tensor arguments")
        return Init("uniform", (high - low) / 2, mean=(high + low) / 2)
    if name == "trunc_normal_":
        mean, std = _number(bound.get("mean", 0.0)), _number(bound.get("std", 1.0))
        low, high = _number(bound.get("a", -2.0)), _number(bound.get("b", 2.0))
        if None in (mean, std, low, high):
            return Init("unknown", 0.0, "trunc_normal_ with tensor arguments")
        if std <= 0:
            return Init("constant", min(max(mean, low), high))
        # torch's bounds are absolute; Init's are in standard deviations around the mean.
        low, high = (low - mean) / std, (high - mean) / std
        if low <= -_NEVER_REACHED and high >= _NEVER_REACHED:
            # A float32 standard normal never lands this far out, so the draw is a plain normal's (the
            # same bytes either way): ViT's trunc_normal_(std=0.02) on 4.57 is init.normal_ on 5.x.
            return Init("normal", std, mean=mean)
        return Init("truncated_normal", std, mean=mean, low=low, high=high)
    try:
        fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(tensor)
    except ValueError as exc:
        return Init("unknown", 0.0, f"{name} ({exc})")
    if name in ("xavier_uniform_", "xavier_normal_"):
        std = float(bound.get("gain", 1.0)) * math.sqrt(2.0 / float(fan_in + fan_out))
        return Init("uniform", math.sqrt(3.0) * std) if name == "xavier_uniform_" else Init("normal", std)
    if name in ("kaiming_uniform_", "kaiming_normal_"):
        fan = fan_in if bound.get("mode", "fan_in") == "fan_in" else fan_out
        gain = torch.nn.init.calculate_gain(bound.get("nonlinearity", "leaky_relu"), bound.get("a", 0))
        std = gain / math.sqrt(fan)
        return Init("uniform", math.sqrt(3.0) * std) if name == "kaiming_uniform_" else Init("normal", std)
    return Init("unknown", 0.0, f"torch.nn.init.{name}")


def _made(name: str, args: tuple, kwargs: dict) -> Init:
    """The values a tensor factory fills a new tensor with."""
    if name in ("zeros", "zeros_like", "new_zeros"):
        return Init("constant", 0.0)
    if name in ("ones", "ones_like", "new_ones"):
        return Init("constant", 1.0)
    if name in ("full", "full_like", "new_full"):
        value = _number(kwargs.get("fill_value", args[-1] if args else None))
        if value is not None:
            return Init("constant", value)
    if name in ("randn", "randn_like"):
        return Init("normal", 1.0)
    if name in ("rand", "rand_like"):
        return Init("uniform", 0.5, mean=0.5)
    return Init("unknown", 0.0, f"made by torch.{name}")


def _scaled(init: Init, factor: float) -> Init:
    """``init`` times ``factor`` (a normal's std and a uniform's half-width scale with it)."""
    if init.kind == "constant":
        return Init("constant", init.scale * factor)
    if init.kind in ("normal", "uniform", "truncated_normal") and factor > 0:
        return Init(init.kind, init.scale * factor, mean=init.mean * factor, low=init.low, high=init.high)
    return Init("unknown", 0.0, f"{init.describe()} scaled by {factor:g}")


def _shifted(init: Init, shift: float) -> Init:
    """``init`` plus ``shift``."""
    if init.kind == "constant":
        return Init("constant", init.scale + shift)
    return Init(init.kind, init.scale, mean=init.mean + shift, low=init.low, high=init.high)


def _range(init: Init) -> tuple[float, float]:
    """The smallest and largest value ``init`` draws."""
    if init.kind == "constant":
        return init.scale, init.scale
    if init.kind == "uniform":
        return init.mean - init.scale, init.mean + init.scale
    return init.mean + init.scale * init.low, init.mean + init.scale * init.high


class InitRecorder:
    """Inside :meth:`recording`, every write of a tensor's values, by storage."""

    def __init__(self) -> None:
        self.writes: dict[int, list[_Write]] = {}
        self._depth = 0

    def _write(self, tensor: Any, init: Init) -> None:
        write = _Write(tensor.storage_offset(), tensor.numel(), tensor.is_contiguous(), init)
        self.writes.setdefault(_storage(tensor), []).append(write)

    def _new(self, tensor: Any, init: Init) -> None:
        self.writes[_storage(tensor)] = [_Write(tensor.storage_offset(), tensor.numel(), True, init)]

    def _whole(self, tensor: Any) -> Optional[Init]:
        """The Init of ``tensor``'s storage if one call last wrote all of it."""
        writes = self.writes.get(_storage(tensor), [])
        if writes and writes[-1].offset == tensor.storage_offset() and writes[-1].numel == tensor.numel():
            return writes[-1].init
        return None

    def init_call(self, name: str, signature: inspect.Signature, args: tuple, kwargs: dict) -> None:
        """Record a call of ``torch.nn.init.<name>``."""
        if self._depth:
            return
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return  # a call torch itself refuses
        bound.apply_defaults()
        values = dict(bound.arguments)
        tensor = values.pop("tensor")
        self._write(tensor, _call_init(name, tensor, values))

    def tensor_call(self, func: Any, args: tuple, kwargs: dict) -> Any:
        """Run ``func`` (any torch call) and record what it writes."""
        import torch

        name = getattr(func, "__name__", "")
        first = args[0] if args else None
        if self._depth:
            return func(*args, **kwargs)
        on_tensor = isinstance(first, torch.Tensor)
        if on_tensor and name.endswith("_") and not name.endswith("__") and name not in _NOT_WRITING:
            self._write(first, self._in_place(name, first, args[1:], kwargs))
            return func(*args, **kwargs)
        if on_tensor and name in ("__imul__", "__itruediv__", "__iadd__", "__isub__"):
            # x *= k: the in-place method it stands for.
            method = {"__imul__": "mul_", "__itruediv__": "div_", "__iadd__": "add_", "__isub__": "sub_"}[name]
            self._write(first, self._in_place(method, first, args[1:], kwargs))
            return func(*args, **kwargs)
        if on_tensor and name == "__setitem__":
            # Item assignment writes an indexed region: only a whole-tensor fill is reproducible.
            self._write(first, Init("unknown", 0.0, "written by item assignment"))
            return func(*args, **kwargs)
        given = [a for arg in args for a in (arg if isinstance(arg, (list, tuple)) else (arg,))]
        inputs = {_storage(a) for a in given if isinstance(a, torch.Tensor) and a.layout == torch.strided}
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor) and out.layout == torch.strided and _storage(out) not in inputs:
            self._new(out, self._result(name, first, args, kwargs))
        return out

    def _in_place(self, name: str, tensor: Any, rest: tuple, kwargs: dict) -> Init:
        if name in ("normal_", "uniform_", "fill_", "zero_"):
            keys = {"normal_": ("mean", "std"), "uniform_": ("from", "to"), "fill_": ("value",), "zero_": ()}[name]
            return _call_init(name, tensor, {**dict(zip(keys, rest)), **kwargs})
        if name in ("mul_", "div_") and rest:
            factor, before = _number(rest[0]), self._whole(tensor)
            if factor is not None and before is not None and factor != 0:
                return _scaled(before, factor if name == "mul_" else 1.0 / factor)
        before = self._whole(tensor)
        if name in ("add_", "sub_") and rest and before is not None and before.kind != "unknown":
            shift = _number(rest[0])
            alpha = _number(kwargs.get("alpha", 1))
            if shift is not None and alpha is not None:
                shift *= alpha if name == "add_" else -alpha
                return _shifted(before, shift)
        if name == "erfinv_" and before is not None and before.kind == "uniform":
            # erfinv of a uniform on (c, d) in (-1, 1) is a normal of std 1/sqrt(2) truncated to
            # (erfinv(c), erfinv(d)): how torch's and timm-style trunc_normal_ draw.
            low, high = before.mean - before.scale, before.mean + before.scale
            if -1 < low < high < 1:
                unit = NormalDist()
                return Init("truncated_normal", math.sqrt(0.5), low=unit.inv_cdf((low + 1) / 2),
                            high=unit.inv_cdf((high + 1) / 2))
        if name == "clamp_" and before is not None and before.kind in ("truncated_normal", "uniform", "constant"):
            floor = _number(kwargs.get("min", rest[0] if rest else None))
            ceiling = _number(kwargs.get("max", rest[1] if len(rest) > 1 else None))
            lowest, highest = _range(before)
            slack = 1e-6 * max(1.0, abs(lowest), abs(highest))
            if (floor is None or floor <= lowest + slack) and (ceiling is None or ceiling >= highest - slack):
                return before  # the values are already inside: the clamp only guards rounding
        if name == "copy_" and rest:
            source = rest[0]
            import torch

            if isinstance(source, torch.Tensor) and source.shape == tensor.shape:
                known = self._whole(source)
                if known is not None:
                    return known
        return Init("unknown", 0.0, f"written in place by Tensor.{name}")

    def _result(self, name: str, first: Any, args: tuple, kwargs: dict) -> Init:
        import torch

        if name in _FACTORIES:
            return _made(name, args, kwargs)
        if isinstance(first, torch.Tensor) and name in _VALUE_KEEPING:
            known = self._whole(first)
            if known is not None:
                return known
        if name in ("mul", "__mul__", "__rmul__", "div", "__truediv__") and isinstance(first, torch.Tensor):
            factor, known = _number(args[1] if len(args) > 1 else None), self._whole(first)
            if factor is not None and known is not None and factor != 0:
                return _scaled(known, factor if "div" not in name else 1.0 / factor)
        return Init("unknown", 0.0, f"computed by {name}")

    @contextmanager
    def recording(self) -> Iterator["InitRecorder"]:
        """Record inside the block: ``torch.nn.init`` functions replaced wherever a module holds
        them (modeling files import some by name), and a torch function mode for the rest."""
        from torch.overrides import TorchFunctionMode

        # transformers 5 keeps the originals in a table when this module is first imported, so it
        # must be imported before the functions are replaced; a modeling file imported inside the
        # block may still keep a wrapper, which outside a recording only calls the original.
        try:
            import transformers.initialization  # noqa: F401
        except ImportError:  # transformers 4
            pass
        patched = _patch_init_functions()
        recorder = self

        class _Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                return recorder.tensor_call(func, tuple(args), dict(kwargs or {}))

        _ACTIVE.append(self)
        try:
            with _Mode():
                yield self
        finally:
            _ACTIVE.remove(self)
            for holder, name, fn in patched:
                holder[name] = fn

    def parameter_init(self, param: Any) -> Init:
        """The last whole-tensor initialiser of ``param``, with the constant rows written after it."""
        base, numel = param.storage_offset(), param.numel()
        row = int(np.prod(param.shape[1:], dtype=np.int64)) if param.ndim else 1
        current: Optional[Init] = None
        rows: list[tuple[int, int, float]] = []
        for write in self.writes.get(_storage(param), []):
            start = write.offset - base
            if start == 0 and write.numel == numel:
                current, rows = write.init, []
            elif (write.contiguous and param.ndim >= 1 and row and start % row == 0 and write.numel % row == 0
                  and 0 <= start and start + write.numel <= numel and write.init.kind == "constant"):
                rows.append((start // row, (start + write.numel) // row, write.init.scale))
            else:
                current, rows = Init("unknown", 0.0, f"part of it written by {write.init.describe()} "
                                                     f"{write.init.reason}".strip()), []
        if current is None:
            return Init("unknown", 0.0, "no initialisation was recorded")
        if rows and current.kind != "unknown":
            return Init(current.kind, current.scale, current.reason, current.mean, current.low, current.high,
                        tuple(rows))
        return current


# The recorders whose blocks are open; the innermost one records. The wrappers outlive a block
# (a modeling file imported inside one keeps them) and then only call the originals.
_ACTIVE: list[InitRecorder] = []
_WRAPPERS: dict[str, Callable] = {}


def _wrapper(name: str, original: Callable) -> Callable:
    """``original`` (``torch.nn.init.<name>``), telling the active recorder of each call first."""
    if name in _WRAPPERS:
        return _WRAPPERS[name]
    signature = inspect.signature(original)

    def recorded(*args: Any, **kwargs: Any) -> Any:
        recorder = _ACTIVE[-1] if _ACTIVE else None
        if recorder is None:
            return original(*args, **kwargs)
        recorder.init_call(name, signature, args, kwargs)
        recorder._depth += 1
        try:
            return original(*args, **kwargs)
        finally:
            recorder._depth -= 1

    recorded.__name__ = recorded.__qualname__ = name
    recorded.__wrapped__ = original  # type: ignore[attr-defined]
    _WRAPPERS[name] = recorded
    return recorded


def _patch_init_functions() -> list[tuple[dict, str, Callable]]:
    """Put the wrappers wherever a torch or transformers module, or transformers 5's table of
    originals, holds a ``torch.nn.init`` function; returns what to put back."""
    import torch

    originals = {}
    for name in _INIT_FUNCTIONS:
        fn = getattr(torch.nn.init, name, None)
        if fn is not None:
            originals[name] = getattr(fn, "__wrapped__", fn) if fn is _WRAPPERS.get(name) else fn
    holders: list[dict] = []
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        owner = str(getattr(module, "__name__", ""))
        if isinstance(namespace, dict) and owner.startswith(("torch.nn", "transformers")):
            holders.append(namespace)
    table = getattr(sys.modules.get("transformers.initialization"), "TORCH_INIT_FUNCTIONS", None)
    if isinstance(table, dict):
        holders.append(table)
    patched = []
    for holder in holders:
        for name, fn in originals.items():
            if holder.get(name) is fn:
                patched.append((holder, name, fn))
                holder[name] = _wrapper(name, fn)
    return patched


def _clear_marks(model: Any) -> None:
    # transformers marks what it has initialised, and skips it on a second pass.
    for item in [*model.modules(), *model.parameters(), *model.buffers()]:
        item.__dict__.pop("_is_hf_initialized", None)


def _untie(model: Any) -> dict[str, str]:
    """Give every parameter that shares another's tensor (a tied LM head) a meta tensor of its own,
    so the initialisation records each module's own calls; returns ``{tied name: source name}``,
    the source being the first name of the tensor in state-dict order (the input embeddings that
    transformers ties the head to, after initialising both)."""
    import torch

    first: dict[int, str] = {}
    tied: dict[str, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) not in first:
            first[id(param)] = name
            continue
        tied[name] = first[id(param)]
        owner, _, leaf = name.rpartition(".")
        module = model.get_submodule(owner) if owner else model
        module._parameters[leaf] = torch.nn.Parameter(torch.empty_like(param, device="meta"),
                                                      requires_grad=param.requires_grad)
    return tied


@dataclass
class TracedPart:
    """What :func:`trace_torch_part` reads off a class: the built meta model, each parameter's
    initialiser by state-dict name, and the tied names with their sources."""

    model: Any
    inits: dict[str, Init]
    tied: dict[str, str]


def trace_torch_part(build: Callable[[], Any]) -> TracedPart:
    """Build ``build()`` (a transformers PyTorch model) on the meta device and record the
    initialiser its class gives every parameter.

    Construction is recorded too: a parameter that ``_init_weights`` leaves alone keeps what its
    module's constructor drew (``nn.Linear``'s kaiming-uniform), as in transformers. transformers
    4.57 initialises while constructing, transformers 5 skips that on the meta device; both get
    their marks cleared and ``initialize_weights`` run again, untied, so every line ends with the
    same calls transformers makes for a model built on the CPU.
    """
    import torch

    recorder = InitRecorder()
    with torch.device("meta"), recorder.recording():
        model = build()
        tied = _untie(model)
        _clear_marks(model)
        model.initialize_weights()
    inits = {name: recorder.parameter_init(param) for name, param in model.named_parameters()}
    for name, source in tied.items():
        inits[name] = inits[source]
    return TracedPart(model, inits, tied)


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Inside the block, every parameter a module registers moves to the meta device at once and
    buffers stay where they are made (the CPU): a model built so computes its buffers' values
    and holds no parameter values (each parameter's CPU tensor lives only until registered)."""
    import torch

    original = torch.nn.Module.register_parameter

    def register(module: Any, name: str, param: Any) -> None:
        original(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = type(param)(param.to("meta"), requires_grad=param.requires_grad)

    torch.nn.Module.register_parameter = register
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = original


def build_model(choice: str, config: Any) -> Any:
    """transformers' ``<choice>.from_config`` (``AutoModel``, ``AutoModelForCausalLM``) of a copy of
    ``config`` (building marks the config it is given; the caller's is left alone)."""
    import transformers

    return getattr(transformers, choice).from_config(copy.deepcopy(config))
