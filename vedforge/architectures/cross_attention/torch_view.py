"""The cross-attention engine fed from PyTorch models on the meta device, where transformers has no Flax classes.

vedforge assembles a cross-attention forge in Flax layout (paths such as
``decoder/transformer/h/0/attn/c_attn/kernel``) and converts to PyTorch names as it writes
(:mod:`vedforge.weights.pytorch_layout`). Under transformers 4 the Flax tree comes from tracing
transformers' Flax classes. transformers 5 has none, so here the same tree is read off the PyTorch
class built on the meta device (nothing allocated): each parameter gets the Flax path
transformers' converters pair it with, the inverse of
:func:`vedforge.weights.pytorch_layout.pytorch_name`, decided by module type. The ``weight``
of a Linear or GPT-2 ``Conv1D`` is ``kernel`` with its axes reversed, of a convolution
``kernel`` (OIHW to HWIO), of an Embedding ``embedding``, of a norm ``scale``. Names are the
saved ones (:mod:`vedforge.weights.saved_names`), which both transformers lines load.

Under transformers 4.57, where both views exist, this view equals the traced Flax tree (paths and
shapes) for every Flax pairing, and its initialisers equal the decoders' Flax initialisers
(``tests/architectures/cross_attention/test_torch_view.py``).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from vedforge.weights.lazy_tensor import TensorSpec
from vedforge.weights.pytorch_layout import PermutedTensor

Path_ = tuple[str, ...]
# Flax path -> (saved PyTorch name, Flax shape, axes taking the PyTorch tensor to Flax or None)
View = dict[Path_, tuple[str, tuple[int, ...], "tuple[int, ...] | None"]]


def _leaf(module: Any, pname: str) -> tuple[str, tuple[int, ...] | None]:
    """The Flax leaf name of ``module``'s parameter ``pname``, and the axes from PyTorch to Flax layout."""
    import torch.nn as nn

    if pname != "weight":
        return pname, None
    kind = type(module).__name__
    if isinstance(module, nn.Embedding):
        return "embedding", None
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d)) or kind.endswith(("LayerNorm", "Norm")):
        return "scale", None
    if isinstance(module, nn.Linear) or kind == "Conv1D":
        return "kernel", (1, 0)
    if isinstance(module, nn.Conv2d):
        return "kernel", (2, 3, 1, 0)
    return pname, None


def flax_view(model: Any, *, tied: bool = False) -> View:
    """Every parameter of PyTorch ``model`` under its Flax path; a tied parameter once (as
    ``save_pretrained`` writes it, and as Flax holds one tensor), or with ``tied`` under each of
    its names."""
    from vedforge.weights.saved_names import saved_names

    renamed = saved_names(model)
    out: View = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules(remove_duplicate=not tied):
        for pname, param in module.named_parameters(recurse=False):
            if id(param) in seen and not tied:
                continue
            seen.add(id(param))
            full = f"{module_name}.{pname}" if module_name else pname
            saved = renamed.get(full, full)
            leaf, axes = _leaf(module, pname)
            shape = tuple(param.shape)
            if axes is not None and len(axes) != len(shape):
                leaf, axes = pname, None
            flax_shape = tuple(shape[a] for a in axes) if axes else shape
            out[tuple(saved.split(".")[:-1]) + (leaf,)] = (saved, flax_shape, axes)
    return out


def target_shapes(config: Any) -> dict[Path_, TensorSpec]:
    """Every parameter of ``VisionEncoderDecoderModel(config)`` in Flax paths and shapes (float32)."""
    import torch
    from transformers import VisionEncoderDecoderModel

    # A copy: transformers 5 sets the attention implementation on the config it builds from.
    with torch.device("meta"):
        model = VisionEncoderDecoderModel(copy.deepcopy(config))
    return {path: TensorSpec(shape, np.dtype("float32")) for path, (_, shape, _) in flax_view(model).items()}


def checkpoint_model(config: Any, role: str) -> Any:
    """The PyTorch class a checkpoint with ``config`` was saved from, built on the meta device."""
    import torch
    import transformers

    cls = None
    for arch in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, arch, None)
        if cls is not None:
            break
    if cls is None:
        cls = transformers.AutoModel if role == "encoder" else transformers.AutoModelForCausalLM
    with torch.device("meta"):
        if hasattr(cls, "_from_config"):
            return cls._from_config(copy.deepcopy(config))
        return cls.from_config(copy.deepcopy(config))


def checkpoint_shapes(config: Any, role: str) -> dict[Path_, TensorSpec]:
    """Every tensor a checkpoint saved from ``config``'s class holds, in Flax paths and shapes."""
    return {path: TensorSpec(shape, np.dtype("float32"))
            for path, (_, shape, _) in flax_view(checkpoint_model(config, role)).items()}


