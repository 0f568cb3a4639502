"""Whether a checkpoint can be the encoder or the decoder of a cross-attention pairing, read from transformers.

``backend=flax`` takes the Flax ports of :mod:`vedforge.families.registry` that work in 4.57. For
``backend=pt`` any model type transformers can build for the role is taken, and its record
(:class:`ModelFamily`) is derived from transformers' own classes; the registry's records remain for
real quirks only. Every refusal states what transformers showed about the model.

The decisions are made on the meta device (:mod:`vedforge.families.meta_probe`): nothing is
allocated, so they cost the same for any checkpoint size, and no weight is read.
"""

from __future__ import annotations

import copy
from typing import Any

from vedforge.core.errors import UnsupportedModelError, first_line
from vedforge.families.registry import (DECODER_FAMILIES, ENCODER_TYPES, FAMILIES, PREFIX_LMS, ModelFamily,
                                        family_of)

# Records derived in this process, by model type, so a card or an assembly that only has the
# model type finds what the plan decided.
_DERIVED: dict[str, ModelFamily] = {}

_ENCODER_NEED = ("An encoder for backend=pt must be a vision model transformers' AutoModel builds whose output "
                 "is a sequence of image tokens (batch, tokens, hidden_size) or a feature map (batch, hidden_size, "
                 "height, width), e.g. vit, dinov3_vit, swinv2, convnext")
_DECODER_NEED = ("A decoder for backend=pt must be a causal language model whose PyTorch class has "
                 "cross-attention: BERT-style layers that add it (bert, roberta, electra, ernie...) or a "
                 "BART-style decoder that always has it (bart, mbart, marian, pegasus, trocr...), e.g. gpt2")


def known_family(model_type: str) -> ModelFamily | None:
    """The registry's record of ``model_type``, or the one derived for it in this process, or None."""
    return family_of(model_type) or _DERIVED.get(model_type)


def init_std(config: Any, family: ModelFamily | None = None) -> float:
    """The standard deviation transformers initialises the decoder's Linear and Embedding weights
    with: the family's named attribute, else ``initializer_range`` or ``init_std`` (BART-style
    configs), else transformers' default 0.02."""
    names = ((family.init_std_attr,) if family else ()) + ("initializer_range", "init_std")
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return 0.02


def label_of(config: Any) -> str:
    """A family's display name read from its config class (Qwen3Config: Qwen3)."""
    return type(config).__name__.removesuffix("Config") or config.model_type


def _is_vision(config: Any) -> bool:
    return any(hasattr(config, name) for name in ("image_size", "num_channels"))


def _torch_needed(role: str, where: str, model_type: str, backend: str) -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UnsupportedModelError(
            f"The {role} {where} has model type '{model_type}', which vedforge can only check with transformers' "
            f"PyTorch classes, and torch is not installed here. Install it (pip install \"vedforge[torch]\") to "
            f"forge it with backend=pt; backend={backend} takes "
            f"{', '.join(sorted(ENCODER_TYPES if role == 'encoder' else DECODER_FAMILIES))}."
        ) from None


# --- encoders -----------------------------------------------------------------------------------

def encoder_family(config: Any, where: str, backend: str = "flax") -> ModelFamily:
    """The record of the encoder checkpoint with ``config`` for ``backend``, from the registry or derived.

    Raises:
        UnsupportedModelError: the model cannot be this backend's encoder, with the reason.
    """
    model_type = config.model_type
    family = family_of(model_type)
    if family is not None and family.role == "encoder":
        if backend == "pt" and family.torch_refusal:
            raise _encoder_refusal(model_type, where, family.torch_refusal)
        if backend == "pt" or family.built_with == "flax":
            return family
        raise _no_flax_encoder(model_type, where)
    if family is None and backend == "pt":
        _torch_needed("encoder", where, model_type, backend)
        family = derive_encoder(config, where)
        _DERIVED[model_type] = family
        return family
    if family is None:
        # backend=flax: a flax run hides torch from transformers (USE_TORCH=0), so nothing is
        # derived here; a backend=pt run then says whether PyTorch takes it.
        raise _no_flax_encoder(model_type, where, known=_is_vision(config))
    raise _encoder_refusal(model_type, where, "is a text model, not a vision model")


