"""Fixes that let stock PyTorch transformers run the vision encoders without a ViT-like output.

transformers' ``VisionEncoderDecoderModel`` assumes the encoder has a ``hidden_size`` and
returns ``hidden_states``/``attentions`` beside a ``[batch, tokens, channels]`` sequence.
Two encoders vedforge forges break that:

* ConvNeXt: ``ConvNextConfig`` has only ``hidden_sizes`` (one width per stage), and the
  class reads ``hidden_size`` while it is built; ``ConvNextModel.forward`` takes no
  ``output_attentions``, which both ``forward`` and ``generate()`` pass to the encoder;
  and its ``last_hidden_state`` is a feature map ``[batch, channels, height, width]``
  where the decoder's cross-attention needs ``[batch, height * width, channels]``.
* DETR: ``DetrModelOutput`` names its fields after DETR's own decoder
  (``decoder_hidden_states``, ``decoder_attentions``) and has no ``hidden_states`` or
  ``attentions``, so ``forward`` raises AttributeError while building its output, and so
  ``generate()`` fails. Its ``last_hidden_state`` holds the object-query states
  ``[batch, num_queries, d_model]``; those are kept as the decoder's memory.

Use :class:`VisionEncoderDecoderModel` from this module in place of transformers' class,
or call :func:`install` once to fix transformers' own class in this process, which is what
``pipeline("image-to-text", ...)`` and the Auto classes build.

This module imports torch and transformers' PyTorch classes only, never Flax or JAX, so
it can be copied next to a forged checkpoint and used where only PyTorch is installed.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch
from transformers import VisionEncoderDecoderModel as _StockModel
from transformers.modeling_outputs import BaseModelOutput

_COMPAT_MODEL_TYPES = frozenset({"convnext", "detr"})

# The patched methods keep a reference to the stock ones, so importing this module again
# after install() (a reload, or a second copy of it) still finds the originals instead of
# wrapping the patch in itself.
_STOCK = "_vedforge_stock"
_STOCK_INIT = getattr(_StockModel.__init__, _STOCK, _StockModel.__init__)
_STOCK_FORWARD = getattr(_StockModel.forward, _STOCK, _StockModel.forward)
_INIT_SIGNATURE = inspect.signature(_STOCK_INIT)
_FORWARD_SIGNATURE = inspect.signature(_STOCK_FORWARD)
_FORWARD_VAR_KEYWORD = next(
    (p.name for p in _FORWARD_SIGNATURE.parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD), None
)


def needs_compat(encoder_model_type: str) -> bool:
    """True when stock ``VisionEncoderDecoderModel`` cannot run this encoder without this module."""
    return encoder_model_type in _COMPAT_MODEL_TYPES


def prepare_encoder_config(config: Any) -> None:
    """Give an encoder config without ``hidden_size`` one: the width of its last stage.

    Saved configs keep the extra attribute, so a checkpoint whose config was prepared
    loads without this module's help as far as the config goes. Does nothing when the
    config already has a ``hidden_size`` or has no ``hidden_sizes`` to take it from.
    """
    if getattr(config, "hidden_size", None) is not None:
        return
    sizes = getattr(config, "hidden_sizes", None)
    if sizes:
        config.hidden_size = sizes[-1]


def _as_sequence(states: torch.Tensor) -> torch.Tensor:
    if states.dim() == 4:
        # Contiguous: GPT-2's cross-attention projection view()s its input, which a
        # transposed map of more than one image does not allow.
        return states.flatten(2).transpose(1, 2).contiguous()
    return states


def _field(outputs: Any, *names: str) -> Any:
    # hasattr, not a key lookup: a ModelOutput only has keys for the fields that are set.
    for name in names:
        if hasattr(outputs, name):
            return getattr(outputs, name)
    return None


def encoder_memory(outputs: Any) -> BaseModelOutput:
    """An encoder's output as the decoder's memory: a ``BaseModelOutput`` whose
    ``last_hidden_state`` is ``[batch, tokens, channels]``.

    Feature maps (``[batch, channels, height, width]``, in ``last_hidden_state`` and in
    ``hidden_states``) are flattened row by row into tokens. Outputs named after their own
    decoder, as DETR's are, give ``decoder_hidden_states`` and ``decoder_attentions`` as
    the ``hidden_states`` and ``attentions``. Of a plain tuple only the first entry is
    kept, since nothing says what the others are.
    """
    if isinstance(outputs, (tuple, list)):
        return BaseModelOutput(last_hidden_state=_as_sequence(outputs[0]))
    hidden_states = _field(outputs, "hidden_states", "decoder_hidden_states")
    if hidden_states is not None:
        hidden_states = tuple(_as_sequence(states) for states in hidden_states)
    return BaseModelOutput(
        last_hidden_state=_as_sequence(outputs[0]),
        hidden_states=hidden_states,
        attentions=_field(outputs, "attentions", "decoder_attentions"),
    )


def _drop_output_attentions(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    kwargs.pop("output_attentions", None)
    return args, kwargs


def _accepts(function: Any, name: str) -> bool:
    parameters = inspect.signature(function).parameters
    return name in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def _get_keyword(arguments: dict, name: str) -> Any:
    if name in _FORWARD_SIGNATURE.parameters:
        return arguments.get(name)
    return arguments.get(_FORWARD_VAR_KEYWORD, {}).get(name)


def _set_keyword(arguments: dict, name: str, value: Any) -> None:
    # A flag the stock forward only takes through **kwargs goes there, or bind() drops it.
    if name in _FORWARD_SIGNATURE.parameters or _FORWARD_VAR_KEYWORD is None:
        arguments[name] = value
    else:
        arguments.setdefault(_FORWARD_VAR_KEYWORD, {})[name] = value


class VisionEncoderDecoderModel(_StockModel):
    """transformers' ``VisionEncoderDecoderModel`` that also runs ConvNeXt and DETR encoders; a drop-in replacement.

    Other encoders give the same results as with the stock class. With ``return_dict=False``
    the result is the output object's ``to_tuple()``, so unlike the stock tuple it carries
    no pooled encoder output.
    """

    @functools.wraps(_STOCK_INIT)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        arguments = _INIT_SIGNATURE.bind_partial(self, *args, **kwargs).arguments
        config, encoder = arguments.get("config"), arguments.get("encoder")
        if config is not None and getattr(config, "encoder", None) is not None:
            prepare_encoder_config(config.encoder)
        if encoder is not None:
            # Also the encoder's own config, or the stock class warns that the shared one
            # "overwrites" it over nothing but the added hidden_size.
            prepare_encoder_config(encoder.config)
        _STOCK_INIT(self, *args, **kwargs)
        # generate() passes output_attentions to the encoder whatever its signature; the
        # hook goes with the module and keeps it off encoders that would reject it.
        if not _accepts(self.encoder.forward, "output_attentions"):
            self.encoder.register_forward_pre_hook(_drop_output_attentions, with_kwargs=True)

    @functools.wraps(_STOCK_FORWARD)
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        bound = _FORWARD_SIGNATURE.bind(self, *args, **kwargs)
        arguments = bound.arguments
        encoder_outputs = arguments.get("encoder_outputs")
        pixel_values = arguments.get("pixel_values")
        if encoder_outputs is None and pixel_values is None:
            return _STOCK_FORWARD(*bound.args, **bound.kwargs)  # for its own error message

        if encoder_outputs is None:
            extra = arguments.get(_FORWARD_VAR_KEYWORD, {})
            # Split as the stock forward does: decoder_* keywords are the decoder's.
            encoder_kwargs = {
                key: value
                for key, value in extra.items()
                if not key.startswith("decoder_") and key != "num_items_in_batch"
            }
            for flag in ("output_attentions", "output_hidden_states"):
                if _get_keyword(arguments, flag) is not None:
                    encoder_kwargs[flag] = _get_keyword(arguments, flag)
            encoder_outputs = self.encoder(pixel_values=pixel_values, return_dict=True, **encoder_kwargs)
        arguments["encoder_outputs"] = encoder_memory(encoder_outputs)

        return_dict = _get_keyword(arguments, "return_dict")
        if return_dict is None:
            # What config.use_return_dict gives in 4.x, without its deprecation warning in 5.x.
            return_dict = self.config.return_dict and not getattr(self.config, "torchscript", False)
        if return_dict:
            return _STOCK_FORWARD(*bound.args, **bound.kwargs)
        # With return_dict=False the stock forward concatenates its tuple with the
        # BaseModelOutput it makes of given encoder_outputs, a TypeError; build the
        # output object and flatten it instead.
        _set_keyword(arguments, "return_dict", True)
        return _STOCK_FORWARD(*bound.args, **bound.kwargs).to_tuple()


setattr(VisionEncoderDecoderModel.__init__, _STOCK, _STOCK_INIT)
setattr(VisionEncoderDecoderModel.forward, _STOCK, _STOCK_FORWARD)


def install() -> None:
    """Make transformers' own ``VisionEncoderDecoderModel`` behave as this module's class
    for the rest of this process; calling it again changes nothing.

    Models built before the call get the fixed ``forward`` but not what is done while
    building, so a ConvNeXt one can still fail; build (or load) them after it.
    """
    _StockModel.__init__ = VisionEncoderDecoderModel.__init__
    _StockModel.forward = VisionEncoderDecoderModel.forward
