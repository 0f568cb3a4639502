"""Save a Flax vision-encoder-decoder model's logits for a fixed input, with that input, so that
scripts/load_with_transformers5.py can check a PyTorch conversion against them.

Run it where vedforge is installed:

    python scripts/flax_reference_logits.py FLAX_DIR REFERENCE.npz
"""

from __future__ import annotations

import sys

import numpy as np

from vedforge.compat import FlaxVisionEncoderDecoderModel


def main(directory: str, out: str) -> None:
    model = FlaxVisionEncoderDecoderModel.from_pretrained(directory)
    config = model.config
    size = config.encoder.image_size
    pixel_values = np.random.RandomState(0).rand(2, 3, size, size).astype(np.float32)
    decoder_input_ids = np.array([[config.decoder_start_token_id, 5, 9, 3, 17, 11]] * 2)
    logits = np.asarray(model(pixel_values=pixel_values, decoder_input_ids=decoder_input_ids).logits)
    np.savez(out, pixel_values=pixel_values, decoder_input_ids=decoder_input_ids, logits=logits)


if __name__ == "__main__":
    main(*sys.argv[1:3])
