"""The plan of a prefix forge (``architecture=prefix``): a LLaVA-style model from a vision tower and a
decoder-only language model, decided without reading a weight.

Everything the cross-attention plan decides for a ``VisionEncoderDecoderModel`` is decided here
for ``LlavaForConditionalGeneration``: the tower and the LM are located and checked (a tower LLaVA
cannot take, or a model without a causal LM head, is refused with the reason), the tokens are
added, the ``LlavaConfig``, generation config and ``LlavaProcessor`` (with its chat template) are
made, and the tensors to write are named and sized from the model built on the meta device.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping, Optional

from vedforge.core.errors import UnsupportedModelError, VedforgeError
from vedforge.families.introspect import LanguageModel
from vedforge.families.registry import ModelFamily, family_of
from vedforge.architectures.parts import FORGE, LayoutPlan, PartPlan
from vedforge.architectures.prefix.tokens import PrefixTokens
from vedforge.recipe.typed import ROLES, Recipe
from vedforge.sources.resolve import ResolvedSource

log = logging.getLogger(__name__)
ARCHITECTURE = "prefix"
# LLaVA's activation between its two Linears, per projector option.
PROJECTOR_ACTIVATION = {"mlp2x_gelu": "gelu", "linear": "linear"}


@dataclass(frozen=True)
class PrefixPlan:
    """What a prefix forge of one recipe will do (``outcome`` "forge"; a skip is a
    :class:`vedforge.pipeline.plan.SkipPlan`)."""

    recipe: Recipe
    output_dir: Path
    encoder: PartPlan
    decoder: PartPlan
    config: Any  # LlavaConfig
    generation: Any
    processor: Any  # LlavaProcessor (its tokenizer has the added tokens)
    tokens: PrefixTokens
    select_strategy: str
    leading_tokens: int
    image_seq_length: int
    chat_template_source: str
    # The saved name of the input embeddings when the head is written as their untied copy, else None.
    head_from: Optional[str]
    lm: LanguageModel  # how the LM sits in LlavaForConditionalGeneration, read off its classes
    specs: Mapping[str, tuple[int, ...]]  # every tensor written, by saved name
    layouts: tuple[LayoutPlan, ...]
    outcome: str = FORGE
    previous: Optional[dict] = None
    architecture: str = ARCHITECTURE

    def part(self, role: str) -> PartPlan:
        return self.encoder if role == "encoder" else self.decoder

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def dtype(self) -> Any:
        """The dtype of the new projector tensors: the LM's embedding table's."""
        import numpy as np

        table = f"{self.lm.input_embeddings}.weight"
        embed = next((spec for name, spec in self.lm_shapes.items() if name.endswith(table)), None)
        return np.dtype(embed.dtype) if embed is not None else np.dtype("float32")

    @cached_property
    def tower_shapes(self) -> Mapping[str, Any]:
        return _shapes(self.encoder)

    @cached_property
    def lm_shapes(self) -> Mapping[str, Any]:
        return _shapes(self.decoder)

    def assemble(self, tower_state: Mapping[str, Any], lm_state: Mapping[str, Any], *, dry_run: bool = False):
        """The tensors to write and their report (:func:`vedforge.architectures.prefix.tensors.assemble_prefix`)."""
        from vedforge.architectures.prefix.stages import assembly_settings
        from vedforge.architectures.prefix.tensors import assemble_prefix

        return assemble_prefix(self.specs, tower_state, lm_state, **assembly_settings(self), dry_run=dry_run)

    @cached_property
    def report(self) -> Any:
        """Where each tensor will come from, from the checkpoints' shapes (their headers only)."""
        return self.assemble(self.tower_shapes, self.lm_shapes, dry_run=True)[1]

    @property
    def parameters(self) -> dict[str, int]:
        return self.report.parameter_counts()

    @property
    def write_bytes(self) -> int:
        return sum(layout.bytes for layout in self.layouts)

    @property
    def download_bytes(self) -> int:
        return self.encoder.download_bytes + self.decoder.download_bytes


