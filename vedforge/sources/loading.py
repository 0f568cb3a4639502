"""Load the configurations and tensors of the encoder and decoder checkpoints.

Configs are loaded and checked first, so an impossible pairing is refused before any
weights are read. Tensors are then read as flat states laid out for the part's place in
the combined model.
"""

from __future__ import annotations

import copy
import difflib
import logging
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Mapping

from vedforge.weights.checkpoint import FlatState, read_state
from vedforge.core.errors import (ConfigOverrideError, CorruptCheckpointError, UnsupportedModelError, VedforgeError,
                                  first_line)
from vedforge.families.registry import ModelFamily
from vedforge.families.roles import decoder_family, encoder_family
from vedforge.sources.resolve import ResolvedSource

log = logging.getLogger(__name__)


@dataclass
class PartConfig:
    """A part's configs: as stored in its checkpoint, and as used inside the combined model."""

    checkpoint: Any  # transformers PretrainedConfig of the checkpoint (a full CLIPConfig for clip)
    model: Any  # the config the combined model is built from (CLIP: its vision_config)
    family: ModelFamily | None = None  # what the role check found (a registry record or a derived one)
    # The attribute of a whole multimodal checkpoint this part was taken from ("decoder" of a
    # VisionEncoderDecoderModel, "vision_config" of a LLaVA model), else None.
    taken_from: str | None = None


def read_part_config(source: ResolvedSource, trust_remote_code: bool, role: str, backend: str) -> tuple[Any, str | None]:
    """The config of the part ``source`` holds for ``role``: the checkpoint's own, or for a whole
    multimodal checkpoint (TrOCR, Donut, LLaVA) the part it holds, with where it came from."""
    from vedforge.families.introspect import composite_part

    checkpoint = read_config(source, trust_remote_code)
    part, taken_from = composite_part(checkpoint, role)
    if taken_from is not None and backend == "flax":
        raise UnsupportedModelError(
            f"The {role} checkpoint {source.describe()} is a whole '{checkpoint.model_type}' model; vedforge takes its "
            f"{role} ('{part.model_type}', from {taken_from}) from its PyTorch weights by name, with backend=pt. Add "
            "backend=pt, or give a checkpoint of the part alone.")
    return part, taken_from


