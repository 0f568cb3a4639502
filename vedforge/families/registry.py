"""Which model types can pair, which cannot and why, and family conventions.

Everything here is decided from a model's configuration alone, so an impossible pairing
is refused before any weights are read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vedforge.core.errors import UnsupportedModelError


@dataclass(frozen=True)
class ModelFamily:
    """What vedforge knows about one model type that its configs do not say.

    One record per model type: adding a family is one record here plus its tiny assets.
    """

    model_type: str
    label: str
    role: str  # "encoder" or "decoder"
    # "flax": transformers has a Flax port; "pytorch": built with transformers' PyTorch
    # classes (backend=pt only, see vedforge.architectures.cross_attention.torch_encoder).
    built_with: str = "flax"
    # Attribute paths of the layer counts in the checkpoint's config (a full CLIP checkpoint
    # has two towers; BART's seq2seq config an encoder and a decoder).
    layer_attributes: tuple[tuple[str, ...], ...] = (("num_hidden_layers",),)
    # --- encoders ---
    # The checkpoint is a full two-tower model whose vision tower (config.vision_config) is taken.
    vision_tower: bool = False
    # transformers 4.x does not register the Flax class with FlaxAutoModel (vedforge.compat does).
    needs_flax_registration: bool = False
    # With drop_path_rate > 0, training the Flax model needs a "droppath" PRNG (vedforge.compat).
    drop_path_rng: bool = False
    # Why transformers' PyTorch VisionEncoderDecoderModel cannot run this encoder as is (fixed
    # by vedforge.torch_compat), or None.
    torch_compat_fix: str | None = None
    # In a prefix (LLaVA) pairing: LLaVA's vision_feature_select_strategy when the recipe names
    # none ("default" drops the tower's leading CLS token, "full" keeps every token, for towers
    # without one such as SigLIP); None: LlavaForConditionalGeneration cannot take this tower.
    prefix_select_strategy: str | None = None
    # Tokens the tower emits before its patch tokens (1 for a CLS token, 2 for DeiT's CLS and
    # distillation tokens, 0 for SigLIP): the processor's num_additional_image_tokens.
    prefix_leading_tokens: int = 0
    # --- decoders ---
    # Can be a VisionEncoderDecoderModel decoder (it takes cross-attention layers).
    cross_attention: bool = True
    # Can be the language model of a prefix (LLaVA) pairing: AutoModelForCausalLM builds it
    # and LlavaForConditionalGeneration holds it.
    prefix_lm: bool = False
    # The LM base model's input embedding module. transformers 5's LlavaForConditionalGeneration
    # ties its head to `model.language_model.embed_tokens`; an LM whose table is named otherwise
    # (GPT-2's `wte`) is forged with the head as an untied copy, so it loads in 4.57 and 5.
    input_embeddings: str = "embed_tokens"
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
    # transformers 4.x's Flax wrapper passes the image features positionally, into the wrong
    # parameter of this decoder; vedforge.compat calls it by keyword.
    keyword_decode: bool = False
    # Positions are numbered from pad_token_id + 1 (as in PyTorch and pretraining), not 0.
    position_offset: bool = False
    # The decoder's layer count inside the combined model's config.
    decoder_layer_attribute: str = "num_hidden_layers"

    @property
    def needs_flax_compat(self) -> bool:
        """True when the forged Flax model needs vedforge.compat to load or generate."""
        return self.keyword_decode or self.needs_flax_registration


# Kept for readers of the older name: a decoder's conventions are its family record.
DecoderFamily = ModelFamily


def _encoder(model_type: str, label: str, **kw) -> ModelFamily:
    return ModelFamily(model_type, label, "encoder", **kw)


def _cls_tower(model_type: str, label: str, **kw) -> ModelFamily:
    """A ViT-style tower: a CLS token, then the patch tokens."""
    return ModelFamily(model_type, label, "encoder", prefix_select_strategy="default", prefix_leading_tokens=1, **kw)


def _prefix_lm(model_type: str, label: str) -> ModelFamily:
    """A decoder-only language model without cross-attention: a prefix pairing's LM only."""
    return ModelFamily(model_type, label, "decoder", cross_attention=False, prefix_lm=True)


def _bert_like(model_type: str, label: str, **kw) -> ModelFamily:
    return ModelFamily(model_type, label, "decoder", conventional_start="[CLS]", conventional_end="[SEP]",
                       keyword_decode=True, **kw)


def _roberta_like(model_type: str, label: str) -> ModelFamily:
    return ModelFamily(model_type, label, "decoder", conventional_start="<s>", conventional_end="</s>",
                       keyword_decode=True, position_offset=True)