def _shapes(part: PartPlan) -> Mapping[str, Any]:
    """A part's tensors by name with shape and dtype: from the safetensors headers of its files
    (nothing else is read), or for random weights from its class built on the meta device."""
    from vedforge.weights.bfloat16 import dtype_named
    from vedforge.weights.lazy_tensor import TensorSpec

    if part.recipe.random_weights or not all(f.on_disk for f in part.files):
        # Random weights are drawn in float32; hub weights not yet downloaded are sized from the config.
        stored = "float32" if part.recipe.random_weights else _config_dtype(part.config.model)
        return {name: TensorSpec(shape, dtype_named(stored)) for name, shape in _class_shapes(part).items()}
    from vedforge.architectures.prefix.weights import read_part_tensors

    return read_part_tensors(part.source.path, header_only=True, role=part.source.role)


def _config_dtype(config: Any) -> str:
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32"
    name = str(dtype).removeprefix("torch.")
    return name if name in ("float32", "float16", "bfloat16") else "float32"


def _class_shapes(part: PartPlan) -> dict[str, tuple[int, ...]]:
    """Every tensor the part's PyTorch class holds, by saved name, read off the class on the meta
    device once per configuration (in the torch worker where this process hides torch)."""
    from vedforge.core.torch_worker import derived_from_classes
    from vedforge.families.introspect import config_data

    rows = derived_from_classes(
        "prefix-part-tensors", {"config": config_data(part.config.model), "role": part.role},
        lambda: class_shapes(part.config.model, part.role), "vedforge.architectures.prefix.plan:class_shapes_data",
        encode=list, decode=list)
    return {name: tuple(shape) for name, shape in rows}


def class_shapes_data(config: dict[str, Any], role: str) -> list:
    """:func:`class_shapes` of the config ``config`` holds."""
    from vedforge.families.introspect import config_from_data

    return class_shapes(config_from_data(config), role)


def class_shapes(config: Any, role: str) -> list:
    """``[saved name, shape]`` of every tensor the PyTorch class of a part with ``config`` holds."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    from vedforge.weights.saved_names import saved_names

    with torch.device("meta"):
        model = (AutoModel if role == "encoder" else AutoModelForCausalLM).from_config(config)
    renamed = saved_names(model)
    return [[renamed[n], list(t.shape)] for n, t in model.state_dict().items()]


def _derived_family(config: Any, role: str) -> ModelFamily:
    """vedforge's record of a model type where it has one (its label), else one read from the config."""
    from vedforge.families.roles import label_of

    known = family_of(config.model_type)
    if known is not None and known.role == role:
        return known
    return ModelFamily(config.model_type, label_of(config), role, built_with="pytorch")


