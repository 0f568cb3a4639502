"""The model card (README.md) written into every artifact directory."""

from __future__ import annotations

from typing import Any

_CLIP_NOTE = """
The encoder is CLIP's vision tower, which transformers 4.x does not register with
`FlaxAutoModel`. Register it before loading (vedforge's `vedforge.compat` does the same):

```python
from transformers import CLIPVisionConfig, FlaxAutoModel, FlaxCLIPVisionModel
FlaxAutoModel.register(CLIPVisionConfig, FlaxCLIPVisionModel)
```
"""

_KEYWORD_NOTE = """
The decoder is a {model_type} model. transformers 4.x's `FlaxVisionEncoderDecoderModel.generate()`
passes the image features to it in the wrong position ("cannot reshape array"); load it with
vedforge's drop-in class, which calls the decoder by keyword:

```python
from vedforge.compat import FlaxVisionEncoderDecoderModel
```
"""


def render_model_card(*, manifest: dict[str, Any], recipe_yaml: str) -> str:
    """A Hugging Face model card describing the pairing, how to load it, and the recipe verbatim."""
    enc, dec = manifest["inputs"]["encoder"], manifest["inputs"]["decoder"]
    counts = manifest["parameters"]
    ids = manifest["token_ids"]
    base_models = [s["name_or_path"] for s in (enc, dec) if s["kind"] == "hub"]
    front = ["---", "library_name: transformers", "pipeline_tag: image-to-text",
             "tags:", "- vision-encoder-decoder", "- vedforge"]
    if base_models:
        front += ["base_model:"] + [f"- {m}" for m in base_models]
    front.append("---")
    loader = "vedforge.compat" if manifest["needs_compat"] else "transformers"
    notes = ""
    if enc["model_type"] in ("clip", "clip_vision_model"):
        notes += _CLIP_NOTE
    if manifest["needs_keyword_decode"]:
        notes += _KEYWORD_NOTE.format(model_type=dec["model_type"])
    rows = "\n".join(f"| {k} | {v:,} |" for k, v in counts.items())
    return "\n".join(front) + f"""

# {enc['model_type']} + {dec['model_type']} vision-encoder-decoder

Forged by vedforge {manifest['versions']['vedforge']} from a pretrained vision encoder
(`{enc['name_or_path']}`, {enc['weights']} weights) and a pretrained text decoder
(`{dec['name_or_path']}`, {dec['weights']} weights). The decoder's cross-attention
layers are new and untrained (seed {manifest['seed']}): fine-tune before use.

## Load

```python
from {loader} import FlaxVisionEncoderDecoderModel
from transformers import AutoImageProcessor, AutoTokenizer

model = FlaxVisionEncoderDecoderModel.from_pretrained("path/to/this/dir")
processor = AutoImageProcessor.from_pretrained("path/to/this/dir")
tokenizer = AutoTokenizer.from_pretrained("path/to/this/dir")
```
{notes}
## Parameters

| part | parameters |
|---|---|
{rows}

Special tokens: decoder start {ids['decoder_start']}, pad {ids['pad']}, eos {ids['eos']} (policy `{ids['policy']}`).

## Recipe

```yaml
{recipe_yaml.rstrip()}
```
"""
