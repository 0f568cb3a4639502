"""Which model types can pair, which cannot and why, and family conventions.

Everything here is decided from a model's configuration alone, so an impossible pairing
is refused before any weights are read.
"""

from __future__ import annotations

from dataclasses import dataclass

from vedforge.errors import UnsupportedModelError


@dataclass(frozen=True)
class DecoderFamily:
    """Conventions of a decoder family that its configs do not always record."""

    # Used when the config names neither decoder_start_token_id nor bos_token_id.
    conventional_start: str | None = None
    conventional_end: str | None = None
    # Config attribute holding the stddev the family initialises its Dense layers with.
    init_std_attr: str = "initializer_range"
    # Target parameter path -> checkpoint path to take it from when the target is absent
    # from the checkpoint (BART keeps the decoder's token embeddings in `model/shared`).
    aliases: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = ()
    # The (module, layer) holding the cross-attention's output projection, for families where
    # cross-attention adds onto the residual stream before any LayerNorm (pre-LN): zeroing it
    # leaves the decoder computing exactly its language model. None where that is not so.
    cross_attention_output: tuple[str, str] | None = None


# Vision models whose Flax port can serve as the encoder. `clip` names a full CLIP
# checkpoint: vedforge takes its vision tower (model type clip_vision_model).
ENCODER_TYPES: dict[str, str] = {
    "vit": "ViT",
    "beit": "BEiT",
    "dinov2": "DINOv2",
    "clip_vision_model": "CLIP vision tower",
    "clip": "CLIP (vision tower taken)",
}

# Vision models with no Flax port in transformers 4.x: forged with backend=pt, where
# transformers' PyTorch classes build them (see vedforge.torch_encoder).
PYTORCH_ONLY_ENCODER_TYPES: dict[str, str] = {
    "swin": "Swin",
    "deit": "DeiT",
    "convnext": "ConvNeXt",
    "detr": "DETR (its object-query states are the decoder's memory)",
}

_BERT_LIKE = DecoderFamily(conventional_start="[CLS]", conventional_end="[SEP]")
_ROBERTA_LIKE = DecoderFamily(conventional_start="<s>", conventional_end="</s>")

DECODER_FAMILIES: dict[str, DecoderFamily] = {
    "gpt2": DecoderFamily(cross_attention_output=("crossattention", "c_proj")),
    "bart": DecoderFamily(
        init_std_attr="init_std",
        aliases=((("model", "decoder", "embed_tokens", "embedding"), ("model", "shared", "embedding")),),
    ),
    "bert": _BERT_LIKE,
    "roberta": _ROBERTA_LIKE,
    "xlm-roberta": _ROBERTA_LIKE,
    "roberta-prelayernorm": _ROBERTA_LIKE,
}

# Model types that are refused, with the reason given to the user.
_NO_FLAX = "has no Flax implementation in transformers 4.x"
_NO_CROSS_ATTENTION = "is a decoder-only language model without cross-attention layers, so it cannot attend to image features"
REFUSED: dict[str, str] = {
    **{t: _NO_FLAX + " and is not among the encoders vedforge builds with PyTorch" for t in ("swinv2", "convnextv2", "donut-swin", "mobilevit")},
    **{t: "has no Flax vision model that exposes the patch features a decoder can attend to" for t in ("resnet", "regnet")},
    **{
        t: _NO_CROSS_ATTENTION
        for t in ("llama", "opt", "gpt_neo", "gptj", "mistral", "gemma", "gemma2", "bloom", "xglm", "qwen2", "phi")
    },
    **{t: "is a sequence-to-sequence model, not a causal language model that can be used as a decoder" for t in ("t5", "mt5", "longt5")},
    **{t: "has a Flax port that fails inside its cross-attention in transformers 4.x" for t in ("electra", "big_bird")},
}


def _describe(kinds: dict[str, object]) -> str:
    return ", ".join(sorted(kinds))


def check_encoder_type(model_type: str, where: str, backend: str = "flax") -> None:
    """Raise :class:`UnsupportedModelError` unless ``model_type`` can be a vision encoder for ``backend``."""
    if model_type in ENCODER_TYPES:
        return
    if model_type in PYTORCH_ONLY_ENCODER_TYPES:
        if backend == "pt":
            return
        raise UnsupportedModelError(
            f"The encoder {where} has model type '{model_type}', which {_NO_FLAX}, so backend=flax cannot forge it. "
            f"Forge it for PyTorch with backend=pt (needs the torch extra: pip install \"vedforge[torch]\"). "
            f"Encoder model types backend=flax supports: {_describe(ENCODER_TYPES)}."
        )
    if model_type in DECODER_FAMILIES or model_type in REFUSED and "decoder" in REFUSED[model_type]:
        reason = "is a text model, not a vision model"
    else:
        reason = REFUSED.get(model_type, "is not a vision model vedforge can use as an encoder")
    raise UnsupportedModelError(
        f"The encoder {where} has model type '{model_type}', which {reason}. "
        f"Supported encoder model types: {_describe(ENCODER_TYPES)}; with backend=pt also "
        f"{_describe(PYTORCH_ONLY_ENCODER_TYPES)}."
    )


def decoder_family(model_type: str, where: str) -> DecoderFamily:
    """Return the family conventions for ``model_type`` or raise :class:`UnsupportedModelError`."""
    family = DECODER_FAMILIES.get(model_type)
    if family is not None:
        return family
    if model_type in ENCODER_TYPES:
        reason = "is a vision model, not a text decoder"
    else:
        reason = REFUSED.get(model_type, "has no Flax causal-LM port with cross-attention that vedforge supports")
    raise UnsupportedModelError(
        f"The decoder {where} has model type '{model_type}', which {reason}. "
        f"Supported decoder model types: {_describe(DECODER_FAMILIES)}."
    )