def plan_prefix(recipe: Recipe) -> PrefixPlan:
    """Plan the prefix forge of ``recipe`` without reading any weight.

    Raises:
        VedforgeError: every problem that needs no weights to be found.
    """
    import copy

    import transformers

    from vedforge.families.introspect import check_vision_tower, language_model, sub_config, tower_tokens
    from vedforge.sources.loading import PartConfig, apply_overrides, read_config
    from vedforge.sources.loading import fit_processor_to_image_size, load_processor, load_tokenizer
    from vedforge.sources.resolve import locate
    from vedforge.architectures.prefix.tokens import add_prefix_tokens, image_chat_template

    transformers.utils.logging.set_verbosity_error()
    hub = recipe.hub
    sources = {role: locate(recipe.part(role), recipe.hub, need_weights=False) for role in ROLES}
    enc_checkpoint = read_config(sources["encoder"], hub.trust_remote_code)
    # A composite checkpoint (CLIP, SigLIP, LLaVA, VisionEncoderDecoderModel) gives the part it holds.
    tower, tower_from = sub_config(enc_checkpoint, "encoder")
    tower = copy.deepcopy(tower)
    apply_overrides(tower, recipe.encoder.config_overrides, "encoder")
    lm_checkpoint = read_config(sources["decoder"], hub.trust_remote_code)
    lm, lm_from = sub_config(lm_checkpoint, "decoder")
    lm = copy.deepcopy(lm)
    apply_overrides(lm, recipe.decoder.config_overrides, "decoder")
    lm_model = language_model(lm, sources["decoder"].describe())
    if lm_model.logits_differ:
        log.warning("The %s language model's logits are more than a Linear head over its last hidden state: %s. "
                    "LlavaForConditionalGeneration's head is that Linear only, so the forged model's text logits differ "
                    "from the LM's until training adapts.", lm.model_type, lm_model.logits_differ)
    if lm_model.head_bias:
        log.warning("The %s language model's output head has a bias, which LlavaForConditionalGeneration's head does "
                    "not hold: it is left out (the manifest lists it among the unused checkpoint tensors), so the "
                    "forged model's text logits differ from the LM's by that bias until training adapts.",
                    lm.model_type)
    enc_family = _derived_family(tower, "encoder")
    dec_family = _derived_family(lm, "decoder")
    # The LM as its tensors are (random weights are drawn for it); `lm` then gains the added tokens.
    lm_as_saved = copy.deepcopy(lm)

    settings = recipe.prefix
    check_vision_tower(tower, sources["encoder"].describe())
    depth = getattr(tower, "num_hidden_layers", None)
    if isinstance(depth, int) and not -(depth + 1) <= settings.vision_feature_layer <= depth:
        raise VedforgeError(
            f"prefix.vision_feature_layer={settings.vision_feature_layer} is out of range: the '{tower.model_type}' tower "
            f"has {depth} layers, so its hidden states are numbered 0 to {depth} (or -1 to -{depth + 1}; -2, the "
            "penultimate layer, is LLaVA's choice).")
    image_processor = load_processor(sources["encoder"], hub.trust_remote_code)
    if isinstance(getattr(tower, "image_size", None), int):
        image_processor = fit_processor_to_image_size(image_processor, sources["encoder"], tower.image_size)
    height, width = _processed_size(image_processor)
    emitted = tower_tokens(tower, height, width, settings.vision_feature_layer, sources["encoder"].describe())
    strategy = settings.vision_feature_select_strategy or emitted.strategy
    leading = emitted.leading
    patch = tower.patch_size
    if strategy == "default" and leading == 0:
        raise VedforgeError(
            f"prefix.vision_feature_select_strategy=default drops a leading CLS token, but the '{tower.model_type}' tower "
            "has none: it would drop a patch. Use prefix.vision_feature_select_strategy=full (or leave it unset).")
    image_seq_length = (height // patch) * (width // patch) + leading - (1 if strategy == "default" else 0)

    tokenizer = load_tokenizer(sources["decoder"], hub.trust_remote_code)
    tokens = add_prefix_tokens(tokenizer, lm, recipe.token_policy, sources["decoder"].describe())
    lm.vocab_size = tokens.vocab_size
    lm.pad_token_id, lm.bos_token_id, lm.eos_token_id = tokens.pad, tokens.bos, tokens.eos
    template, template_source = image_chat_template(tokenizer.chat_template)
    tokenizer.chat_template = template
    processor = transformers.LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch, vision_feature_select_strategy=strategy,
        chat_template=template, image_token=tokenizer.convert_ids_to_tokens(tokens.image),
        num_additional_image_tokens=leading)

    parts = {"encoder": _plan_part(recipe, "encoder", sources["encoder"],
                                   PartConfig(enc_checkpoint, tower, taken_from=tower_from), enc_family),
             "decoder": _plan_part(recipe, "decoder", sources["decoder"],
                                   PartConfig(lm_checkpoint, lm_as_saved, taken_from=lm_from), dec_family)}
    config = transformers.LlavaConfig(
        vision_config=tower, text_config=lm, image_token_index=tokens.image,
        projector_hidden_act=PROJECTOR_ACTIVATION[settings.projector], vision_feature_select_strategy=strategy,
        vision_feature_layer=settings.vision_feature_layer, image_seq_length=image_seq_length,
        multimodal_projector_bias=True)
    config.architectures = ["LlavaForConditionalGeneration"]
    config.pad_token_id = tokens.pad
    head_from = None
    if getattr(lm, "tie_word_embeddings", False) and lm_model.input_embeddings != "embed_tokens":
        # transformers 5 ties LLaVA's head to model.language_model.embed_tokens, which this LM lacks.
        lm.tie_word_embeddings = False
        head_from = f"language_model.model.{lm_model.input_embeddings}.weight"
    config.tie_word_embeddings = bool(getattr(lm, "tie_word_embeddings", False))
    generation = _generation_config(sources["decoder"], tokens)

    from vedforge.architectures.prefix.tensors import target_specs

    try:
        # What from_pretrained will do with config.json: some sub-configs do not load back (DBRX's in 4.57).
        type(config).from_dict(config.to_dict())
        specs = target_specs(config)
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        # IndexError: XGLM sizes its position table by pad_token_id, which the added <pad> can exceed.
        raise UnsupportedModelError(
            f"architecture=prefix: LlavaForConditionalGeneration cannot be built around the '{lm.model_type}' language "
            f"model {sources['decoder'].describe()} with the '{tower.model_type}' tower: transformers raises "
            f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}") from None
    plan = PrefixPlan(recipe, recipe.output.dir, parts["encoder"], parts["decoder"], config, generation, processor, tokens,
                      strategy, leading, image_seq_length, template_source, head_from, lm_model, specs, ())
    dtype = _stored_dtype(plan)
    if dtype is not None:
        config.torch_dtype = dtype
    return _with_layouts(plan)