def _no_flax_encoder(model_type: str, where: str, known: bool = True) -> UnsupportedModelError:
    # An unrecorded type is not probed here (a Flax run hides torch): it may be no vision model at all.
    unknown = "" if known else " (if it is a vision model at all)"
    return UnsupportedModelError(
        f"The encoder {where} has model type '{model_type}', which has no Flax implementation in transformers 4.x "
        f"that vedforge forges{unknown}, so backend=flax cannot forge it. Forge it for PyTorch with backend=pt (needs the "
        f"torch extra: pip install \"vedforge[torch]\"). Encoder model types backend=flax supports: "
        f"{', '.join(sorted(ENCODER_TYPES))}."
    )


def _encoder_refusal(model_type: str, where: str, reason: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"The encoder {where} has model type '{model_type}', which {reason}. {_ENCODER_NEED}.")


def _vision_tower(config: Any) -> tuple[Any, bool] | None:
    """The vision config to build (the config itself, or a two-tower checkpoint's ``vision_config``)."""
    if _is_vision(config):
        return config, False
    tower = getattr(config, "vision_config", None)
    if tower is not None and _is_vision(tower):
        return tower, True
    return None


def _image_size(config: Any) -> tuple[int, int]:
    size = getattr(config, "image_size", None)
    if isinstance(size, int):
        return size, size
    if isinstance(size, (list, tuple)) and len(size) >= 2 and all(isinstance(s, int) for s in size[-2:]):
        return int(size[-2]), int(size[-1])
    return 224, 224  # what transformers' image processors default to


def derive_encoder(config: Any, where: str) -> ModelFamily:
    """A record for a vision model no registry record describes, derived by building its AutoModel
    class on the meta device and running it on one meta image.

    Raises:
        UnsupportedModelError: the model is not a vision model VisionEncoderDecoderModel can attend to.
    """
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_MAPPING,
                                                        MODEL_MAPPING_NAMES)

    from vedforge.families.meta_probe import build_on_meta, takes, vision_output

    model_type = config.model_type
    found = _vision_tower(config)
    if found is None:
        text = model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or hasattr(config, "vocab_size")
        raise _encoder_refusal(model_type, where, (
            "is a text model, not a vision model" if text else
            "is not a vision model (its config has no image_size or num_channels, nor a vision_config)"))
    tower, two_tower = found
    if model_type not in MODEL_MAPPING_NAMES or type(tower) not in MODEL_MAPPING:
        raise _encoder_refusal(model_type, where, (
            f"has no model class transformers' AutoModel builds for its vision config {type(tower).__name__}"))
    cls = MODEL_MAPPING[type(tower)]
    what = f"its vision tower ({cls.__name__})" if two_tower else cls.__name__
    try:
        model = build_on_meta(cls, tower)
    except Exception as exc:  # a class needing an uninstalled library, or an inconsistent config
        raise _encoder_refusal(model_type, where, (
            f"cannot be built: {what} raised {type(exc).__name__} ({first_line(exc)})")) from None
    if two_tower and not _tower_loads_from(cls, model, config):
        raise _encoder_refusal(model_type, where, (
            f"is a multi-tower checkpoint whose vision tower is saved under names its vision model class "
            f"({cls.__name__}) does not load, so the tower's pretrained weights would be lost; forge from a "
            f"checkpoint of the vision tower alone"))
    try:
        output = vision_output(model, int(getattr(tower, "num_channels", 3) or 3), _image_size(tower))
    except Exception as exc:
        raise _encoder_refusal(model_type, where, (
            f"does not run on pixel_values alone, as VisionEncoderDecoderModel calls its encoder: {what} raised "
            f"{type(exc).__name__} ({first_line(exc)})")) from None
    states = output[0] if isinstance(output, (tuple, list)) else getattr(output, "last_hidden_state", None)
    hidden = getattr(tower, "hidden_size", None)
    sizes = getattr(tower, "hidden_sizes", None)
    width = hidden if isinstance(hidden, int) else sizes[-1] if sizes else None
    shape = tuple(getattr(states, "shape", ()))
    fixes = []
    if len(shape) == 3 and width is not None and shape[-1] == width:
        pass
    elif len(shape) == 4 and width is not None and shape[1] == width:
        fixes.append("its output is a feature map, not a sequence")
    else:
        given = f"{shape}" if shape else "no last_hidden_state tensor"
        expected = f"(batch, tokens, {width}) or (batch, {width}, height, width)" if width else "a width its config names"
        raise _encoder_refusal(model_type, where, (
            f"gives {given} from {what} for one image, where the decoder's cross-attention needs {expected}: "
            f"{'its config names neither hidden_size nor hidden_sizes' if width is None else 'the output is not a sequence of hidden_size-wide tokens'}"))
    if not isinstance(hidden, int):
        fixes.append("its config has no hidden_size")
    if not isinstance(output, (tuple, list)) and not (hasattr(output, "hidden_states") and hasattr(output, "attentions")):
        fixes.append("its output has no hidden_states or attentions field")
    if not takes(model.forward, "output_attentions") and not _takes_var_keywords(model.forward):
        fixes.append("its forward takes no output_attentions")
    return ModelFamily(model_type, label_of(config), "encoder", built_with="pytorch", vision_tower=two_tower,
                       torch_compat_fix="; ".join(fixes) or None, layer_attributes=())


