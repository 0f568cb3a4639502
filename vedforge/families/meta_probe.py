"""Run transformers' PyTorch classes on the meta device, to learn what a model does without any weights.

Building on the meta device allocates nothing, so a 70B configuration costs what a tiny one does.
Forward passes on meta tensors compute shapes only. Two things stop many forwards there, and this
module works around the first: ``torch.autocast(device_type="meta")`` raises (rotary embeddings and
DINOv3's patch embedding open an autocast block on their input's device), so inside
:func:`meta_autocast` such a block runs as the CPU's, which with ``enabled=False`` (the only way
those models open it) changes nothing. The second, a data-dependent ``.item()`` in attention-mask
helpers, is why :func:`projections_reading` calls one decoder layer rather than the whole model.
"""

from __future__ import annotations

import copy
import inspect
from contextlib import contextmanager
from typing import Any, Callable, Iterator

# Config attributes holding a model's layer count: a probe needs one layer, since every layer of a
# decoder is built alike and building fewer is faster (a 61-layer MoE takes seconds on meta).
_LAYER_COUNTS = ("num_hidden_layers", "decoder_layers", "n_layer", "num_layers")


def takes(function: Callable, name: str) -> bool:
    """Whether ``function`` names parameter ``name`` explicitly (``**kwargs`` does not count: a
    model that only swallows a keyword does not use it)."""
    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


@contextmanager
def meta_autocast() -> Iterator[None]:
    """Let ``torch.autocast(device_type="meta", ...)`` run as the CPU's inside the block."""
    import torch

    stock = torch.autocast

    class _Autocast(stock):  # type: ignore[misc, valid-type]
        def __init__(self, device_type: str, *args: Any, **kwargs: Any) -> None:
            super().__init__("cpu" if device_type == "meta" else device_type, *args, **kwargs)

    torch.autocast = _Autocast
    try:
        yield
    finally:
        torch.autocast = stock


def one_layer(config: Any) -> Any:
    """A copy of ``config`` with one layer wherever it names a layer count."""
    shallow = copy.deepcopy(config)
    for name in _LAYER_COUNTS:
        if isinstance(getattr(shallow, name, None), int) and getattr(shallow, name) > 1:
            setattr(shallow, name, 1)
    return shallow


def build_on_meta(cls: Any, config: Any) -> Any:
    """``cls`` built from a copy of ``config`` on the meta device (transformers 5 marks the config
    it builds from, so the caller's is left alone)."""
    import torch

    with torch.device("meta"):
        if hasattr(cls, "_from_config"):
            return cls._from_config(copy.deepcopy(config))
        return cls(copy.deepcopy(config))


def _is_projection(module: Any) -> bool:
    # A leaf owning a 2-D weight: nn.Linear, GPT-2's Conv1D, and the quantisation-aware variants.
    weight = getattr(module, "weight", None)
    return not any(True for _ in module.children()) and getattr(weight, "ndim", 0) == 2 and not hasattr(
        module, "num_embeddings")


def projections_reading(layer: Any, width: int, *, tokens: int = 3, memory: int = 11) -> list[str]:
    """The projections of decoder ``layer`` whose input is the ``encoder_hidden_states`` it is given.

    The layer is called alone on the meta device with hidden states of ``tokens`` positions and
    encoder states of ``memory`` positions (a length nothing else in a layer has), and every
    projection records the length of what it receives.

    Raises:
        Exception: whatever the layer raises when called so (left to the caller to report).
    """
    import torch

    reading: list[str] = []
    names = {module: name for name, module in layer.named_modules()}

    def record(module: Any, args: tuple, kwargs: dict) -> None:
        first = args[0] if args else next(iter(kwargs.values()), None)
        if isinstance(first, torch.Tensor) and first.dim() >= 2 and first.shape[-2] == memory:
            reading.append(names[module])

    hooks = [m.register_forward_pre_hook(record, with_kwargs=True) for m in layer.modules() if _is_projection(m)]
    try:
        with torch.no_grad(), meta_autocast():
            layer(torch.zeros(1, tokens, width, device="meta"),
                  encoder_hidden_states=torch.zeros(1, memory, width, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return reading


def vision_output(model: Any, channels: int, size: tuple[int, int]) -> Any:
    """``model``'s output for one meta image of ``channels`` x ``size``.

    Raises:
        Exception: whatever the model raises on ``pixel_values`` alone.
    """
    import torch

    with torch.no_grad(), meta_autocast():
        return model(pixel_values=torch.zeros(1, channels, *size, device="meta"))
