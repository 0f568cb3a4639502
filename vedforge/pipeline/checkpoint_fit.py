"""Does a Flax vision-encoder-decoder checkpoint hold the model its config describes?

A conversion names its tensors from their Flax paths (:func:`vedforge.weights.pytorch_layout.pytorch_named`)
and builds no PyTorch model, so the usual ways a checkpoint and its config part company are
checked here, from the config's numbers and the tensors' paths and shapes: a part is missing or
extra, a layer stack has another number of layers than the config says, or one layer lacks a
tensor the others have (or has it in another shape).
"""

from __future__ import annotations

from typing import Any

from vedforge.core.errors import BackendError
from vedforge.families.registry import family_of
from vedforge.weights.checkpoint import FlatState
from vedforge.weights.pytorch_layout import pytorch_name, unmapped_tensors_error

_PARTS = ("encoder", "decoder")
_PROJECTION = "enc_to_dec_proj"


def _needs_projection(config: Any) -> bool:
    """As ``VisionEncoderDecoderModel.__init__`` decides whether it has an ``enc_to_dec_proj``."""
    return (config.encoder.hidden_size != config.decoder.hidden_size
            and getattr(config.decoder, "cross_attention_hidden_size", None) is None)


def _layer_count(config: Any, part: str) -> int | None:
    """The number of layers the config gives ``part``'s stack, or None when it names none."""
    sub = getattr(config, part)
    family = family_of(sub.model_type)
    attribute = family.decoder_layer_attribute if family is not None and part == "decoder" else "num_hidden_layers"
    count = getattr(sub, attribute, None)
    return count if isinstance(count, int) else None


def _stacks(params: FlatState, part: str) -> dict[tuple[str, ...], dict[int, dict[tuple[str, ...], tuple[int, ...]]]]:
    """``part``'s layer stacks: the path before a numbered level -> layer number -> the layer's
    tensors (path inside the layer -> shape)."""
    stacks: dict[tuple[str, ...], dict[int, dict[tuple[str, ...], tuple[int, ...]]]] = {}
    for path, arr in params.items():
        if path[0] != part:
            continue
        for depth, key in enumerate(path[1:-1], start=1):
            if key.isdigit():
                layers = stacks.setdefault(path[:depth], {})
                layers.setdefault(int(key), {})[path[depth + 1:]] = tuple(arr.shape)
                break
    return stacks


def _name(path: tuple[str, ...], shape: tuple[int, ...]) -> str:
    return pytorch_name(path, len(shape), {})[0]


def check_checkpoint_fits(config: Any, params: FlatState, advice: str) -> None:
    """Raise unless ``params`` hold the parts and layers ``config`` describes.

    Raises:
        BackendError: what is missing or has no place, in the words of
            :func:`vedforge.weights.pytorch_layout.to_pytorch_layout`'s error, then ``advice``.
    """
    cross = getattr(config.decoder, "cross_attention_hidden_size", None)
    if cross is not None and cross != config.encoder.hidden_size:
        # VisionEncoderDecoderModel refuses to be built from such a config.
        raise BackendError(
            f"The decoder's cross_attention_hidden_size ({cross}) is not the encoder's hidden_size "
            f"({config.encoder.hidden_size}). {advice}."
        )
    unexpected: list[str] = []
    missing: list[str] = []
    parts = {path[0] for path in params}
    wanted = set(_PARTS) | ({_PROJECTION} if _needs_projection(config) else set())
    for path, arr in sorted(params.items()):
        if path[0] not in wanted:
            unexpected.append(f"{'/'.join(path)} {tuple(arr.shape)}")
    missing.extend(f"{part}.*" for part in sorted(wanted - parts))
    for part in _PARTS:
        count = _layer_count(config, part)
        for prefix, layers in sorted(_stacks(params, part).items()):
            first = layers[min(layers)]
            expected = range(count) if count is not None else range(max(layers) + 1)
            for number in expected:
                here = layers.get(number, {})
                for inner, shape in sorted(first.items()):
                    if here.get(inner) != shape:
                        missing.append(_name(prefix + (str(number),) + inner, shape))
            for number, tensors in sorted(layers.items()):
                for inner, shape in sorted(tensors.items()):
                    path = prefix + (str(number),) + inner
                    if number not in expected or first.get(inner) != shape:
                        unexpected.append(f"{'/'.join(path)} {shape}")
    if unexpected or missing:
        raise unmapped_tensors_error(config, unexpected, missing, advice)
