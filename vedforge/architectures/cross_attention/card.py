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
vedforge's drop-in class, which calls the decoder by keyword (and numbers RoBERTa-family positions
from `pad_token_id + 1`, as PyTorch and pretraining do):

```python
from vedforge.compat import FlaxVisionEncoderDecoderModel
```
"""


_DROP_PATH_NOTE = """
The encoder is BEiT with stochastic depth (`drop_path_rate` {rate}). In training, transformers'
Flax BEiT asks for a PRNG stream named "droppath", which `FlaxVisionEncoderDecoderModel`
(`model(..., dropout_rng=rng, train=True)`) and most training loops never pass, so the first
step fails with `InvalidRngError`. `vedforge.compat` makes the drop path draw from the
"dropout" stream instead; the rate is left as the checkpoint has it.
"""

_TRAIN_NOTE = """
## Train

Run your training script unchanged, with vedforge's fixes installed for the process (as
`python -m cProfile` runs one), e.g. transformers' Flax image-captioning example:

```bash
python -m vedforge.compat run_image_captioning_flax.py --model_name_or_path path/to/this/dir --do_train --do_eval --predict_with_generate ...
```

In your own code, `import vedforge.compat; vedforge.compat.install()` before loading does the same.
"""

_PAD_IS_EOS_NOTE = """
**Padding is end-of-sequence here** (both id {eos}). The usual label preparation
that replaces padding with -100 (`labels[labels == tokenizer.pad_token_id] = -100`, as in
`Seq2SeqTrainer` captioning recipes) then masks every eos as well, so the model never learns to
end a caption and generates until `max_length`. Forge with `token_policy=add_pad` for a real pad
token (the decoder's vocabulary grows by one row), or mask labels by the attention mask, not by id.
"""

_TORCH_COMPAT_NOTE = """
The encoder is {model_type}, which transformers' PyTorch `VisionEncoderDecoderModel` cannot run
as is ({why}). `vedforge.torch_compat.install()` fixes transformers' class for the process (the
module needs only torch and transformers); `vedforge.torch_compat.VisionEncoderDecoderModel` is
the same fix as a drop-in class.
"""


def _family_flag(model_type: str, name: str) -> object:
    """An attribute of the family record of ``model_type`` (None for a type neither recorded nor derived in this process)."""
    from vedforge.families.roles import known_family

    family = known_family(model_type)
    return getattr(family, name) if family else None


def _torch_compat_why(model_type: str) -> str:
    return _family_flag(model_type, "torch_compat_fix") or ""


def _load_section(manifest: dict[str, Any]) -> str:
    layouts = manifest["weight_layouts"]
    blocks = []
    if "flax" in layouts:
        loader = "vedforge.compat" if manifest["needs_compat"] else "transformers"
        blocks.append(f"""```python
from {loader} import FlaxVisionEncoderDecoderModel
from transformers import AutoImageProcessor, AutoTokenizer

model = FlaxVisionEncoderDecoderModel.from_pretrained("path/to/this/dir")
processor = AutoImageProcessor.from_pretrained("path/to/this/dir")
tokenizer = AutoTokenizer.from_pretrained("path/to/this/dir")
```""")
    if "pytorch" in layouts:
        fix = "from vedforge import torch_compat\ntorch_compat.install()\n" if manifest.get("needs_torch_compat") else ""
        intro = "PyTorch (`model.safetensors`, transformers 4 and 5):\n\n" if "flax" in layouts else ""
        blocks.append(f"""{intro}```python
{fix}from transformers import VisionEncoderDecoderModel, pipeline

model = VisionEncoderDecoderModel.from_pretrained("path/to/this/dir")
captioner = pipeline("image-to-text", model="path/to/this/dir")
```""")
    return "\n\n".join(blocks)


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
    notes = ""
    has_flax = "flax" in manifest["weight_layouts"]  # the Flax notes are about Flax loading only
    if _family_flag(enc["model_type"], "needs_flax_registration") and has_flax:
        notes += _CLIP_NOTE
    if manifest["needs_keyword_decode"] and has_flax:
        notes += _KEYWORD_NOTE.format(model_type=dec["model_type"])
    drop_path = manifest.get("needs_drop_path_rng")
    if drop_path and has_flax:
        notes += _DROP_PATH_NOTE.format(rate=drop_path)
    if manifest["needs_compat"] and has_flax:
        notes += _TRAIN_NOTE
    if ids["pad"] == ids["eos"]:
        notes += _PAD_IS_EOS_NOTE.format(eos=ids["eos"])
    if manifest.get("needs_torch_compat"):
        notes += _TORCH_COMPAT_NOTE.format(model_type=enc["model_type"], why=_torch_compat_why(enc["model_type"]))
    rows = "\n".join(f"| {k} | {v:,} |" for k, v in counts.items())
    return "\n".join(front) + f"""

# {enc['model_type']} + {dec['model_type']} vision-encoder-decoder

Forged by vedforge {manifest['versions']['vedforge']} from a pretrained vision encoder
(`{enc['name_or_path']}`, {enc['weights']} weights) and a pretrained text decoder
(`{dec['name_or_path']}`, {dec['weights']} weights). The decoder's cross-attention
layers are new and untrained (seed {manifest['seed']}): fine-tune before use.

## Load

{_load_section(manifest)}
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