def _tower_loads_from(cls: Any, tower: Any, config: Any) -> bool:
    """Whether ``cls.from_pretrained`` on the full checkpoint finds every tower weight: its names,
    as they are or under the class's base_model_prefix, are among the full model's."""
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    from vedforge.families.meta_probe import build_on_meta

    from vedforge.weights.saved_names import saved_names

    def saved(model: Any) -> set[str]:
        # As save_pretrained names them: transformers 5 renames modules inside some classes.
        renamed = saved_names(model)
        return {renamed.get(name, name) for name, _ in model.named_parameters()}

    try:
        full = saved(build_on_meta(MODEL_MAPPING[type(config)], config))
    except Exception:
        return False
    names = saved(tower)
    prefix = getattr(cls, "base_model_prefix", "")
    return names <= full or bool(prefix) and {f"{prefix}.{name}" for name in names} <= full


def _takes_var_keywords(function: Any) -> bool:
    import inspect

    try:
        return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return False


# --- decoders -----------------------------------------------------------------------------------

def decoder_family(config: Any, where: str, backend: str = "flax") -> ModelFamily:
    """The record of the decoder checkpoint with ``config`` for ``backend``, from the registry or derived.

    Raises:
        UnsupportedModelError: the model cannot be this backend's cross-attention decoder, with the reason.
    """
    model_type = config.model_type
    family = family_of(model_type)
    if family is not None and family.role == "encoder":
        raise _decoder_refusal(model_type, where, "is a vision model, not a text decoder")
    if backend != "pt":
        if family is not None and family.cross_attention and family.built_with == "flax":
            return family
        reason = family.flax_refusal if family is not None else None
        if reason is None:
            try:
                derive_decoder(config, where)  # what backend=pt cannot take either is refused for that reason
            except ImportError:
                pass
            reason = "has no Flax causal-LM port with cross-attention that vedforge forges"
        raise UnsupportedModelError(
            f"The decoder {where} has model type '{model_type}', which {reason}, so backend=flax cannot forge it. "
            f"Forge it for PyTorch with backend=pt (needs the torch extra: pip install \"vedforge[torch]\"). "
            f"Decoder model types backend=flax supports: {', '.join(sorted(DECODER_FAMILIES))}."
        )
    if family is not None and family.torch_refusal:
        raise _decoder_refusal(model_type, where, family.torch_refusal)
    if family is not None and family.cross_attention:
        return family
    _torch_needed("decoder", where, model_type, backend)
    derived = derive_decoder(config, where)
    _DERIVED[model_type] = derived
    return derived


def _decoder_refusal(model_type: str, where: str, reason: str, hint: str = "") -> UnsupportedModelError:
    return UnsupportedModelError(
        f"The decoder {where} has model type '{model_type}', which {reason}. {_DECODER_NEED}.{hint}")


def _prefix_hint(model_type: str) -> str:
    if model_type in PREFIX_LMS:
        return " architecture=prefix backend=pt pairs it LLaVA-style instead (LlavaForConditionalGeneration)."
    return (" A decoder-only language model is paired LLaVA-style by architecture=prefix backend=pt instead, "
            "for the language models that architecture takes.")