def _processed_size(image_processor: Any) -> tuple[int, int]:
    """The height and width of the pixel values the image processor makes."""
    import numpy as np
    from PIL import Image

    image = Image.fromarray(np.zeros((37, 45, 3), np.uint8))
    pixels = image_processor(image, return_tensors="np")["pixel_values"]
    return int(pixels.shape[-2]), int(pixels.shape[-1])


def _generation_config(source: ResolvedSource, tokens: PrefixTokens) -> Any:
    """The LM's own generation config (its sampling defaults and eos list kept), else a new one,
    with the forge's bos, eos and pad."""
    from transformers import GenerationConfig

    try:
        generation = GenerationConfig.from_pretrained(str(source.path))
    except (OSError, ValueError):
        generation = GenerationConfig()
    generation.bos_token_id, generation.pad_token_id = tokens.bos, tokens.pad
    own = generation.eos_token_id
    if not (isinstance(own, list) and tokens.eos in own):
        generation.eos_token_id = tokens.eos
    return generation


def _plan_part(recipe: Recipe, role: str, source: ResolvedSource, config: Any, family: Any) -> PartPlan:
    from vedforge.sources.weight_files import planned_weight_files
    from vedforge.weights.checkpoint import random_weights_hint

    part = recipe.part(role)
    files = () if part.random_weights else planned_weight_files(source, part, recipe.hub, torch_weights=True)
    if not part.random_weights and source.kind != "hub" and not files:
        raise VedforgeError(
            f"The {role} checkpoint {source.describe()} has no PyTorch-layout weights (model*.safetensors or "
            f"pytorch_model*.bin), which architecture=prefix reads. {random_weights_hint(role)}")
    return PartPlan(part, source, config, family, files, config.checkpoint)


def _stored_dtype(plan: PrefixPlan) -> Optional[str]:
    """The dtype the LM's tensors are stored in (kept by the forge and named in config.json)."""
    from vedforge.weights.bfloat16 import dtype_name

    if plan.decoder.recipe.random_weights:
        return "float32"
    return dtype_name(plan.dtype)


def _with_layouts(plan: PrefixPlan) -> PrefixPlan:
    import dataclasses

    import numpy as np

    from vedforge.weights.layouts import LAYOUTS, planned_files

    layout = LAYOUTS["pytorch"]
    tensors, _ = plan.assemble(plan.tower_shapes, plan.lm_shapes, dry_run=True)
    sizes = [(name, int(np.prod(t.shape, dtype=np.int64)) * np.dtype(t.dtype).itemsize) for name, t in tensors.items()]
    files = planned_files(layout, sizes, plan.recipe.output.max_shard_size)
    return dataclasses.replace(plan, layouts=(LayoutPlan(layout, tuple(files), sum(s for _, s in sizes)),))


def fetch_prefix_sources(plan: PrefixPlan) -> dict[str, ResolvedSource]:
    """The plan's sources with their PyTorch-layout weights on disk (hub weights downloaded here)."""
    from vedforge.sources.resolve import locate

    sources = {}
    for role in ROLES:
        part = plan.part(role)
        if part.source.kind == "hub" and not part.recipe.random_weights:
            sources[role] = locate(part.recipe, plan.recipe.hub, need_weights=True, torch_weights=True)
        else:
            sources[role] = part.source
    return sources
