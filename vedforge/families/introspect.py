"""What a model can be in a LLaVA-style pairing, read from transformers' own classes.

No list of families decides whether a vision tower or a language model pairs: transformers'
auto registries say which classes exist for a model type, and the classes built on the meta
device (nothing allocated) say the rest — the names of the input and output embeddings, and how
many tokens a tower emits before its patches (a trial forward of an empty image). A model type
released after this code was written pairs as soon as transformers can build it.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any, Optional

from vedforge.core.errors import UnsupportedModelError


def _names(mapping: str) -> Any:
    import transformers.models.auto.modeling_auto as auto

    return getattr(auto, mapping)


def is_vision_config(config: Any) -> bool:
    """Whether ``config`` describes an image model (it takes images of some size and channel count)."""
    return hasattr(config, "num_channels") and (hasattr(config, "image_size") or hasattr(config, "patch_size"))


def sub_config(config: Any, role: str) -> tuple[Any, Optional[str]]:
    """The part of a composite checkpoint that plays ``role``, and the config attribute it came from.

    A CLIP, SigLIP or LLaVA checkpoint holds its vision tower in ``vision_config`` (and a LLaVA
    checkpoint its LM in ``text_config``); a ``VisionEncoderDecoderModel`` checkpoint (TrOCR,
    Donut) holds ``encoder`` and ``decoder``. A checkpoint of one model is its own part (None).
    """
    attributes = ("vision_config", "encoder") if role == "encoder" else ("text_config", "decoder")
    for attribute in attributes:
        inner = getattr(config, attribute, None)
        if inner is not None and hasattr(inner, "model_type") and inner is not config:
            if role == "encoder" and not is_vision_config(inner):
                continue
            return inner, attribute
    return config, None


def composite_part(config: Any, role: str) -> tuple[Any, Optional[str]]:
    """The part a checkpoint of a whole multimodal model holds for ``role`` (a
    ``VisionEncoderDecoderModel`` such as TrOCR or Donut, or a LLaVA-like image-text model), and the
    config attribute it came from; any other checkpoint is its own part (None). Two-tower
    contrastive checkpoints (CLIP, SigLIP) are not composites here: their towers are records."""
    model_type = getattr(config, "model_type", "")
    try:
        from transformers.models.auto import modeling_auto

        holders = set(getattr(modeling_auto, "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES", {})) | set(
            getattr(modeling_auto, "MODEL_FOR_VISION_2_SEQ_MAPPING_NAMES", {}))
    except ImportError:  # a Flax run hides torch, and with it the PyTorch registries
        holders = set()
    if model_type == "vision-encoder-decoder" or model_type in holders:
        part, attribute = sub_config(config, role)
        if attribute is not None:
            return part, attribute
    return config, None


def _meta(build: Any, config: Any) -> Any:
    import torch

    # A copy: transformers 5 writes the attention implementation into the config it builds from.
    with torch.device("meta"):
        return build(copy.deepcopy(config))


def module_name(model: Any, module: Any) -> Optional[str]:
    """The dotted name of ``module`` inside ``model``."""
    return next((name for name, candidate in model.named_modules() if candidate is module), None)


@dataclass(frozen=True)
class LanguageModel:
    """A decoder-only LM as ``LlavaForConditionalGeneration`` holds it, read off its classes."""

    model_type: str
    base_prefix: str  # the causal LM's base-model attribute (``model`` for Llama, ``transformer`` for GPT-2)
    input_embeddings: str  # the base model's input embedding module (``embed_tokens``, ``wte``, ``embed_in``)
    output_head: str  # the causal LM's output projection (``lm_head``, GPT-NeoX's ``embed_out``)
    head_bias: bool  # the causal LM's head has a bias, which LLaVA's head (bias-free) cannot hold
    # What the causal LM does to its logits beyond a Linear head over the last hidden state (a
    # scale, a soft cap, a prediction transform), which LLaVA's head does not; None when nothing.
    logits_differ: Optional[str] = None


def config_data(config: Any) -> dict[str, Any]:
    """``config`` as the JSON data its ``config.json`` would hold (every field, not only changes)."""
    import json

    def plain(value: Any) -> str:
        # A torch dtype left in a nested config (DPT's backbone) is written as transformers names it.
        return str(value).removeprefix("torch.")

    return json.loads(json.dumps(config.to_dict(), default=plain))


def config_from_data(data: dict[str, Any]) -> Any:
    """The config :func:`config_data` describes, rebuilt by its model type's config class."""
    from transformers import CONFIG_MAPPING

    return CONFIG_MAPPING[data["model_type"]].from_dict(data)


