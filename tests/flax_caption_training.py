"""A short Flax captioning fine-tune, written as a user's script would be: stock transformers
classes, optax, the model's own ``dropout_rng``/``train=True`` path. The tests run it unchanged
with ``python -m vedforge.compat flax_caption_training.py MODEL OUT``; it prints one JSON line.

It trains on eight drawn images (red squares, blue circles), masking the loss by the attention
mask, then generates, saves with ``save_pretrained`` and reloads.
"""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image, ImageDraw
from transformers import AutoImageProcessor, AutoTokenizer, FlaxVisionEncoderDecoderModel

CAPTIONS = {"red": "a red square", "blue": "a blue circle"}


def images() -> tuple[list[Image.Image], list[str]]:
    pictures, captions = [], []
    for i in range(8):
        colour = "red" if i % 2 == 0 else "blue"
        image = Image.new("RGB", (48, 48), (245, 245, 245))
        draw = ImageDraw.Draw(image)
        box = (8 + i % 3, 8 + i % 4, 40 - i % 3, 40 - i % 2)
        if colour == "red":
            draw.rectangle(box, fill=(220, 20, 20))
        else:
            draw.ellipse(box, fill=(20, 40, 220))
        pictures.append(image)
        captions.append(CAPTIONS[colour])
    return pictures, captions


def batch(model, tokenizer, processor, length: int = 8) -> dict[str, np.ndarray]:
    pictures, captions = images()
    pixels = processor(pictures, return_tensors="np").pixel_values
    config = model.config
    labels = np.full((len(captions), length), config.pad_token_id, dtype=np.int32)
    mask = np.zeros_like(labels)
    for row, caption in enumerate(captions):
        ids = tokenizer(caption, add_special_tokens=False).input_ids[: length - 1] + [tokenizer.eos_token_id]
        labels[row, : len(ids)] = ids
        mask[row, : len(ids)] = 1
    decoder_input_ids = np.concatenate(
        [np.full((len(captions), 1), config.decoder_start_token_id, dtype=np.int32), labels[:, :-1]], axis=1)
    return {"pixel_values": pixels, "decoder_input_ids": decoder_input_ids, "labels": labels, "mask": mask}


def main(model_dir: str, out_dir: str, steps: int = 12) -> dict:
    model = FlaxVisionEncoderDecoderModel.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    processor = AutoImageProcessor.from_pretrained(model_dir)
    data = batch(model, tokenizer, processor)
    optimizer = optax.adamw(3e-3)

    def loss_fn(params, rng):
        logits = model(data["pixel_values"], decoder_input_ids=data["decoder_input_ids"], params=params,
                       dropout_rng=rng, train=True).logits
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, data["labels"])
        return (loss * data["mask"]).sum() / data["mask"].sum()

    @jax.jit
    def step(params, opt_state, rng):
        loss, grads = jax.value_and_grad(loss_fn)(params, rng)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    params, opt_state, rng = model.params, optimizer.init(model.params), jax.random.PRNGKey(0)
    losses = []
    for _ in range(steps):
        rng, dropout_rng = jax.random.split(rng)
        params, opt_state, loss = step(params, opt_state, dropout_rng)
        losses.append(float(loss))
    model.params = params
    pixels = data["pixel_values"][:2]
    generated = np.asarray(model.generate(pixels, max_length=6).sequences)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    reloaded = FlaxVisionEncoderDecoderModel.from_pretrained(out_dir)
    again = np.asarray(reloaded.generate(pixels, max_length=6).sequences)
    same_params = all(bool(jnp.array_equal(a, b)) for a, b in zip(
        jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(reloaded.params)))
    return {
        "losses": losses,
        "generated": generated.tolist(),
        "generated_after_reload": again.tolist(),
        "reloaded_params_equal": same_params,
        "decoder_start": model.config.decoder_start_token_id,
        "vocab_size": model.config.decoder.vocab_size,
        "module_class": f"{type(model.module).__module__}.{type(model.module).__name__}",
        "captions": tokenizer.batch_decode(generated, skip_special_tokens=True),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
