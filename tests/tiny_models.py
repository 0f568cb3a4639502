"""Tiny random checkpoints of any model type transformers knows, shrunk generically, and the checks
that a backend=pt cross-attention forge of them works: loads with nothing missing, carries the
pretrained tensors bit for bit, generates, and learns."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from vedforge.core.frameworks import transformers_version
from vedforge.core.resources import assets_dir
from vedforge.weights.saved_names import SAVED_BY_4_57

TRANSFORMERS_5 = int(transformers_version().split(".")[0]) >= 5

# Uniform sizes, set wherever a config names them (the names differ by family).
_WIDTH = {"hidden_size": 32, "d_model": 32, "n_embd": 32, "embedding_size": 32, "input_embedding_size": 32,
          "output_embedding_size": 32, "word_embed_proj_dim": 32}
# encoder_layers as decoder_layers: transformers 5's generate() sizes a BART-style decoder's cache
# by num_hidden_layers, which those configs map to encoder_layers (real checkpoints have them equal).
_DEPTH = {"num_hidden_layers": 2, "n_layer": 2, "decoder_layers": 2, "encoder_layers": 2, "num_layers": 2}
_HEADS = {"num_attention_heads": 2, "n_head": 2, "decoder_attention_heads": 2, "encoder_attention_heads": 2,
          "num_key_value_heads": 2}
_FFN = {"intermediate_size": 64, "decoder_ffn_dim": 64, "encoder_ffn_dim": 64, "n_inner": 64, "ffn_dim": 64}
_IMAGE = {"image_size": 32, "patch_size": 8}
# A hierarchical tower's per-stage lists, cut to two stages.
_STAGES = {"depths": [1, 1], "num_heads": [1, 2], "hidden_sizes": [16, 32], "embed_dim": 16, "window_size": 2}


def _shrink(default: Any, sizes: dict[str, Any]) -> dict[str, Any]:
    present = default.to_dict()
    return {k: v for k, v in sizes.items() if k in present}


def tiny_config(model_type: str, role: str, vocab_size: int = 0) -> Any:
    """``AutoConfig.for_model(model_type)`` with small sizes wherever it names them.

    Raises whatever transformers raises for sizes its config or model cannot take.
    """
    from transformers import AutoConfig

    default = AutoConfig.for_model(model_type)
    sizes = {**_WIDTH, **_DEPTH, **_HEADS, **_FFN}
    if role == "encoder":
        sizes.update(_IMAGE)
        stages = default.to_dict().get("depths")
        if isinstance(stages, list):
            sizes.update({"patch_size": 4, **_STAGES})
            sizes.pop("hidden_size")  # derived from embed_dim and the stage count
            for name, value in default.to_dict().items():
                if isinstance(value, list) and len(value) == len(stages) and name not in _STAGES:
                    sizes[name] = value[:2]
    else:
        sizes["vocab_size"] = vocab_size
        sizes["max_position_embeddings"] = 64
    kwargs = _shrink(default, sizes)
    for tower in ("vision_config", "text_config"):
        sub = getattr(default, tower, None)
        if sub is not None:
            kwargs[tower] = {**sub.to_dict(), **_shrink(sub, {**sizes, **_IMAGE} if tower == "vision_config" else
                                                          {**_WIDTH, **_DEPTH, **_HEADS, **_FFN})}
    config = AutoConfig.for_model(model_type, **kwargs)
    if role == "decoder":
        _fit_token_ids(config, vocab_size)
    return config


def _fit_token_ids(config: Any, vocab_size: int) -> None:
    """Token ids the default config names beyond the tiny vocabulary, moved into it."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(assets_dir() / "bert_tiny")
    fits = {"bos_token_id": tokenizer.cls_token_id, "decoder_start_token_id": tokenizer.cls_token_id,
            "eos_token_id": tokenizer.sep_token_id, "sep_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id}
    for name, value in fits.items():
        current = getattr(config, name, None)
        if isinstance(current, int) and not 0 <= current < vocab_size:
            setattr(config, name, value)
        elif isinstance(current, list):
            setattr(config, name, value)


_MAX_PARAMETERS = 20_000_000


def _refuse_large(cls: Any, config: Any) -> None:
    """A config the generic shrinking left large (sizes under names it does not know) is not tiny."""
    import copy

    import torch

    with torch.device("meta"):
        size = sum(p.numel() for p in cls.from_config(copy.deepcopy(config)).parameters())
    if size > _MAX_PARAMETERS:
        raise ValueError(f"still {size:,} parameters after shrinking")


def save_tiny_decoder(model_type: str, dest: Path, *, seed: int = 1) -> Path:
    """A tiny random ``AutoModelForCausalLM`` of ``model_type`` saved with the tiny BERT tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    src = assets_dir() / "bert_tiny"
    vocab = sum(1 for _ in open(src / "vocab.txt", encoding="utf-8"))
    config = tiny_config(model_type, "decoder", vocab)
    _refuse_large(AutoModelForCausalLM, config)
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(dest)
    for item in src.iterdir():
        if item.name != "config.json":
            shutil.copy(item, dest / item.name)
    return dest


def save_tiny_encoder(model_type: str, dest: Path, *, seed: int = 1) -> Path:
    """A tiny random ``AutoModel`` of vision ``model_type`` saved with an image processor of its size."""
    import torch
    from transformers import AutoModel, ViTImageProcessor

    config = tiny_config(model_type, "encoder")
    _refuse_large(AutoModel, config)
    torch.manual_seed(seed)
    AutoModel.from_config(config).save_pretrained(dest)
    tower = getattr(config, "vision_config", None) if not hasattr(config, "image_size") else config
    size = getattr(tower, "image_size", 32) if tower is not None else 32
    side = size if isinstance(size, int) else int(size[-1])
    ViTImageProcessor(size={"height": side, "width": side}).save_pretrained(dest)
    from transformers import AutoConfig

    AutoConfig.from_pretrained(dest)  # a config that does not load back is no checkpoint to forge from
    return dest


def check_forged(out: Path, sources: dict[str, Path], *, steps: int = 6) -> dict[str, Any]:
    """Load the forge at ``out`` and check it: nothing missing or unexpected, the pretrained tensors
    bit-identical to the ``sources`` checkpoints, ``generate()`` runs and a few AdamW steps make the
    loss fall. Returns the numbers checked."""
    import torch
    from safetensors.numpy import load_file
    from transformers import AutoImageProcessor

    from vedforge import torch_compat

    model, info = torch_compat.VisionEncoderDecoderModel.from_pretrained(out, output_loading_info=True)
    problems = {k: set(v) for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if TRANSFORMERS_5:
        # Written as 4.57 saves them (vedforge.weights.saved_names), so 4.57 loads a 5.x forge;
        # a 5.x class that keeps them out of its state dict reports them and ignores them.
        problems["unexpected_keys"] = {k for k in problems.get("unexpected_keys", ()) if not k.endswith(SAVED_BY_4_57)}
        problems = {k: v for k, v in problems.items() if v}
    assert not problems, problems
    forged = load_file(out / "model.safetensors")
    compared = 0
    for role, path in sources.items():
        saved = load_file(path / "model.safetensors")
        # A part of a whole model's checkpoint (a LLaVA model's tower) sits under a prefix there:
        # the leading name components that, dropped, match the most forged names.
        votes: Counter[str] = Counter()
        for name in saved:
            pieces = name.split(".")
            for cut in range(len(pieces)):
                if f"{role}.{'.'.join(pieces[cut:])}" in forged:
                    votes[".".join(pieces[:cut])] += 1
        prefix = votes.most_common(1)[0][0] if votes else ""
        for name, tensor in saved.items():
            if prefix and not name.startswith(prefix + "."):
                continue
            rest = name[len(prefix) + 1:] if prefix else name
            if f"{role}.{rest}" in forged:
                np.testing.assert_array_equal(forged[f"{role}.{rest}"], tensor, err_msg=f"{role}.{rest}")
                compared += 1
        assert compared, f"no {role} tensor of {path} found in the forge"
    processor = AutoImageProcessor.from_pretrained(out)
    image = (np.random.RandomState(0).rand(40, 48, 3) * 255).astype(np.uint8)
    pixels = torch.tensor(processor(image, return_tensors="np")["pixel_values"])
    model.eval()
    with torch.no_grad():
        generated = model.generate(pixels, max_new_tokens=3, do_sample=False)
    assert generated.shape[0] == 1
    model.train()
    torch.manual_seed(0)
    batch = pixels.repeat(2, 1, 1, 1)
    labels = torch.randint(5, min(100, model.config.decoder.vocab_size), (2, 6))
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        loss = model(pixel_values=batch, labels=labels).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0], losses
    return {"compared": compared, "losses": losses, "generated": tuple(generated.shape)}