FAMILIES: dict[str, ModelFamily] = {f.model_type: f for f in (
    # Vision models whose Flax port can serve as the encoder.
    _cls_tower("vit", "ViT"),
    _cls_tower("beit", "BEiT", drop_path_rng=True),
    _cls_tower("dinov2", "DINOv2"),
    _cls_tower("clip_vision_model", "CLIP vision tower", needs_flax_registration=True),
    # A full CLIP checkpoint: vedforge takes its vision tower (model type clip_vision_model).
    _cls_tower("clip", "CLIP (vision tower taken)", vision_tower=True, needs_flax_registration=True,
             layer_attributes=(("vision_config", "num_hidden_layers"), ("text_config", "num_hidden_layers"))),
    # Vision models with no Flax port in transformers 4.x.
    # SigLIP: a two-tower checkpoint gives its vision tower (model type siglip_vision_model),
    # which has no CLS token, so every output token is an image patch.
    _encoder("siglip", "SigLIP (vision tower taken)", built_with="pytorch", vision_tower=True,
             prefix_select_strategy="full",
             layer_attributes=(("vision_config", "num_hidden_layers"), ("text_config", "num_hidden_layers"))),
    _encoder("siglip_vision_model", "SigLIP vision tower", built_with="pytorch", prefix_select_strategy="full"),
    _encoder("swin", "Swin", built_with="pytorch"),
    # DeiT (distilled) puts a distillation token after its CLS token; LLaVA's "default" drops the CLS
    # only, so the distillation token is one more image token.
    _encoder("deit", "DeiT", built_with="pytorch", prefix_select_strategy="default", prefix_leading_tokens=2),
    _encoder("convnext", "ConvNeXt", built_with="pytorch",
             torch_compat_fix="its output is a feature map, not a sequence, and its config has no hidden_size"),
    _encoder("detr", "DETR (its object-query states are the decoder's memory)", built_with="pytorch",
             torch_compat_fix="its output has no hidden_states field"),
    # Text decoders with a Flax causal-LM port that takes cross-attention.
    ModelFamily("gpt2", "GPT-2", "decoder", cross_attention_output=("crossattention", "c_proj"),
                layer_attributes=(("n_layer",),), prefix_lm=True, input_embeddings="wte"),
    ModelFamily("bart", "BART", "decoder", init_std_attr="init_std",
                aliases=((("model", "decoder", "embed_tokens", "embedding"), ("model", "shared", "embedding")),),
                layer_attributes=(("encoder_layers",), ("decoder_layers",)), decoder_layer_attribute="decoder_layers"),
    _bert_like("bert", "BERT"),
    _roberta_like("roberta", "RoBERTa"),
    _roberta_like("xlm-roberta", "XLM-RoBERTa"),
    _roberta_like("roberta-prelayernorm", "RoBERTa-PreLayerNorm"),
    # Decoder-only language models without cross-attention: prefix (LLaVA) pairings only.
    _prefix_lm("llama", "Llama"),
    _prefix_lm("qwen2", "Qwen2"),
    _prefix_lm("mistral", "Mistral"),
    _prefix_lm("gemma", "Gemma"),
)}

# Views of FAMILIES by role and by how the encoder is built.
ENCODER_TYPES: dict[str, str] = {t: f.label for t, f in FAMILIES.items() if f.role == "encoder" and f.built_with == "flax"}
PYTORCH_ONLY_ENCODER_TYPES: dict[str, str] = {
    t: f.label for t, f in FAMILIES.items() if f.role == "encoder" and f.built_with == "pytorch"
}
DECODER_FAMILIES: dict[str, ModelFamily] = {
    t: f for t, f in FAMILIES.items() if f.role == "decoder" and f.cross_attention}
# The towers and language models a prefix (LLaVA) pairing takes.
PREFIX_ENCODERS: dict[str, ModelFamily] = {t: f for t, f in FAMILIES.items() if f.role == "encoder" and f.prefix_select_strategy}
PREFIX_LMS: dict[str, ModelFamily] = {t: f for t, f in FAMILIES.items() if f.role == "decoder" and f.prefix_lm}


def family_of(model_type: str) -> ModelFamily | None:
    """The record of ``model_type``, or None when vedforge does not know it."""
    return FAMILIES.get(model_type)


def layer_attributes(config: Any) -> list[tuple[str, ...]]:
    """Attribute paths of the layer counts of a checkpoint ``config`` (see :attr:`ModelFamily.layer_attributes`)."""
    family = FAMILIES.get(getattr(config, "model_type", ""))
    slots = family.layer_attributes if family else (("num_hidden_layers",),)
    present = []
    for slot in slots:
        node = config
        for name in slot:
            node = getattr(node, name, None)
        if isinstance(node, int):
            present.append(slot)
    return present


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
    hint = (" architecture=prefix backend=pt pairs it LLaVA-style instead (LlavaForConditionalGeneration)."
            if model_type in PREFIX_LMS else "")
    raise UnsupportedModelError(
        f"The decoder {where} has model type '{model_type}', which {reason}. "
        f"Supported decoder model types: {_describe(DECODER_FAMILIES)}.{hint}"
    )
