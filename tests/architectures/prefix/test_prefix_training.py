"""A forged prefix (LLaVA-style) model goes into transformers' Trainer unchanged: with the labels of
the image and prompt tokens masked (-100), a few steps make the loss fall, and the trained model
saves and reloads."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_prefix import _image, _load, prefix_recipe  # noqa: E402
from vedforge.pipeline.runner import forge  # noqa: E402

CAPTIONS = ["a dog on the beach", "two cats on a wooden bench", "a man riding a bike", "a bird over the lake"]


def _examples(processor) -> list[dict]:
    """One chat per image: the user's image and question (masked), the assistant's caption (learned)."""
    examples = []
    for i, caption in enumerate(CAPTIONS):
        user = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
        prompt = processor.apply_chat_template(user, add_generation_prompt=True)
        full = processor.apply_chat_template(user + [{"role": "assistant", "content": [{"type": "text", "text": caption}]}])
        image = _image(i)
        prompt_ids = processor(images=image, text=prompt, return_tensors="pt")["input_ids"][0]
        encoded = processor(images=image, text=full, return_tensors="pt")
        input_ids = encoded["input_ids"][0]
        assert torch.equal(input_ids[: len(prompt_ids)], prompt_ids)
        labels = input_ids.clone()
        labels[: len(prompt_ids)] = -100  # the image tokens and the prompt
        examples.append({"input_ids": input_ids, "labels": labels, "pixel_values": encoded["pixel_values"][0]})
    return examples


def _collate(pad_id: int):
    def collate(batch: list[dict]) -> dict:
        width = max(len(b["input_ids"]) for b in batch)

        def pad(key, value):
            return torch.stack([torch.nn.functional.pad(b[key], (0, width - len(b[key])), value=value) for b in batch])

        return {"input_ids": pad("input_ids", pad_id), "labels": pad("labels", -100),
                "attention_mask": torch.stack([torch.nn.functional.pad(torch.ones(len(b["input_ids"]), dtype=torch.long),
                                                                       (0, width - len(b["input_ids"]))) for b in batch]),
                "pixel_values": torch.stack([b["pixel_values"] for b in batch])}
    return collate


@pytest.mark.slow
def test_trainer_steps_make_the_loss_fall_and_the_model_saves_and_reloads(tmp_path):
    from transformers import LlavaForConditionalGeneration, Trainer, TrainingArguments

    out = forge(prefix_recipe(tmp_path / "forged")).output_dir
    model, processor = _load(out)
    examples = _examples(processor)
    collate = _collate(processor.tokenizer.pad_token_id)
    batch = collate(examples)
    assert (batch["labels"][batch["input_ids"] == model.config.image_token_id] == -100).all()

    def loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(model(**batch).loss)

    before = loss()
    torch.manual_seed(0)
    args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=20, learning_rate=5e-3, per_device_train_batch_size=4,
                             report_to=[], save_strategy="no", logging_steps=5, use_cpu=True, disable_tqdm=True,
                             remove_unused_columns=False, dataloader_num_workers=0)
    Trainer(model=model, args=args, train_dataset=examples, data_collator=collate).train()
    after = loss()
    assert np.isfinite(after) and after < 0.7 * before, (before, after)

    model.save_pretrained(tmp_path / "trained")
    processor.save_pretrained(tmp_path / "trained")
    reloaded, info = LlavaForConditionalGeneration.from_pretrained(tmp_path / "trained", output_loading_info=True)
    assert {k: v for k, v in info.items() if v} == {}
    reloaded.eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, model(**batch).logits, atol=1e-5)