def language_model(config: Any, where: str) -> LanguageModel:
    """How a decoder-only language model of ``config`` sits in a LLaVA model, or why it cannot.

    Read off transformers' PyTorch classes the first time a configuration is planned (in the torch
    worker where this process hides torch, :mod:`vedforge.core.torch_worker`), from vedforge's cache
    of derivations after that (:mod:`vedforge.core.derived_cache`).

    Raises:
        UnsupportedModelError: no causal-LM class, not decoder-only, or no base model for LLaVA to build.
    """
    import dataclasses

    from vedforge.core.torch_worker import derived_from_classes

    return derived_from_classes(
        "prefix-language-model", {"config": config_data(config)}, lambda: derive_language_model(config, where),
        "vedforge.families.introspect:language_model_data", encode=dataclasses.asdict,
        decode=lambda fields: LanguageModel(**fields), where=where)


def language_model_data(config: dict[str, Any], where: str) -> dict[str, Any]:
    """:func:`derive_language_model` of the config ``config`` holds, as JSON data."""
    import dataclasses

    return dataclasses.asdict(derive_language_model(config_from_data(config), where))


def derive_language_model(config: Any, where: str) -> LanguageModel:
    """How a decoder-only language model of ``config`` sits in a LLaVA model, read off its classes.

    Raises:
        UnsupportedModelError: no causal-LM class, not decoder-only, or no base model for LLaVA to build.
    """
    from transformers import AutoModel, AutoModelForCausalLM

    model_type = config.model_type
    problem = None
    if is_vision_config(config):
        problem = "is a vision model, not a language model"
    elif model_type not in _names("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"):
        problem = ("has no causal language-model class (AutoModelForCausalLM cannot build it), so it cannot generate "
                   "text after the image tokens")
    elif model_type in _names("MODEL_FOR_MASKED_LM_MAPPING_NAMES") or model_type in _names(
            "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"):
        # A masked LM (BERT) attends both ways; a seq2seq model's decoder expects its encoder. Both
        # have a causal-LM class, but only as a decoder that cross-attends: the other architecture.
        problem = ("is not a decoder-only language model (transformers also registers it as a masked or "
                   "sequence-to-sequence model): pair it with architecture=cross_attention, which gives its "
                   "decoder cross-attention to the image")
    elif model_type not in _names("MODEL_MAPPING_NAMES"):
        problem = ("has no base-model class in AutoModel, and LlavaForConditionalGeneration builds its language "
                   "model with AutoModel")
    if problem:
        raise UnsupportedModelError(f"architecture=prefix: the decoder {where} has model type '{model_type}', which "
                                    f"{problem}. The decoder must be a decoder-only language model transformers' "
                                    "AutoModelForCausalLM builds (Llama, Qwen3, Gemma3, SmolLM3, GPT-2, ...).")
    from transformers import MODEL_MAPPING

    try:
        causal = _meta(AutoModelForCausalLM.from_config, config)
    except (NotImplementedError, RuntimeError) as exc:
        # vedforge reads what it needs off the class built on the meta device; a class whose
        # constructor computes on real values (Apertus's xIELU) cannot be read that way.
        raise UnsupportedModelError(
            f"architecture=prefix: the decoder {where} ('{model_type}') cannot be built on the meta device "
            f"({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}), where vedforge reads the names "
            "and sizes of its tensors without allocating them.") from None
    # The base model is the child AutoModel would build; its attribute is usually base_model_prefix,
    # but not always (Gemma3ForCausalLM keeps a Gemma3TextModel at `model` under prefix "language_model").
    base_class = MODEL_MAPPING.get(type(config), None) if type(config) in MODEL_MAPPING else None
    base_prefix = next((name for name, child in causal.named_children()
                        if base_class is not None and isinstance(child, base_class)), causal.base_model_prefix)
    base = getattr(causal, base_prefix, None)
    if base_class is not None and not isinstance(base, base_class):
        # LLaVA builds AutoModel's class for the text config; for Whisper that is the whole
        # encoder-decoder, not the decoder its causal LM holds.
        raise UnsupportedModelError(
            f"architecture=prefix: the decoder {where} ('{model_type}'): LlavaForConditionalGeneration would build "
            f"{base_class.__name__} (AutoModel's class for it) as its language model, but the causal LM "
            f"{type(causal).__name__} holds {type(base).__name__}, so its weights have no place there.")
    if base is None:
        raise UnsupportedModelError(
            f"architecture=prefix: the decoder {where} ('{model_type}') has no base model under its causal LM's "
            f"base_model_prefix '{causal.base_model_prefix}', so its tensors cannot be named inside "
            "LlavaForConditionalGeneration.")
    head = causal.get_output_embeddings()
    embeddings = base.get_input_embeddings()
    problem = _llava_cannot_run(causal, base, head, embeddings, config)
    if problem:
        raise UnsupportedModelError(f"architecture=prefix: the decoder {where} ('{model_type}') {problem}.")
    from vedforge.weights.saved_names import saved_names

    # Names as files hold them: transformers 5 renames some modules (GPT-NeoX's embed_out is its
    # lm_head) and reverts that on save.
    renamed = saved_names(causal)
    width = getattr(config, "hidden_size", None)
    if head is None or tuple(head.weight.shape[1:]) != (width,):
        # LLaVA's own head is Linear(text_config.hidden_size, vocab_size): an LM that projects its
        # states to another width first (OPT's word_embed_proj_dim) has no head LLaVA can hold.
        found = "no output head" if head is None else f"an output head reading {tuple(head.weight.shape[1:])} features"
        raise UnsupportedModelError(
            f"architecture=prefix: the decoder {where} ('{model_type}') has {found}, but "
            f"LlavaForConditionalGeneration's head reads the language model's hidden_size={width} features, "
            "so its logits could not be kept.")
    embeddings_name = f"{base_prefix}.{module_name(base, embeddings)}.weight"
    head_name = f"{module_name(causal, head)}.weight"
    saved_embeddings = renamed.get(embeddings_name, embeddings_name).removesuffix(".weight")
    saved_base = saved_embeddings.split(".", 1)[0] if "." in saved_embeddings else base_prefix
    return LanguageModel(
        model_type=model_type, base_prefix=saved_base,
        input_embeddings=saved_embeddings.removeprefix(saved_base + "."),
        output_head=renamed.get(head_name, head_name).removesuffix(".weight"),
        head_bias=getattr(head, "bias", None) is not None,
        logits_differ=_logits_beyond_head(causal, base_prefix, head, config))


