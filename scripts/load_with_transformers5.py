"""Load PyTorch forges and converted directories with transformers 5 (no Flax classes); generate from each.

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


def check(directory: str, reference: str | None = None) -> None:
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
