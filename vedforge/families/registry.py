"""What vedforge knows about model types that transformers' classes do not say.

``backend=flax`` takes the Flax ports recorded here. ``backend=pt`` takes any model type
transformers can build for the role, with a record derived from transformers
(:mod:`vedforge.families.roles`); the hand-written records below are kept for real quirks, each
saying what breaks without it, and for the towers and language models of prefix pairings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any



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
    # Why backend=flax refuses this type although transformers 4.x has a Flax port of it, or None.
    flax_refusal: str | None = None
    # Why backend=pt refuses this type although its PyTorch class has cross-attention, or None.
    torch_refusal: str | None = None

    @property
    def needs_flax_compat(self) -> bool:
        """True when the forged Flax model needs vedforge.compat to load or generate."""
        return self.keyword_decode or self.needs_flax_registration


# Kept for readers of the older name: a decoder's conventions are its family record.
DecoderFamily = ModelFamily


def _encoder(model_type: str, label: str, **kw) -> ModelFamily:
    return ModelFamily(model_type, label, "encoder", **kw)


def _fails_in_ved(model_type: str, label: str, reason: str) -> ModelFamily:
    """A vision model whose PyTorch class fails inside VisionEncoderDecoderModel: refused, with ``reason``."""
    return ModelFamily(model_type, label, "encoder", built_with="pytorch", torch_refusal=reason)


def _cls_tower(model_type: str, label: str, **kw) -> ModelFamily:
    """A ViT-style tower: a CLS token, then the patch tokens."""
    return ModelFamily(model_type, label, "encoder", prefix_select_strategy="default", prefix_leading_tokens=1, **kw)


def _prefix_lm(model_type: str, label: str) -> ModelFamily:
    """A decoder-only language model without cross-attention: a prefix pairing's LM only."""
    return ModelFamily(model_type, label, "decoder", cross_attention=False, prefix_lm=True)


def _bert_like(model_type: str, label: str, **kw) -> ModelFamily:
    kw.setdefault("keyword_decode", True)
    return ModelFamily(model_type, label, "decoder", conventional_start="[CLS]", conventional_end="[SEP]", **kw)


_FLAX_CROSS_ATTENTION_BROKEN = "has a Flax port that fails inside its cross-attention in transformers 4.x"


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
    # DeiT (distilled) puts a distillation token after its CLS token; LLaVA's "default" drops the CLS
    # only, so the distillation token is one more image token.
    _encoder("deit", "DeiT", built_with="pytorch", prefix_select_strategy="default", prefix_leading_tokens=2),
    # Without these two, stock VisionEncoderDecoderModel cannot build or run them
    # (vedforge.torch_compat); a derived record would say the same, these keep the wording.
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
    # BERT and the RoBERTa family: transformers 4.x's Flax wrapper passes the image features
    # positionally into the wrong parameter (keyword_decode), and Flax RoBERTa numbers positions
    # from 0 where PyTorch starts after the pad id (position_offset).
    _bert_like("bert", "BERT"),
    _roberta_like("roberta", "RoBERTa"),
    _roberta_like("xlm-roberta", "XLM-RoBERTa"),
    _roberta_like("roberta-prelayernorm", "RoBERTa-PreLayerNorm"),
    # Flax ports whose cross-attention fails in transformers 4.x: without these records
    # backend=flax would trace them and fail inside the forge. backend=pt assembles them from
    # the PyTorch view (built_with="pytorch").
    _bert_like("electra", "ELECTRA", built_with="pytorch", keyword_decode=False,
               flax_refusal=_FLAX_CROSS_ATTENTION_BROKEN),
    # BigBird's PyTorch causal LM also fails: generate() with a cross-attention cache raises in
    # its block-sparse attention bookkeeping, so a forged model could be trained but never caption.
    _bert_like("big_bird", "BigBird", built_with="pytorch", keyword_decode=False,
               flax_refusal=_FLAX_CROSS_ATTENTION_BROKEN,
               torch_refusal=("has a PyTorch causal-LM class (BigBirdForCausalLM) whose generate() fails with a "
                              "cross-attention cache in this transformers, so a forged model could not caption")),
    # X-MOD routes every layer through a language adapter chosen by lang_ids or a default language,
    # which VisionEncoderDecoderModel never passes: without this record it forges, then raises in
    # its first forward.
    ModelFamily("xmod", "X-MOD", "decoder", built_with="pytorch",
                torch_refusal=("needs a language id for its adapters (lang_ids, or XmodPreTrainedModel."
                               "set_default_language) that VisionEncoderDecoderModel never passes")),
    # Vision models AutoModel builds whose class fails inside VisionEncoderDecoderModel in
    # transformers 4.57 (each found by the registry matrix; without the record the forge succeeds
    # and the model then raises in its first forward or training step).
    _fails_in_ved("aimv2_vision_model", "AIMv2 vision tower",
                  "has a PyTorch class whose output is not contiguous, and a view() of it fails in "
                  "VisionEncoderDecoderModel's training step in this transformers"),
    _fails_in_ved("internvl_vision", "InternVL vision tower",
                  "has a forward that its own input checks (check_model_inputs) reject in this transformers, "
                  "because it declares no **kwargs"),
    _fails_in_ved("layoutlmv3", "LayoutLMv3",
                  "is a document model whose forward expects text tokens and layout boxes with the image; with "
                  "pixels alone it fails"),
    _fails_in_ved("dpt", "DPT", "raises KeyError 'output_attentions' when called as VisionEncoderDecoderModel calls it"),
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
# The decoders backend=flax forges (Flax ports whose cross-attention works in 4.57).
DECODER_FAMILIES: dict[str, ModelFamily] = {
    t: f for t, f in FAMILIES.items() if f.role == "decoder" and f.cross_attention and f.built_with == "flax"}
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