def _llava_lm_keywords() -> set[str]:
    """The keyword arguments LlavaModel.forward passes its language model, read from its source
    (4.57 passes cache_position and past_key_values, 5.x passes cache)."""
    import re

    from transformers.models.llava import modeling_llava

    source = inspect.getsource(modeling_llava.LlavaModel.forward)
    call = re.search(r"self\.language_model\((.*?)\)\n", source, re.S)
    return set(re.findall(r"(\w+)\s*=", call.group(1))) if call else {"inputs_embeds", "attention_mask"}


def _llava_cannot_run(causal: Any, base: Any, head: Any, embeddings: Any, config: Any) -> Optional[str]:
    """Why LlavaForConditionalGeneration could not run this LM as transformers runs it alone, or None."""
    import sys

    from transformers.cache_utils import Cache

    vocab = getattr(config, "vocab_size", None)
    for what, module in (("input embeddings", embeddings), ("output head", head)):
        rows = getattr(getattr(module, "weight", None), "shape", (None,))[0]
        if module is not None and rows != vocab:
            return (f"has {rows} rows in its {what} for vocab_size={vocab}; LlavaForConditionalGeneration sizes both "
                    "by vocab_size")
    parameters = inspect.signature(base.forward).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        missing = sorted(_llava_lm_keywords() - set(parameters))
        if missing:
            return (f"has a base model ({type(base).__name__}) whose forward takes no {', '.join(missing)}, which "
                    "LlavaForConditionalGeneration passes its language model")
    if not type(causal)._supports_default_dynamic_cache():
        return ("keeps a recurrent or custom cache, not the DynamicCache LlavaForConditionalGeneration's generate "
                "makes for its language model")
    module = sys.modules[type(causal).__module__]
    own_caches = [obj.__name__ for obj in vars(module).values()
                  if isinstance(obj, type) and issubclass(obj, Cache) and obj.__module__ == module.__name__]
    if own_caches:
        return (f"generates with a cache of its own ({', '.join(sorted(own_caches))}: hybrid or recurrent state), "
                "which LlavaForConditionalGeneration's generate does not make")
    return None


