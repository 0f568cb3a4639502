"""Forged models go unchanged into the clients people train them with.

* Flax: the ``vedforge`` command forges; an ordinary optax script (flax_caption_training.py, stock
  transformers classes) runs under ``python -m vedforge.compat``; the loss falls; it generates,
  saves and reloads. Every decoder family, and BEiT with its drop path (rate 0.1).
* PyTorch: a ``backend=pt`` forge goes through ``Seq2SeqTrainer`` with the usual pad -> -100
  label masking: the loss falls, transformers warns about no token, and
  ``pipeline("image-to-text")`` captions with the saved model.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests_support import run_cli

TESTS = Path(__file__).resolve().parents[1]  # tests/, where the training script lives


def _forge_cli(tmp_path: Path, *overrides: str) -> Path:
    out = tmp_path / "model"
    result = run_cli(f"output.dir={out}", *overrides, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return out


def _train_flax(tmp_path: Path, encoder: str, decoder: str) -> dict:
    model = _forge_cli(tmp_path, f"encoder={encoder}_tiny", f"decoder={decoder}_tiny")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu", "USE_TORCH": "0"}
    run = subprocess.run(
        [sys.executable, "-m", "vedforge.compat", str(TESTS / "flax_caption_training.py"), str(model),
         str(tmp_path / "trained")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    losses = result["losses"]
    assert all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0], losses
    assert result["module_class"] == "vedforge.compat.FlaxVisionEncoderDecoderModule"
    generated = np.asarray(result["generated"])
    assert generated.shape[0] == 2 and generated.shape[1] > 1
    assert (generated[:, 0] == result["decoder_start"]).all() and (generated < result["vocab_size"]).all()
    assert result["generated_after_reload"] == result["generated"] and result["reloaded_params_equal"]
    assert (tmp_path / "trained" / "flax_model.msgpack").is_file()
    return result


@pytest.mark.slow  # a Flax training script run end to end, ~25 s
def test_beit_bert_trains_in_an_unchanged_flax_script(tmp_path):
    """The hardest pairing in the default suite: BEiT's drop path (rate 0.1), BERT's keyword
    decode and its [SEP] eos, all through an ordinary optax loop."""
    _train_flax(tmp_path, "beit", "bert")


@pytest.mark.slow
@pytest.mark.parametrize("decoder", ["gpt2", "bert", "roberta", "bart"])
def test_each_decoder_family_trains_in_an_unchanged_flax_script(tmp_path, decoder):
    _train_flax(tmp_path, "vit", decoder)


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["dinov2", "clip_vision"])
def test_other_encoders_train_in_an_unchanged_flax_script(tmp_path, encoder):
    _train_flax(tmp_path, encoder, "gpt2")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _pictures():
    from PIL import Image, ImageDraw

    pictures, captions = [], []
    for i in range(8):
        red = i % 2 == 0
        image = Image.new("RGB", (48, 48), (245, 245, 245))
        draw = ImageDraw.Draw(image)
        box = (8 + i % 3, 8 + i % 4, 40 - i % 3, 40 - i % 2)
        (draw.rectangle if red else draw.ellipse)(box, fill=(220, 20, 20) if red else (20, 40, 220))
        pictures.append(image)
        captions.append("a red square" if red else "a blue circle")
    return pictures, captions


def _seq2seq_trainer_run(tmp_path: Path, decoder: str, *overrides: str) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("accelerate")
    import transformers
    from transformers import (AutoImageProcessor, AutoTokenizer, Seq2SeqTrainer, Seq2SeqTrainingArguments,
                              VisionEncoderDecoderModel, default_data_collator, pipeline)

    model_dir = _forge_cli(tmp_path, "backend=pt", f"decoder={decoder}_tiny", *overrides)
    model = VisionEncoderDecoderModel.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    processor = AutoImageProcessor.from_pretrained(model_dir)
    pictures, captions = _pictures()
    pixels = processor(pictures, return_tensors="pt").pixel_values
    # The recipe every Seq2SeqTrainer captioning tutorial uses: caption + eos, padded, pad -> -100.
    labels = tokenizer([c + tokenizer.eos_token for c in captions], padding="max_length", max_length=8,
                       truncation=True, add_special_tokens=False, return_tensors="pt").input_ids
    labels[labels == tokenizer.pad_token_id] = -100
    dataset = [{"pixel_values": p, "labels": l} for p, l in zip(pixels, labels)]

    records = _Records()
    hf_logger = transformers.utils.logging.get_logger("transformers")
    hf_logger.addHandler(records)
    transformers.utils.logging.set_verbosity_warning()
    try:
        args = Seq2SeqTrainingArguments(
            output_dir=str(tmp_path / "run"), per_device_train_batch_size=4, learning_rate=5e-3, max_steps=16, lr_scheduler_type="constant",
            logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0, disable_tqdm=True)
        trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                 data_collator=default_data_collator)
        trainer.train()
    finally:
        hf_logger.removeHandler(records)
        transformers.utils.logging.set_verbosity_error()
    assert not [m for m in records.messages if "differ from the model config" in m], records.messages
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert len(losses) == 16 and np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4]), losses

    trained = tmp_path / "trained"
    trainer.save_model(str(trained))
    processor.save_pretrained(trained)
    captioner = pipeline("image-to-text", model=str(trained), device="cpu")
    outputs = captioner(pictures[:2], generate_kwargs={"max_new_tokens": 6})
    texts = [o[0]["generated_text"] for o in outputs]
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    with torch.no_grad():
        generated = VisionEncoderDecoderModel.from_pretrained(trained).generate(pixels[:2], max_new_tokens=6)
    assert (generated[:, 0] == model.config.decoder_start_token_id).all()


def test_seq2seq_trainer_trains_a_pytorch_forge_without_token_warnings(tmp_path):
    _seq2seq_trainer_run(tmp_path, "gpt2", "token_policy=add_pad")


@pytest.mark.slow
@pytest.mark.parametrize("decoder,policy", [("gpt2", "auto"), ("bert", "auto"), ("roberta", "auto"), ("bart", "auto")])
def test_seq2seq_trainer_each_decoder_family(tmp_path, decoder, policy):
    _seq2seq_trainer_run(tmp_path, decoder, f"token_policy={policy}")
