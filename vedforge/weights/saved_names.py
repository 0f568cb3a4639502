"""The names ``save_pretrained`` writes for a PyTorch model's state dict, in transformers 4 and 5.

transformers 5 renamed modules inside many models (ViT-family attention became ``q_proj``/``k_proj``...,
``intermediate.dense`` became ``mlp.fc1``, CLIP's and SigLIP's vision towers lost their
``vision_model.`` level) and maps checkpoint names to the new ones when it loads
(``transformers.conversion_mapping``). Its ``save_pretrained`` reverts that mapping, so files keep
the names transformers 4 wrote, which both lines load. vedforge names files the same way: wherever
a state dict's names become tensor names in a file, they go through :func:`saved_names` first.
On transformers 4 the state-dict names are the saved names, and this is the identity.
"""

from __future__ import annotations

from typing import Any


def saved_names(model: Any) -> dict[str, str]:
    """State-dict name -> the name transformers' ``save_pretrained`` writes for it.

    Raises:
        RuntimeError: transformers saves some tensor through a conversion that is not a renaming
            (so no file name corresponds to the state-dict name one to one).
    """
    state = model.state_dict()
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # transformers 4: no conversion at load or save
        return {name: name for name in state}
    full = get_model_conversion_mapping(model, add_legacy=False)
    renamed = _reverted(model, state, full, revert_weight_conversion)
    prefix_changes = [c for c in full if type(c).__name__ == "PrefixChange"]
    if prefix_changes:
        # A prefix change belongs to a class that lost a level (CLIPVisionModel's vision_model.); a
        # model that holds that class under the very name (CLIPModel.vision_model) would get the
        # level twice. There the names without the prefix changes are the saved ones.
        plain = _reverted(model, state, [c for c in full if c not in prefix_changes], revert_weight_conversion)
        renamed = {name: plain[name] if _doubled(saved) and not _doubled(plain[name]) else saved
                   for name, saved in renamed.items()}
    return renamed


def _doubled(name: str) -> bool:
    parts = name.split(".")
    return any(a == b and not a.isdigit() for a, b in zip(parts, parts[1:]))


def _reverted(model: Any, state: dict, conversions: list, revert_weight_conversion: Any) -> dict[str, str]:
    """state-dict name -> saved name, with ``conversions`` as the model's record of its conversions."""
    import torch

    # Always the class's full mapping, prefix changes included (CLIP's and SigLIP's vision_model.):
    # revert_weight_conversion drops those for a model built from a config, and a model loaded with
    # from_pretrained carries only the conversions its own file needed (none for a file that
    # transformers 5 saved from a config), which would give 5's internal names, not the 4.x layout.
    had = model.__dict__.get("_weight_conversions")
    model._weight_conversions = conversions
    try:
        tags = {name: torch.empty(0, device="meta") for name in state}
        back = {id(tag): name for name, tag in tags.items()}
        reverted = revert_weight_conversion(model, tags)
    finally:
        if had is None:
            del model._weight_conversions
        else:
            model._weight_conversions = had
    out = {}
    for saved, tag in reverted.items():
        if id(tag) not in back:
            raise RuntimeError(f"transformers saves '{saved}' through a conversion that is not a renaming")
        out[back[id(tag)]] = saved
    missing = set(state) - set(out)
    if missing:
        raise RuntimeError(f"transformers' saved names leave out {', '.join(sorted(missing)[:5])}")
    return out


# Buffers transformers 4.57 saves and 5.x no longer does (not persistent there). A file without
# them loads in 4.57 with the right values (they are computed when the model is built), but
# 4.57 reports them missing; vedforge writes them as 4.57 did.
SAVED_BY_4_57 = ("relative_position_index",)


def buffers_saved_by_4_57(model: Any, renamed: dict[str, str]) -> dict[str, Any]:
    """Saved name -> tensor of the buffers in :data:`SAVED_BY_4_57` that ``model``'s state dict
    leaves out (none on transformers 4), named after a saved tensor of the same module."""
    state = model.state_dict()
    out = {}
    for name, buffer in model.named_buffers():
        if name in state or not name.endswith(SAVED_BY_4_57):
            continue
        module, _, leaf = name.rpartition(".")
        siblings = [n for n in renamed if n.rpartition(".")[0] == module]
        if not siblings:
            continue
        saved_module = renamed[siblings[0]].rpartition(".")[0]
        side = int(round(buffer.numel() ** 0.5))
        if buffer.ndim == 1 and side * side == buffer.numel():
            buffer = buffer.reshape(side, side)  # 5.x keeps the (tokens, tokens) index flattened
        out[f"{saved_module}.{leaf}" if saved_module else leaf] = buffer
    return out
