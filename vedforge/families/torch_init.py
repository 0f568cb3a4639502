"""Random weights for parts transformers builds in PyTorch, drawn by vedforge rather than by torch.

No torch model is materialised. Each parameter's initialiser is read off transformers' own
PyTorch class (:mod:`vedforge.families.torch_derive`: the class built on the meta device, its own
``initialize_weights`` run there and recorded), kept in vedforge's cache of derivations, and each
tensor is a :class:`~vedforge.families.random_init.SeededTensor`: drawn from its own numpy stream
(seed, role, the tensor's saved name) only when the writer asks for it. A random 1B LM never
exists in memory as a whole.

transformers 4.57 and 5.x give the same initialisers for the families the tests cover (5.x
rewrote many ``_init_weights``, which changed the order of torch's draws from one seed, but not
the distributions), except SigLIP's. For it, listed in :data:`NUMPY_DRAWN`, a hand-written table
keeps the distributions transformers 4.57 gives, by module type, so that the same recipe writes
the same bytes on either line.

Persistent buffers (position ids, relative position indices, batch-norm statistics) are not
drawn: they get the values the model computes, from a second build in which every parameter
moves to the meta device as it is registered (:func:`~vedforge.families.torch_derive.parameters_on_meta`)
and only the buffers hold values; it runs only for classes whose state dict has buffers.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np

from vedforge.families.random_init import GENERATOR, TRUNCATED_STD, Init, SeededTensor

# Model types whose random towers take their initialisers from a hand-written table of what
# transformers 4.57 gives them, not from their class: SigLIP's class initialises otherwise on 5.x
# (its patch embedding is lecun-normal truncated at 2 std on 4.57 and a plain normal on 5.x; its
# pooling head's output projection is truncated elsewhere), so the derived initialisers would make
# a 5.x forge write other bytes than a 4.57 one. (DeiT, ConvNeXt, Swin and DETR had tables too:
# their derived initialisers are the same on both lines, so they no longer need one.)
NUMPY_DRAWN = ("siglip", "siglip_vision_model")


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """torch's fan_in and fan_out of a weight (dims 1 and 0, times the receptive field)."""
    receptive = int(np.prod(shape[2:], dtype=np.int64)) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _xavier(shape: tuple[int, ...]) -> Init:
    fan_in, fan_out = _fans(shape)
    return Init("uniform", math.sqrt(6.0 / (fan_in + fan_out)))


def _lecun(shape: tuple[int, ...]) -> Init:
    return Init("truncated_normal", math.sqrt(1.0 / _fans(shape)[0]) / TRUNCATED_STD)


def siglip_initialisers(model: Any) -> dict[str, Init]:
    """State-dict name -> initialiser of every parameter of a SigLIP vision model, as
    ``SiglipPreTrainedModel._init_weights`` (4.57) sets it: the innermost module first, then
    what an enclosing module overrides."""
    import torch.nn as nn

    out: dict[str, Init] = {}
    modules = dict(model.named_modules())
    for prefix, module in modules.items():
        at = f"{prefix}." if prefix else ""
        kind = type(module).__name__
        params = dict(module.named_parameters(recurse=False))
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            out[f"{at}weight"] = _lecun(tuple(module.weight.shape))
            if module.bias is not None:
                out[f"{at}bias"] = Init("constant", 0.0)
        elif isinstance(module, nn.LayerNorm):
            out[f"{at}weight"], out[f"{at}bias"] = Init("constant", 1.0), Init("constant", 0.0)
        elif isinstance(module, nn.Embedding):
            out[f"{at}weight"] = Init("normal", math.sqrt(1.0 / module.weight.shape[1]))
        elif isinstance(module, nn.MultiheadAttention):
            out[f"{at}in_proj_weight"] = _xavier(tuple(module.in_proj_weight.shape))
            out[f"{at}in_proj_bias"] = Init("constant", 0.0)
        if kind == "SiglipMultiheadAttentionPoolingHead":
            out[f"{at}probe"] = _xavier(tuple(params["probe"].shape))
    # Overrides of enclosing modules, applied after their children (torch's Module.apply order).
    for prefix, module in modules.items():
        at = f"{prefix}." if prefix else ""
        kind = type(module).__name__
        if kind == "SiglipVisionEmbeddings":
            out[f"{at}position_embedding.weight"] = Init("normal", 1.0 / math.sqrt(module.embed_dim))
        elif kind == "SiglipAttention":
            for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                out[f"{at}{proj}.weight"] = _xavier(tuple(getattr(module, proj).weight.shape))
                out[f"{at}{proj}.bias"] = Init("constant", 0.0)
        elif kind == "SiglipMLP":
            for fc in ("fc1", "fc2"):
                out[f"{at}{fc}.weight"] = _xavier(tuple(getattr(module, fc).weight.shape))
                out[f"{at}{fc}.bias"] = Init("normal", 1e-6)
    names = {name for name, _ in model.named_parameters()}
    return {name: init for name, init in out.items() if name in names}


