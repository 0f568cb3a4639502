"""Vision encoders that exist only in PyTorch (Swin, DeiT, ConvNeXt, DETR, SigLIP), for ``backend=pt``.

The decoder of such a pairing is still assembled by vedforge's Flax-layout engine, so its
tensors (copied and new) are the very ones a Flax forge of the same decoder would carry.
Only the encoder is built by transformers' PyTorch classes; its state dict goes into the
PyTorch checkpoint as is. A random encoder is not built: its tensors are drawn as they are
written, from the initialisers its class gives them (:mod:`vedforge.families.torch_init`).
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from vedforge.core.errors import CorruptCheckpointError
from vedforge.core.frameworks import config_to_build
from vedforge.core.seeding import derive_seed
from vedforge.sources.resolve import ResolvedSource


def standin_trace_config(config: Any) -> Any:
    """A copy of the combined config whose encoder is a two-layer ViT of the same hidden size.

    The decoder's parameter tree depends on the encoder only through its hidden size (the
    cross-attention's keys and values, or ``enc_to_dec_proj``), so tracing the combined Flax
    model with this stand-in gives the decoder's exact tree.
    """
    from transformers import ViTConfig

    traced = copy.deepcopy(config)
    traced.encoder = ViTConfig(hidden_size=int(config.encoder.hidden_size), num_hidden_layers=2, num_attention_heads=1,
                               intermediate_size=4, image_size=4, patch_size=4)
    return traced


def encoder_tensor_specs(model_config: Any) -> tuple[dict[str, Any], set[str]]:
    """Shape and dtype of every tensor of the encoder's state dict, named as inside
    ``VisionEncoderDecoderModel`` (``encoder.``...), and the names that are buffers: the
    model is built on the meta device, which allocates nothing."""
    import torch
    from transformers import AutoModel

    from vedforge.weights.bfloat16 import dtype_named
    from vedforge.weights.lazy_tensor import TensorSpec
    from vedforge.weights.saved_names import buffers_saved_by_4_57, saved_names

    with torch.device("meta"):
        model = AutoModel.from_config(config_to_build(model_config))
    renamed = saved_names(model)
    kept = buffers_saved_by_4_57(model, renamed)
    tensors = {**{renamed[name]: t for name, t in model.state_dict().items()}, **kept}
    specs = {f"encoder.{name}": TensorSpec(tuple(t.shape), dtype_named(str(t.dtype).removeprefix("torch.")))
             for name, t in tensors.items()}
    return specs, {f"encoder.{renamed.get(name, name)}" for name, _ in model.named_buffers()} | {
        f"encoder.{name}" for name in kept}


@contextlib.contextmanager
def _tower_alone(source: ResolvedSource, model_config: Any) -> Iterator[Path]:
    """The directory to load the tower from: the checkpoint's own, or for a tower inside a whole
    model's checkpoint (``encoder.`` of a VisionEncoderDecoderModel, ``vision_tower.`` of a LLaVA
    one) a temporary one holding just its tensors under their own names, which transformers'
    loading then maps as for any checkpoint of the tower."""
    import tempfile

    import torch
    from safetensors.numpy import save_file
    from transformers import AutoModel

    from vedforge.architectures.prefix.weights import read_part_tensors
    from vedforge.weights.bfloat16 import ml_dtypes_array
    from vedforge.weights.nesting import own_tensors

    stored = read_part_tensors(source.path, role="encoder")  # indexed lazily: nothing read yet
    with torch.device("meta"):
        own = list(AutoModel.from_config(config_to_build(model_config)).state_dict())
    prefix, tower = own_tensors(own, stored)
    if not prefix or any(name in stored for name in own):
        yield source.path
        return
    with tempfile.TemporaryDirectory(prefix="vedforge-tower-") as tmp:
        save_file({name: np.ascontiguousarray(ml_dtypes_array(t)) for name, t in tower.items()},
                  str(Path(tmp) / "model.safetensors"), metadata={"format": "pt"})
        yield Path(tmp)


def describe_torch_generation(model_config: Any, seed: int) -> dict[str, Any]:
    """The manifest's record of how a random PyTorch-built encoder's weights were made."""
    from vedforge.families.torch_init import describe_torch_generation as describe

    return describe(model_config.model_type, "AutoModel", seed)


def load_torch_encoder_state(source: ResolvedSource, model_config: Any, *, random_weights: bool,
                             seed: int) -> tuple[dict[str, Any], list[str], set[str]]:
    """The encoder's PyTorch state dict, named as inside ``VisionEncoderDecoderModel`` (``encoder.``...),
    the names of tensors the checkpoint lacked (initialised by transformers, seeded), and the
    names that are buffers (batch-norm statistics) rather than parameters.

    With ``random_weights`` no model is built: every parameter is drawn when written, from the
    initialiser transformers' class gives it, seeded per tensor from the recipe's seed
    (:func:`vedforge.families.torch_init.random_torch_state`).
    """
    if random_weights:
        from vedforge.families.torch_init import random_torch_state, torch_part_table

        table = torch_part_table(model_config, "encoder", choice="AutoModel")
        state = random_torch_state(model_config, seed=seed, role="encoder", choice="AutoModel", prefix="encoder.",
                                   table=table)
        return state, [], {f"encoder.{name}" for name in table.buffers}
    import torch
    from transformers import AutoModel

    torch.manual_seed(derive_seed(seed, "encoder-weights"))
    try:
        with _tower_alone(source, model_config) as path:
            model, info = AutoModel.from_pretrained(str(path), config=config_to_build(model_config),
                                                    output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CorruptCheckpointError(
            f"The PyTorch weights of the encoder {source.describe()} cannot be loaded: "
            f"{str(exc).splitlines()[0][:300]}"
        ) from None
    missing = sorted(info.get("missing_keys", []))
    from vedforge.weights.saved_names import saved_names

    # The names save_pretrained writes (transformers 5 renames modules internally).
    renamed = saved_names(model)
    state = {f"encoder.{renamed[name]}": tensor.detach().cpu().numpy() for name, tensor in model.state_dict().items()}
    from vedforge.weights.saved_names import buffers_saved_by_4_57

    kept = buffers_saved_by_4_57(model, renamed)
    state.update({f"encoder.{name}": tensor.detach().cpu().numpy() for name, tensor in kept.items()})
    buffers = {f"encoder.{renamed.get(name, name)}" for name, _ in model.named_buffers()} | {
        f"encoder.{name}" for name in kept}
    return state, [f"encoder.{renamed.get(name, name)}" for name in missing], buffers