def read_config(source: ResolvedSource, trust_remote_code: bool):
    """The checkpoint's config as saved (no overrides), or a clear error."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(source.path), trust_remote_code=trust_remote_code)
    except ValueError as exc:
        if "model_type" in str(exc) or "Unrecognized" in str(exc):
            raise UnsupportedModelError(
                f"The {source.role} checkpoint {source.describe()} has a config.json whose model type transformers "
                f"does not know ({first_line(exc)})."
            ) from None
        raise CorruptCheckpointError(
            f"The config.json of the {source.role} checkpoint {source.describe()} is invalid: {first_line(exc)}"
        ) from None
    except OSError as exc:
        raise CorruptCheckpointError(
            f"The config.json of the {source.role} checkpoint {source.describe()} cannot be read: "
            f"{first_line(exc)}"
        ) from None


def apply_overrides(config: Any, overrides: Mapping[str, Any], role: str) -> None:
    """Set each override on ``config``; refuse a key the config does not have."""
    known = set(config.to_dict())
    for key, value in overrides.items():
        if key not in known and not hasattr(config, key):
            close = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigOverrideError(
                f"{role}.config_overrides.{key}: the {config.model_type} config has no attribute '{key}'.{hint} "
                f"Valid keys include: {', '.join(sorted(k for k in known if not k.startswith('_'))[:25])}."
            )
        setattr(config, key, value)


def load_encoder_config(source: ResolvedSource, overrides: Mapping[str, Any], trust_remote_code: bool = False,
                        backend: str = "flax") -> PartConfig:
    """Load and check the encoder config; for a full CLIP checkpoint, take its vision tower."""
    checkpoint, taken_from = read_part_config(source, trust_remote_code, "encoder", backend)
    family = encoder_family(checkpoint, f"{source.describe()}", backend)
    tower = checkpoint.vision_config if family.vision_tower else checkpoint
    # Overrides shape the architecture, so random weights are drawn for the overridden one.
    apply_overrides(tower, overrides, "encoder")
    model = copy.deepcopy(tower)
    # A decoder checkpoint reused as an encoder must lose its causal mask, as stock does.
    model.is_decoder = False
    model.add_cross_attention = False
    image_size, patch_size = getattr(model, "image_size", None), getattr(model, "patch_size", None)
    if isinstance(image_size, int) and isinstance(patch_size, int) and image_size % patch_size:
        raise ConfigOverrideError(
            f"The encoder's image_size {image_size} is not divisible by its patch_size {patch_size}: "
            f"choose an image_size that is a multiple of {patch_size} (e.g. {image_size - image_size % patch_size} "
            f"or {image_size - image_size % patch_size + patch_size})."
        )
    return PartConfig(checkpoint, model, family, taken_from)


def load_decoder_config(source: ResolvedSource, overrides: Mapping[str, Any], trust_remote_code: bool = False,
                        backend: str = "flax") -> PartConfig:
    """Load and check the decoder config for ``backend``, and turn it into a cross-attending decoder."""
    checkpoint, taken_from = read_part_config(source, trust_remote_code, "decoder", backend)
    family = decoder_family(checkpoint, f"{source.describe()}", backend)
    apply_overrides(checkpoint, overrides, "decoder")
    model = copy.deepcopy(checkpoint)
    model.is_decoder = True
    model.add_cross_attention = True
    return PartConfig(checkpoint, model, family, taken_from)


def checkpoint_class(config: Any, role: str):
    """The Flax class a checkpoint with ``config`` was saved from (its first Flax-ported architecture)."""
    import transformers
    from transformers.models.auto.modeling_flax_auto import FLAX_MODEL_FOR_CAUSAL_LM_MAPPING, FLAX_MODEL_MAPPING

    for arch in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, "Flax" + arch, None)
        if cls is not None:
            return cls
    mapping = FLAX_MODEL_MAPPING if role == "encoder" else FLAX_MODEL_FOR_CAUSAL_LM_MAPPING
    return mapping[type(config)]


def _registered_checkpoint_class(config: Any, role: str) -> Any:
    from vedforge.compat import register_clip_vision

    register_clip_vision()
    return checkpoint_class(config, role)


def random_part_class_name(config: Any, role: str) -> str:
    """The name of the Flax class whose initialisers a random part with ``config`` is drawn from
    (kept with them in the cache of derivations, so naming it imports no Flax class)."""
    from vedforge.families.random_init import part_initialisers

    return part_initialisers(lambda: _registered_checkpoint_class(config, role), config, role)[0]


def load_part_state(source: ResolvedSource, part: PartConfig, *, random_weights: bool, seed: int) -> FlatState:
    """The tensors of one part, in the layout of the class its checkpoint was saved from.

    With ``random_weights`` the checkpoint's architecture is initialised afresh from the
    recipe's seed, tensor by tensor, with the distributions its Flax modules declare, as if that
    initialisation had been saved and loaded (:mod:`vedforge.families.random_init`: nothing is compiled).
    The tensors are drawn only when written.
    """
    # Flax's classes only where they are needed: a Flax checkpoint is read as it is saved, and a
    # forge of Flax checkpoints then imports neither jax nor flax.
    def flax_class() -> Any:
        return _registered_checkpoint_class(part.checkpoint, source.role)

    if random_weights:
        from vedforge.families.random_init import random_part_state

        return random_part_state(flax_class, part.checkpoint, seed=seed, role=source.role)

    def convert_pytorch_layout(tensors: dict) -> FlatState:
        from flax.traverse_util import flatten_dict
        from transformers.modeling_flax_pytorch_utils import convert_pytorch_state_dict_to_flax

        cls = flax_class()

        if part.taken_from is not None:
            tensors = _own_tensors(tensors, part.checkpoint, source.role)

        # The converter reads `.params` only for key names and shapes; the shape tree serves
        # without initialising (an uninitialised model's `.params` raises).
        shell = cls(part.checkpoint, _do_init=False)
        shapes = SimpleNamespace(params=shell.params_shape_tree, base_model_prefix=cls.base_model_prefix)
        return flatten_dict(convert_pytorch_state_dict_to_flax(tensors, shapes))

    return read_state(source.path, convert_pytorch_layout, source.role)


def _own_tensors(tensors: dict, config: Any, role: str) -> dict:
    """The tensors of a part taken from a whole model's checkpoint, by the names of the part's own
    PyTorch class (``vision_tower.`` of a LLaVA checkpoint, ``decoder.`` of a VisionEncoderDecoderModel
    one, dropped). Such parts are read with backend=pt only, where torch is at hand."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    from vedforge.weights.nesting import own_tensors
    from vedforge.weights.saved_names import saved_names

    with torch.device("meta"):
        model = (AutoModel if role == "encoder" else AutoModelForCausalLM).from_config(copy.deepcopy(config))
    return own_tensors(saved_names(model).values(), tensors)[1]


def fit_processor_to_image_size(processor: Any, source: ResolvedSource, image_size: int) -> Any:
    """``processor`` rebuilt to emit images of the encoder's size (after an ``image_size`` override),
    from its saved settings fitted as a cross-attention forge fits the file
    (:meth:`vedforge.sources.processor_files.ImageProcessorFiles.fit_to_image_size`); ``processor``
    itself where the size already fits. Setting ``size`` on the loaded object is not enough:
    transformers 5's fast processors save the size they were built with."""
    from vedforge.sources.processor_files import read_processor_files

    files = read_processor_files(source.path, source.describe())
    files.fit_to_image_size(image_size)
    fitted = files.to_dict()
    if fitted == files.settings:
        return processor
    return type(processor).from_dict(fitted)


def load_processor(source: ResolvedSource, trust_remote_code: bool) -> Any:
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(str(source.path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise VedforgeError(
            f"The image processor of the encoder {source.describe()} cannot be loaded "
            f"({first_line(exc)}). The checkpoint needs a preprocessor_config.json."
        ) from None


def load_tokenizer(source: ResolvedSource, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(source.path), trust_remote_code=trust_remote_code)
    except Exception as exc:  # tokenizers raises its own exception types for unparsable files
        raise VedforgeError(
            f"The tokenizer of the decoder {source.describe()} cannot be loaded "
            f"({type(exc).__name__}: {first_line(exc)}). "
            "The checkpoint needs valid tokenizer files (tokenizer.json or vocab files)."
        ) from None