_INITIALISERS = {"siglip": siglip_initialisers, "siglip_vision_model": siglip_initialisers}
_DESCRIBED = {
    "siglip": "xavier-uniform attention and MLP weights (MLP biases normal(1e-6)), lecun-normal other Linear and "
              "Conv2d weights, position embeddings normal(1/sqrt(width)), LayerNorm ones and zeros, biases zeros",
}
_DESCRIBED["siglip_vision_model"] = _DESCRIBED["siglip"]


def numpy_drawn(model_type: str) -> bool:
    """Whether vedforge's hand-written 4.57 table, not the derived one, gives ``model_type``'s initialisers."""
    return model_type in NUMPY_DRAWN


@dataclass
class TorchPartTable:
    """A random PyTorch part as vedforge draws it: the class, every saved parameter's shape, dtype,
    initialiser and stream name (a tied parameter draws from its source's stream), and the saved
    persistent buffers with their values."""

    class_name: str
    tensors: dict[str, tuple[tuple[int, ...], np.dtype, Init, str]]
    buffers: dict[str, np.ndarray]


def _numpy_dtype(dtype: Any) -> np.dtype:
    from vedforge.weights.bfloat16 import dtype_named

    return dtype_named(str(dtype).removeprefix("torch."))


def _derive_table(config: Any, choice: str) -> TorchPartTable:
    from vedforge.families.torch_derive import build_model, parameters_on_meta, trace_torch_part
    from vedforge.weights.saved_names import buffers_saved_by_4_57, saved_names

    traced = trace_torch_part(lambda: build_model(choice, config))
    model, inits = traced.model, traced.inits
    family = config.model_type
    if numpy_drawn(family):
        table = _INITIALISERS[family](model)
        inits = {name: table.get(name) or Init("unknown", 0.0, "no initialiser in vedforge's table") for name in inits}
    renamed = saved_names(model)
    params = dict(model.named_parameters(remove_duplicate=False))
    state = model.state_dict()
    tensors: dict[str, tuple[tuple[int, ...], np.dtype, Init, str]] = {}
    for name in state:
        if name not in params:
            continue
        saved, init = renamed[name], inits[name]
        if init.kind == "unknown":
            init = Init("unknown", 0.0, f"{type(model).__name__} ({family}) parameter {saved}: {init.reason}")
        # Drawn in float32 whatever dtype the class would build in (transformers 5 may take it from
        # the config, 4.57 does not): the writer casts to the forge's dtype, so both lines agree.
        dtype = np.dtype(np.float32) if params[name].is_floating_point() else _numpy_dtype(params[name].dtype)
        tensors[saved] = (tuple(params[name].shape), dtype, init, renamed[traced.tied.get(name, name)])
    wanted = [name for name in state if name not in params] + list(buffers_saved_by_4_57(model, renamed))
    buffers: dict[str, np.ndarray] = {}
    if wanted:
        with parameters_on_meta():
            built = build_model(choice, config)
        built_names = saved_names(built)
        values = {built_names[name]: t for name, t in built.state_dict().items() if name not in params}
        values.update(buffers_saved_by_4_57(built, built_names))
        buffers = {name: t.detach().cpu().contiguous().numpy().copy() for name, t in values.items()}
    return TorchPartTable(type(model).__name__, tensors, buffers)