def _logits_beyond_head(causal: Any, base_prefix: str, head: Any, config: Any) -> Optional[str]:
    """What the causal LM computes between its base model's last hidden state and its logits,
    beyond the plain Linear head LLaVA has; None when nothing.

    Traced on the meta device with the base model replaced by a stand-in that returns a hidden
    state (the base model's own attention-mask code reads values, which the meta device has not):
    the head must read that hidden state (or a slice of it) and the logits must be the head's output.
    """
    import torch
    from transformers.modeling_outputs import BaseModelOutputWithPast

    width = int(getattr(config, "hidden_size", 0) or head.weight.shape[-1])
    hidden = torch.empty((1, 3, width), device="meta")

    class _Hidden(torch.nn.Module):
        def forward(self, *args: Any, **kwargs: Any) -> Any:
            return BaseModelOutputWithPast(last_hidden_state=hidden)

    seen: dict[str, Any] = {}
    base = getattr(causal, base_prefix)
    hook = head.register_forward_hook(lambda m, a, out: seen.update(head_in=a[0] if a else None, head_out=out))
    try:
        setattr(causal, base_prefix, _Hidden())
        with torch.no_grad():
            logits = causal(input_ids=torch.zeros((1, 3), dtype=torch.long, device="meta"), use_cache=False).logits
    except Exception:  # noqa: BLE001 (a forward this stand-in cannot drive is not judged here)
        return None
    finally:
        setattr(causal, base_prefix, base)
        hook.remove()
    head_in = seen.get("head_in")
    if head_in is not None and head_in is not hidden and getattr(head_in, "_base", None) is not hidden:
        return "its head reads a transformed hidden state (a prediction transform between the model and the head)"
    if logits is not seen.get("head_out"):
        return "it transforms the head's output (a logit scale or soft cap)"
    return None


@dataclass(frozen=True)
class TowerTokens:
    """The tokens a vision tower emits at the layer a LLaVA projector reads."""

    leading: int  # tokens before the patch tokens (CLS, distillation, register tokens)
    patches: int
    width: int  # the hidden size of those tokens

    @property
    def strategy(self) -> str:
        """LLaVA's vision_feature_select_strategy: drop a leading CLS token, or keep every token."""
        return "default" if self.leading else "full"


def tower_refusal(config: Any, where: str, reason: str) -> UnsupportedModelError:
    """Why LLaVA cannot take the tower of ``config``, in one paragraph with what it can take."""
    return UnsupportedModelError(
        f"architecture=prefix: the encoder {where} has model type '{config.model_type}', which {reason}. "
        "The encoder must be a vision model AutoModel builds whose hidden states are one token per image patch "
        "(after any CLS or register tokens), as ViT, SigLIP, CLIP's or DINOv2's towers are.")


def check_vision_tower(config: Any, where: str) -> None:
    """Refuse a text model as the tower, from its config alone (before its processor is looked for)."""
    if not is_vision_config(config):
        raise tower_refusal(config, where, "is a text model, not a vision tower")


def tower_tokens(config: Any, height: int, width: int, layer: int, where: str) -> TowerTokens:
    """Count what the tower of ``config`` emits for one ``height`` x ``width`` image at hidden state
    ``layer`` (:func:`derive_tower_tokens`), derived once per configuration as :func:`language_model` is.

    Raises:
        UnsupportedModelError: LLaVA cannot take this tower, with the reason.
    """
    import dataclasses

    from vedforge.core.torch_worker import derived_from_classes

    check_vision_tower(config, where)
    return derived_from_classes(
        "prefix-tower-tokens", {"config": config_data(config), "height": height, "width": width, "layer": layer},
        lambda: derive_tower_tokens(config, height, width, layer, where), "vedforge.families.introspect:tower_tokens_data",
        encode=dataclasses.asdict, decode=lambda fields: TowerTokens(**fields), where=where)