def derive_decoder(config: Any, where: str) -> ModelFamily:
    """A record for a causal LM no registry record describes, once transformers shows it has cross-attention.

    Evidence is read off the class, not a list: the causal-LM class must name
    ``encoder_hidden_states`` in its forward, and one of its decoder layers, built with
    ``is_decoder=True, add_cross_attention=True`` and called alone on the meta device, must feed
    those states into projections. Tracing a layer rather than the whole model matters: a
    whole-model meta forward stops in most attention-mask helpers (a data-dependent ``.item()``),
    while a layer takes the states as they are. Comparing parameter names with and without
    ``add_cross_attention`` would miss BART-style decoders, which have cross-attention either way,
    so it is only the fallback for a layer that cannot run alone.

    Raises:
        UnsupportedModelError: not a causal LM, or one without cross-attention, with the reason.
    """
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING,
                                                        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES)

    model_type = config.model_type
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        if _vision_tower(config) is not None and not hasattr(config, "vocab_size"):
            reason = "is a vision model, not a text decoder"
        elif model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
            reason = ("is a sequence-to-sequence model with no causal-LM class (transformers' AutoModelForCausalLM "
                      "cannot build it), so it cannot be VisionEncoderDecoderModel's decoder")
        else:
            reason = ("has no causal-LM class (transformers' AutoModelForCausalLM cannot build it), so it cannot "
                      "generate text")
        raise _decoder_refusal(model_type, where, reason)
    cls = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    no_cross = f"is a decoder-only language model without cross-attention layers ({cls.__name__} "
    from vedforge.families.meta_probe import takes

    if not takes(cls.forward, "encoder_hidden_states"):
        raise _decoder_refusal(model_type, where, no_cross + "takes no encoder_hidden_states), so it cannot "
                               "attend to image features", _prefix_hint(model_type))
    problem = _cross_attention_problem(cls, config)
    if problem is not None:
        raise _decoder_refusal(model_type, where, f"{problem}, so it cannot attend to image features")
    return ModelFamily(model_type, label_of(config), "decoder", built_with="pytorch",
                       init_std_attr=next((n for n in ("initializer_range", "init_std") if hasattr(config, n)),
                                          "initializer_range"),
                       decoder_layer_attribute="decoder_layers" if isinstance(getattr(config, "decoder_layers", None), int)
                       else "num_hidden_layers", layer_attributes=())


def _cross_config(config: Any) -> Any:
    probe = copy.deepcopy(config)
    probe.is_decoder = True
    probe.add_cross_attention = True
    return probe


def _cross_attention_problem(cls: Any, config: Any) -> str | None:
    """None when ``cls`` reads encoder states in its layers; else what transformers showed instead."""
    from vedforge.families.meta_probe import build_on_meta, one_layer, projections_reading, takes

    probe = _cross_config(config)
    try:
        model = build_on_meta(cls, one_layer(probe))
    except Exception:
        try:  # a config whose layer count other attributes must match: the real depth
            model = build_on_meta(cls, probe)
        except Exception as exc:
            return (f"cannot be built with cross-attention: {cls.__name__} raised {type(exc).__name__} "
                    f"({first_line(exc)})")
    # The forge assembles parameters only (torch_view reads no buffer), so a decoder that saves
    # state in buffers would load with those missing.
    parameters = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    buffers = [name for name in model.state_dict() if name not in parameters]
    if buffers:
        return (f"is a model whose PyTorch class ({cls.__name__}) saves buffers beside its parameters "
                f"({', '.join(buffers[:2])}...), which the cross-attention forge does not carry over")
    layers = [(name, module) for name, module in model.named_modules()
              if name.rpartition(".")[2].isdigit() and takes(module.forward, "encoder_hidden_states")]
    if not layers:
        return f"is a language model whose layers take no encoder_hidden_states ({cls.__name__})"
    name, layer = layers[0]
    width = getattr(probe, "cross_attention_hidden_size", None) or probe.hidden_size
    try:
        reading = projections_reading(layer, int(width))
    except Exception as exc:
        if _adds_parameters(cls, probe):
            return None  # BERT-style: add_cross_attention adds the cross-attention's weights
        return (f"is a model whose layers vedforge cannot confirm read encoder_hidden_states: {cls.__name__}'s "
                f"{name} raised {type(exc).__name__} on the meta device ({first_line(exc)})")
    if not reading:
        return f"is a language model whose layers receive encoder_hidden_states but no projection reads them ({name})"
    return None


def _adds_parameters(cls: Any, probe: Any) -> bool:
    from vedforge.families.meta_probe import build_on_meta, one_layer

    plain = copy.deepcopy(probe)
    plain.add_cross_attention = False
    try:
        names = [{n for n, _ in build_on_meta(cls, one_layer(c)).named_parameters()} for c in (probe, plain)]
    except Exception:
        return False
    return bool(names[0] - names[1])