def torch_part_table(config: Any, role: str, *, choice: str) -> TorchPartTable:
    """The table of a random ``transformers.<choice>`` of ``config`` for part ``role``.

    Derived (:mod:`vedforge.families.torch_derive`) the first time a configuration is drawn and read
    from vedforge's cache of derivations after that, keyed by the config's ``to_dict()``, the class
    choice and the role: a later forge of the same configuration imports no torch to know it.
    """
    from vedforge.core.derived_cache import derived
    from vedforge.weights.bfloat16 import dtype_name

    def encode(table: TorchPartTable) -> dict[str, Any]:
        return {"class": table.class_name,
                "tensors": [[name, list(shape), dtype_name(dtype), init.kind, init.scale, init.reason, init.mean, init.low,
                             init.high, [list(r) for r in init.rows], stream]
                            for name, (shape, dtype, init, stream) in table.tensors.items()],
                "buffers": [[name, list(value.shape), dtype_name(value.dtype), base64.b64encode(value.tobytes()).decode()]
                            for name, value in table.buffers.items()]}

    def decode(value: dict[str, Any]) -> TorchPartTable:
        tensors = {name: (tuple(shape), _numpy_dtype(dtype),
                          Init(kind, float(scale), reason, float(mean), float(low), float(high),
                               tuple((int(a), int(b), float(v)) for a, b, v in rows)), stream)
                   for name, shape, dtype, kind, scale, reason, mean, low, high, rows, stream in value["tensors"]}
        buffers = {name: np.frombuffer(base64.b64decode(data), dtype=_numpy_dtype(dtype)).reshape(shape).copy()
                   for name, shape, dtype, data in value["buffers"]}
        return TorchPartTable(value["class"], tensors, buffers)

    inputs = {"role": role, "class": choice, "config": config.to_dict(), "hand_written": numpy_drawn(config.model_type)}
    return derived("torch-initialisers", 1, inputs, lambda: _derive_table(config, choice), encode=encode, decode=decode)


def random_torch_state(config: Any, *, seed: int, role: str, choice: str, prefix: str = "",
                       table: Optional[TorchPartTable] = None) -> dict[str, Union[SeededTensor, np.ndarray]]:
    """A random ``transformers.<choice>`` of ``config`` as saved tensor name (after ``prefix``) ->
    unevaluated :class:`SeededTensor`, and its persistent buffers' values (from ``table`` when the
    caller already has the part's :func:`torch_part_table`).

    Converting a tensor whose initialiser is unknown raises
    :class:`~vedforge.families.random_init.UnknownInitializerError` naming it.
    """
    table = table or torch_part_table(config, role, choice=choice)
    state: dict[str, Union[SeededTensor, np.ndarray]] = {
        prefix + name: SeededTensor(tuple(stream.split(".")), shape, dtype, init, seed, role)
        for name, (shape, dtype, init, stream) in table.tensors.items()}
    state.update({prefix + name: value for name, value in table.buffers.items()})
    return state


def describe_torch_generation(model_type: str, choice: str, seed: int) -> dict[str, Any]:
    """The manifest's record of how a random PyTorch part's weights were made."""
    if numpy_drawn(model_type):
        return describe_numpy_generation(model_type, seed)
    return {
        "method": "seeded per tensor by vedforge (not by torch), no model materialised",
        "generator": GENERATOR + " (the tensor's saved name)",
        "distributions": f"the initialisers transformers' PyTorch {choice} of {model_type} applies to each parameter "
                         "(its own initialisation, recorded on the meta device); buffers as the model computes them",
        "seed": seed,
    }


def describe_numpy_generation(model_type: str, seed: int) -> dict[str, Any]:
    """The manifest's record of how a numpy-drawn PyTorch tower's weights were made."""
    return {
        "method": "seeded per tensor by vedforge (not by torch), the same on transformers 4.57 and 5.x",
        "generator": GENERATOR + " (the tensor's saved name)",
        "distributions": f"by module type, as transformers 4.57's {model_type} _init_weights sets them: "
                         + _DESCRIBED[model_type],
        "seed": seed,
    }
