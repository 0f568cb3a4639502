"""Load PyTorch forges and converted directories with transformers 5 (no Flax classes); generate from each.

A prefix forge (architecture=prefix, model type llava) is loaded with LlavaForConditionalGeneration
and AutoProcessor, prompted through the processor's chat template with an image, and generates.

Run it in an environment with torch and transformers>=5 but without vedforge:

    python scripts/load_with_transformers5.py DIR[=REFERENCE.npz] [DIR ...]

Exits non-zero when a directory leaves any tensor missing, unexpected or mismatched, or
when generate() fails. With a REFERENCE (scripts/flax_reference_logits.py, run on the Flax
checkpoint DIR was converted from), the logits must also be within 1e-4 of the Flax model's.
"""

from __future__ import annotations

import sys

import numpy as np
import transformers
from PIL import Image
from transformers import AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel


def check_logits(model, directory: str, reference: str) -> None:
    import torch

    expected = np.load(reference)
    with torch.no_grad():
        logits = model(pixel_values=torch.from_numpy(expected["pixel_values"]),
                       decoder_input_ids=torch.from_numpy(expected["decoder_input_ids"])).logits.numpy()
    difference = float(np.abs(logits - expected["logits"]).max())
    if difference > 1e-4:
        raise SystemExit(f"{directory}: logits differ from the Flax model's by up to {difference:.2e}")
    print(f"ok  transformers {transformers.__version__}  {directory}  logits within {difference:.1e} of the Flax model's")


def check_llava(directory: str) -> None:
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model, info = LlavaForConditionalGeneration.from_pretrained(directory, output_loading_info=True)
    problems = {kind: names for kind, names in info.items() if names}
    if problems:
        raise SystemExit(f"{directory}: {problems}")
    processor = AutoProcessor.from_pretrained(directory)
    image = Image.fromarray((np.random.RandomState(0).rand(48, 40, 3) * 255).astype(np.uint8))
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "Describe it."}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    if image_tokens != model.config.image_seq_length:
        raise SystemExit(f"{directory}: the prompt holds {image_tokens} image tokens, the config says {model.config.image_seq_length}")
    tokens = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    new = tokens[0, inputs["input_ids"].shape[1]:]
    if len(new) == 0:
        raise SystemExit(f"{directory}: generate() added no token")
    print(f"ok  transformers {transformers.__version__}  {directory}  llava, {image_tokens} image tokens, "
          f"{new.tolist()} {processor.decode(new)!r}")


def check(directory: str, reference: str | None = None) -> None:
    import json
    from pathlib import Path

    if json.loads((Path(directory) / "config.json").read_text()).get("model_type") == "llava":
        check_llava(directory)
        return
    model, info = VisionEncoderDecoderModel.from_pretrained(directory, output_loading_info=True)
    problems = {kind: names for kind, names in info.items() if names}
    if problems:
        raise SystemExit(f"{directory}: {problems}")
    processor, tokenizer = AutoImageProcessor.from_pretrained(directory), AutoTokenizer.from_pretrained(directory)
    image = Image.fromarray((np.random.RandomState(0).rand(48, 40, 3) * 255).astype(np.uint8))
    tokens = model.generate(processor(image, return_tensors="pt").pixel_values, max_new_tokens=5)
    if tokens[0, 0].item() != model.config.decoder_start_token_id:
        raise SystemExit(f"{directory}: generation did not start with decoder_start_token_id")
    print(f"ok  transformers {transformers.__version__}  {directory}  {tokens[0].tolist()} {tokenizer.decode(tokens[0])!r}")
    if reference:
        check_logits(model.eval(), directory, reference)


if __name__ == "__main__":
    if int(transformers.__version__.split(".")[0]) < 5:
        raise SystemExit(f"this check is for transformers 5; found {transformers.__version__}")
    for argument in sys.argv[1:]:
        path, _, reference = argument.partition("=")
        check(path, reference or None)