def part_state(path: Any, config: Any, role: str) -> dict[Path_, Any]:
    """A checkpoint's tensors in Flax paths and layout, read lazily: PyTorch-layout files by name,
    or a Flax msgpack / safetensors file as it is."""
    from vedforge.weights.checkpoint import read_state

    model = checkpoint_model(config, role)
    view = flax_view(model)
    by_name = {saved: (fpath, axes) for fpath, (saved, _, axes) in view.items()}
    # Names of one tied tensor: a seq2seq checkpoint stores its decoder's token embeddings once, as
    # model.shared, and the decoder alone (MBartForCausalLM) names them model.decoder.embed_tokens.
    every = flax_view(model, tied=True)
    ties = _tied_groups(model)

    def from_pytorch_layout(tensors: dict) -> dict[Path_, Any]:
        from vedforge.weights.nesting import own_tensors

        # A part inside a whole model's checkpoint (``decoder.`` of a VisionEncoderDecoderModel):
        # its own tensors only, by their names inside it.
        tensors = own_tensors(by_name, tensors)[1]
        out: dict[Path_, Any] = {}
        for name, tensor in tensors.items():
            if name in by_name:
                fpath, axes = by_name[name]
                out[fpath] = PermutedTensor(tensor, axes) if axes else tensor
            else:
                out[tuple(name.split("."))] = tensor  # kept, so the report lists it as unused
        return out

    state = read_state(path, from_pytorch_layout)
    for group in ties:
        present = next((every_path for every_path in group if every_path in state), None)
        if present is not None:
            for every_path in group:
                state.setdefault(every_path, state[present])
    return state


def _tied_groups(model: Any) -> list[list[Path_]]:
    """The Flax paths of each parameter ``model`` holds under more than one name."""
    names: dict[int, list[Path_]] = {}
    view = flax_view(model, tied=True)
    by_saved = {saved: fpath for fpath, (saved, _, _) in view.items()}
    from vedforge.weights.saved_names import saved_names

    renamed = saved_names(model)
    for name, param in model.named_parameters(remove_duplicate=False):
        saved = renamed.get(name, name)
        if saved in by_saved:
            names.setdefault(id(param), []).append(by_saved[saved])
    return [group for group in names.values() if len(group) > 1]


def random_part_state(config: Any, *, seed: int, role: str) -> dict[Path_, Any]:
    """The random part :func:`vedforge.families.random_init.random_part_state` draws from the traced
    Flax class, with each initialiser as that class declares it (:func:`flax_initialiser`): the
    same streams, so the same bytes."""
    from vedforge.families.random_init import SeededTensor

    out: dict[Path_, Any] = {}
    for fpath, (_, shape, _) in flax_view(checkpoint_model(config, role)).items():
        out[fpath] = SeededTensor(fpath, shape, np.float32, flax_initialiser(config, role, fpath, shape), seed, role)
    return out


def flax_initialiser(config: Any, role: str, path: Path_, shape: tuple[int, ...]) -> Any:
    """The initialiser transformers' Flax class for ``config`` declares for parameter ``path``.

    Decoders (GPT-2, BERT, RoBERTa, BART, and any other causal LM): Dense kernels and embeddings
    normal(initializer_range or init_std), biases zeros, LayerNorm scales ones; BERT's prediction-head transform is a plain
    ``nn.Dense`` (lecun_normal). Encoders: ViT and DINOv2 draw kernels and their class, mask and
    position tokens from a truncated-normal ``variance_scaling(initializer_range**2, "fan_in")``;
    BEiT draws kernels normal(initializer_range) and starts its tokens at zero and its layer scales
    at ``layer_scale_init_value``; CLIP's vision tower has fixed scales (normal(0.01), its class
    embedding normal(0.02)). Anything else is ``unknown`` and refused if it is ever drawn.
    (``tests/architectures/cross_attention/test_torch_view.py`` checks these against the traced
    Flax classes under transformers 4.57.)
    """
    from vedforge.families.random_init import TRUNCATED_STD, Init
    from vedforge.families.registry import family_of
    from vedforge.families.roles import init_std

    leaf, joined = path[-1], "/".join(path)
    unknown = Init("unknown", 0.0, f"{flax_class_name(config)} parameter {joined}: no initialiser known without Flax")
    if leaf == "bias":
        return Init("constant", 0.0)
    if leaf == "scale":
        return Init("constant", 1.0)
    model_type = config.model_type
    if role == "decoder":
        # A decoder vedforge has no record of draws as transformers' _init_weights does.
        std = init_std(config, family_of(model_type))
        if path[-3:] == ("transform", "dense", "kernel") and "predictions" in path:
            return Init("truncated_normal", float(np.sqrt(1.0 / shape[0])) / TRUNCATED_STD)
        return Init("normal", std) if leaf in ("kernel", "embedding") else unknown
    if model_type in ("vit", "dinov2"):
        if leaf == "lambda1":
            return Init("constant", float(config.layerscale_value))
        if leaf in ("kernel", "cls_token", "mask_token", "position_embeddings") and len(shape) >= 2:
            # jax's variance_scaling: fan_in = shape[-2] x the receptive field (the leading axes).
            fan_in = shape[-2] * int(np.prod(shape[:-2], dtype=np.int64))
            return Init("truncated_normal", float(np.sqrt(config.initializer_range**2 / fan_in)) / TRUNCATED_STD)
        return unknown
    if model_type == "beit":
        if leaf in ("lambda_1", "lambda_2"):
            return Init("constant", float(config.layer_scale_init_value))
        if leaf in ("cls_token", "mask_token", "position_embeddings", "relative_position_bias_table"):
            return Init("constant", 0.0)
        return Init("normal", float(config.initializer_range)) if leaf == "kernel" else unknown
    if model_type in ("clip", "clip_vision_model"):
        if "vision_model" not in path:
            return unknown  # the text tower and the projections stay behind, never drawn
        if leaf == "class_embedding":
            return Init("normal", 0.02)
        return Init("normal", 0.01) if leaf in ("kernel", "embedding") else unknown
    return unknown


def flax_class_name(config: Any) -> str:
    """The name of the Flax class whose initialisers :func:`random_part_state` draws."""
    return "Flax" + ((getattr(config, "architectures", None) or ["Model"])[0])