def tower_tokens_data(config: dict[str, Any], height: int, width: int, layer: int, where: str) -> dict[str, Any]:
    """:func:`derive_tower_tokens` of the config ``config`` holds, as JSON data."""
    import dataclasses

    return dataclasses.asdict(derive_tower_tokens(config_from_data(config), height, width, layer, where))


def derive_tower_tokens(config: Any, height: int, width: int, layer: int, where: str) -> TowerTokens:
    """Count what the tower of ``config`` emits for one ``height`` x ``width`` image at hidden state ``layer``.

    The tower is run on the meta device (shapes only); a tower whose forward the meta device
    still cannot run is run once on uninitialised host memory.

    Raises:
        UnsupportedModelError: LLaVA cannot take this tower, with the reason.
    """
    from transformers import AutoModel

    model_type = config.model_type

    def refuse(reason: str) -> UnsupportedModelError:
        return tower_refusal(config, where, reason)

    check_vision_tower(config, where)
    if model_type not in _names("MODEL_MAPPING_NAMES"):
        raise refuse("has no class in AutoModel, which LlavaForConditionalGeneration builds its tower with")
    model = _meta(AutoModel.from_config, config)
    required = [name for name, p in inspect.signature(model.forward).parameters.items()
                if name not in ("self", "pixel_values") and p.default is inspect.Parameter.empty
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if required:
        raise refuse(f"needs {', '.join(required)} besides the pixels, which LlavaForConditionalGeneration does not pass")
    first = next((name for name in inspect.signature(model.forward).parameters if name != "self"), None)
    if first != "pixel_values":
        # LLaVA calls its tower with the pixels as the first positional argument.
        raise refuse(f"takes {first} first, not pixel_values (LlavaForConditionalGeneration passes the pixels "
                     "positionally): a multimodal or document model, not a vision tower")
    patch = getattr(config, "patch_size", None)
    if not isinstance(patch, int):
        raise refuse(f"has no single integer patch_size (it has {patch!r}): a hierarchical or convolutional tower")
    try:
        hidden = _hidden_states(model, config, height, width)
    except Exception as exc:  # noqa: BLE001 (any failure of a trial forward is the reason given)
        first_line = (str(exc).splitlines() or [""])[0][:200]
        raise refuse(f"fails on one {height}x{width} image ({type(exc).__name__}: {first_line}): a video or "
                     "multi-input model, or one whose forward needs more than an image") from None
    if hidden is None:
        raise refuse("returns no per-layer hidden states")
    depth = len(hidden)
    if not -depth <= layer < depth:
        raise refuse(f"has {depth} hidden states, so vision_feature_layer={layer} does not exist")
    shape = tuple(hidden[layer].shape)
    patches = (height // patch) * (width // patch)
    hidden_size = getattr(config, "hidden_size", None)
    if len(shape) != 3 or shape[1] < patches or shape[2] != hidden_size:
        raise refuse(f"emits hidden states of shape {shape} at layer {layer} for a {height}x{width} image, not "
                     f"{patches} patch tokens of width hidden_size={hidden_size} (after any leading tokens)")
    return TowerTokens(leading=shape[1] - patches, patches=patches, width=shape[2])


def _hidden_states(model: Any, config: Any, height: int, width: int) -> Optional[tuple]:
    import torch

    channels = int(getattr(config, "num_channels", 3))

    def run(device: str) -> Optional[tuple]:
        pixels = torch.empty((1, channels, height, width), device=device)
        with torch.no_grad():
            return getattr(model(pixels, output_hidden_states=True), "hidden_states", None)

    from vedforge.families.meta_probe import meta_autocast

    try:
        with meta_autocast():  # rotary towers (DINOv3) open an autocast block on their input's device
            return run("meta")
    except (RuntimeError, NotImplementedError, TypeError):
        # Some towers compute position tables with host-only ops; their shapes need one real pass.
        model = model.to_empty(device="cpu")
        return run("cpu")
