"""The model card (README.md) of a prefix (LLaVA-style) forge."""

from __future__ import annotations

from typing import Any

_USAGE = '''```python
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration

model = LlavaForConditionalGeneration.from_pretrained("path/to/this/dir")
processor = AutoProcessor.from_pretrained("path/to/this/dir")
messages = [{{"role": "user", "content": [{{"type": "image"}}, {{"type": "text", "text": "Describe the image."}}]}}]
prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
inputs = processor(images=Image.open("photo.jpg"), text=prompt, return_tensors="pt")
output = model.generate(**inputs, max_new_tokens=30)
print(processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```

Or `pipeline("image-text-to-text", model="path/to/this/dir")`. For training, mask the labels of the
image and prompt tokens with -100 (`labels[input_ids == {image}] = -100`, and the prompt's tokens), so
the loss counts the answer only.'''

_TEMPLATE_NOTE = {
    "default": ("The language model has no chat template of its own, so the processor has vedforge's default: "
                "LLaVA-1.5's `USER: <image>\\n... ASSISTANT:` layout (an assistant turn ends with eos)."),
}


def render_prefix_card(*, manifest: dict[str, Any], recipe_yaml: str) -> str:
    """A Hugging Face model card: the pairing, what is new, how to load and prompt it, the recipe."""
    enc, dec = manifest["inputs"]["encoder"], manifest["inputs"]["decoder"]
    prefix, ids, counts = manifest["prefix"], manifest["token_ids"], manifest["parameters"]
    base_models = [s["name_or_path"] for s in (enc, dec) if s["kind"] == "hub"]
    front = ["---", "library_name: transformers", "pipeline_tag: image-text-to-text", "tags:", "- llava", "- vedforge"]
    if base_models:
        front += ["base_model:"] + [f"- {m}" for m in base_models]
    front.append("---")
    rows = "\n".join(f"| {k} | {v:,} |" for k, v in counts.items())
    grown = manifest.get("resized_tensors", {}).get("decoder", {})
    grown_text = ", ".join(f"`{name}` {old:,} -> {new:,} rows" for name, (old, new) in grown.items()) or "none"
    template = _TEMPLATE_NOTE.get(prefix["chat_template"],
                                  "The processor's chat template is the language model's own, extended so that image "
                                  "items in a message's content become the `<image>` token.")
    return "\n".join(front) + f"""

# {enc['model_type']} + {dec['model_type']} (LLaVA-style, `LlavaForConditionalGeneration`)

Forged by vedforge {manifest['versions']['vedforge']} from a vision tower (`{enc['name_or_path']}`,
{enc['weights']} weights) and a language model (`{dec['name_or_path']}`, {dec['weights']} weights).
The tower's hidden state {prefix['vision_feature_layer']} (strategy `{prefix['vision_feature_select_strategy']}`:
{'its CLS token dropped' if prefix['vision_feature_select_strategy'] == 'default' else 'every token kept'}) goes through a
new `{prefix['projector']}` projector (seed {manifest['seed']}) into the language model's input, at the
{prefix['image_seq_length']} `<image>` tokens (id {prefix['image_token_index']}) the processor puts in for each
image. The projector is untrained: train it (LLaVA's stage 1 trains the projector alone) before use.

## Load and prompt

{_USAGE.format(image=prefix['image_token_index'])}

{template}

## What is new

- Projector: {', '.join(f'`{n}`' for n in manifest['new_tensors'].get('projector', []))}.
- Tokens added to the tokenizer: {', '.join(f'`{t}`' for t in ids['added_tokens']) or 'none'}; vocabulary
  {ids['old_vocab_size']:,} -> {ids['vocab_size']:,} rows ({grown_text}; new rows drawn as transformers'
  `resize_token_embeddings` draws them). Every other tensor is the checkpoints' own, bit for bit, in
  their dtype ({prefix['dtype']} for the language model).
- Special tokens: image {ids['image']}, pad {ids['pad']}, eos {ids['eos']}, bos {ids['bos']}.

## Parameters

| part | parameters |
|---|---|
{rows}

## Recipe

```yaml
{recipe_yaml.rstrip()}
```
"""
