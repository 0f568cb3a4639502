"""The model card (README.md) written into a directory ``vedforge convert`` produced."""

from __future__ import annotations

from typing import Any

from vedforge.families.registry import FAMILIES

# Decoders whose positions PyTorch numbers from pad_token_id + 1 (see vedforge.compat).
_PADDING_OFFSET_TYPES = tuple(t for t, f in FAMILIES.items() if f.position_offset)

_POSITIONS_NOTE = """
The decoder is a {model_type} model. PyTorch numbers its positions from `pad_token_id + 1`, as it
was pretrained; so does `vedforge.compat.FlaxVisionEncoderDecoderModel`, and these weights give
that model's logits. transformers' stock Flax class numbers them from 0: a model fine-tuned with
the stock class learned shifted positions and computes slightly differently here.
"""

_MISSING_NOTE = """
The source directory had no {what}; copy one in (`{how}`) before using `pipeline("image-to-text")`.
"""


def render_conversion_card(manifest: dict[str, Any]) -> str:
    """A Hugging Face model card for a converted directory: where it came from and how to load it."""
    conversion = manifest["conversion"]
    counts = manifest["parameters"]
    enc, dec = manifest["encoder_model_type"], manifest["decoder_model_type"]
    fix = "from vedforge import torch_compat\ntorch_compat.install()\n" if manifest["needs_torch_compat"] else ""
    notes = ""
    if manifest["needs_torch_compat"]:
        # Imported here: the forge's card module brings the recipe schema, which most conversions never need.
        from vedforge.architectures.cross_attention.card import _TORCH_COMPAT_NOTE, _torch_compat_why

        notes += _TORCH_COMPAT_NOTE.format(model_type=enc, why=_torch_compat_why(enc))
    if dec in _PADDING_OFFSET_TYPES:
        notes += _POSITIONS_NOTE.format(model_type=dec)
    if not conversion["tokenizer"]:
        notes += _MISSING_NOTE.format(what="tokenizer", how="AutoTokenizer...save_pretrained(this_dir)")
    if not conversion["image_processor"]:
        notes += _MISSING_NOTE.format(what="image processor", how="AutoImageProcessor...save_pretrained(this_dir)")
    forge = conversion.get("source_forge") or {}
    origin = ""
    if forge.get("inputs"):
        parts = forge["inputs"]
        origin = (f" The source was forged by vedforge from `{parts['encoder']['name_or_path']}` and "
                  f"`{parts['decoder']['name_or_path']}`; its recipe is kept in `vedforge_manifest.json` "
                  "(`conversion.source_forge`).")
    generation = ("derived from `config.json`, as transformers does for a checkpoint without one"
                  if conversion["generation_config"].startswith("derived") else "copied from the source")
    rows = "\n".join(f"| {k} | {v:,} |" for k, v in counts.items())
    return f"""---
library_name: transformers
pipeline_tag: image-to-text
tags:
- vision-encoder-decoder
- vedforge
---

# {enc} + {dec} vision-encoder-decoder (PyTorch)

Converted by `vedforge convert` {manifest['versions']['vedforge']} from the Flax checkpoint
`{conversion['source']}` ({conversion['source_layout']}: {', '.join(conversion['source_weights'])}).{origin}
Every tensor is the source's, renamed and laid out for PyTorch (`{manifest['dtype'] or 'mixed dtypes'}`).
The generation config is {generation}.

## Load

PyTorch (`model.safetensors`, transformers 4 and 5):

```python
{fix}from transformers import VisionEncoderDecoderModel, pipeline

model = VisionEncoderDecoderModel.from_pretrained("path/to/this/dir")
captioner = pipeline("image-to-text", model="path/to/this/dir")
```
{notes}
## Parameters

| part | parameters |
|---|---|
{rows}
"""
