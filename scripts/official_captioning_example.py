"""Train every Flax pairing vedforge forges with transformers' official image-captioning example.

transformers' ``examples/flax/image-captioning/run_image_captioning_flax.py`` (tag v4.57.6) is
not part of the transformers wheel or sdist, so fetch it yourself, e.g.

    curl -LO https://raw.githubusercontent.com/huggingface/transformers/v4.57.6/examples/flax/image-captioning/run_image_captioning_flax.py
    pip install optax "datasets<5.1" evaluate nltk rouge_score
    python scripts/official_captioning_example.py --script run_image_captioning_flax.py --workdir /tmp/captioning

For each encoder x decoder (the embedded tiny models, forged with default options by the
``vedforge`` command) it runs, offline and unchanged apart from the shims below,

    python -m vedforge.compat <patched copy of the script> --model_name_or_path <forge> \\
        --do_train --do_eval --predict_with_generate ...

on a 40-image dataset drawn here with PIL, and reports the training loss at the first and last
step, whether evaluation with generate ran, and whether the checkpoint was saved.

The script as published does not run on transformers 4.57 whatever model it gets; the copy
gets exactly these shims, each a plain text replacement that must match once:

1. ``send_example_telemetry`` no longer exists in ``transformers.utils``: imported from
   nowhere, replaced by a no-op.
2. Inside ``main()`` a nested ``def evaluate(...)`` shadows the ``evaluate`` module, so
   ``evaluate.load("rouge")`` raises UnboundLocalError: the module is bound to a second name.
3. Offline, ``evaluate.load("rouge")`` cannot fetch the metric script from the hub: a local
   metric module (``rouge_metric/rouge_metric.py``, written here, on ``rouge_score``) is loaded.
4. Current ROUGE returns plain floats, not aggregates with ``.mid.fmeasure`` holding numpy
   values (the script later calls ``.item()`` on them): they are wrapped in ``np.float64``.
5. Offline, nltk cannot download ``punkt``: ``NLTK_DATA`` points at a directory with an empty
   ``punkt`` folder (what the script checks for) and empty ``punkt_tab`` English tables
   (a Punkt splitter with no learned abbreviations; it still splits at full stops).

Nothing else changes; in particular the script's training step passes only a ``dropout`` RNG
and it loads the model with ``transformers.FlaxVisionEncoderDecoderModel``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ENCODERS = ("vit", "beit", "dinov2", "clip_vision")
DECODERS = ("gpt2", "bert", "roberta", "bart")

SHIMS = [
    ("from transformers.utils import is_offline_mode, send_example_telemetry",
     "from transformers.utils import is_offline_mode\n\n\ndef send_example_telemetry(*args, **kwargs):\n    pass"),
    ("import evaluate\n", "import evaluate\nimport evaluate as evaluate_module\n"),
    ('metric = evaluate.load("rouge", cache_dir=model_args.cache_dir)',
     'metric = evaluate_module.load(os.environ["ROUGE_METRIC_DIR"], cache_dir=model_args.cache_dir)'),
    ("result = {key: value.mid.fmeasure * 100 for key, value in result.items()}",
     "result = {key: np.float64(value) * 100 for key, value in result.items()}"),
]

ROUGE_METRIC = '''"""ROUGE on rouge_score, as an evaluate metric module that needs no hub."""
import datasets
import evaluate
from rouge_score import rouge_scorer, scoring


class RougeMetric(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="ROUGE", citation="", inputs_description="",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}))

    def _compute(self, predictions, references, rouge_types=None, use_stemmer=False):
        rouge_types = rouge_types or ["rouge1", "rouge2", "rougeL", "rougeLsum"]
        scorer = rouge_scorer.RougeScorer(rouge_types=rouge_types, use_stemmer=use_stemmer)
        aggregator = scoring.BootstrapAggregator()
        for ref, pred in zip(references, predictions):
            aggregator.add_scores(scorer.score(ref, pred))
        result = aggregator.aggregate()
        return {key: float(value.mid.fmeasure) for key, value in result.items()}
'''

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (240, 220, 40)}
SHAPES = ("square", "circle", "triangle")
BACKGROUNDS = {"white": (250, 250, 250), "black": (10, 10, 10)}


def make_dataset(root: Path, count: int = 40) -> tuple[Path, Path]:
    """``count`` images of coloured shapes with their captions; train and validation JSON lines."""
    from PIL import Image, ImageDraw

    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        colour = list(COLOURS)[i % len(COLOURS)]
        shape = SHAPES[(i // len(COLOURS)) % len(SHAPES)]
        background = list(BACKGROUNDS)[(i // (len(COLOURS) * len(SHAPES))) % len(BACKGROUNDS)]
        image = Image.new("RGB", (64, 64), BACKGROUNDS[background])
        draw = ImageDraw.Draw(image)
        box = (12 + i % 5, 12 + i % 3, 52 - i % 4, 52 - i % 2)
        if shape == "square":
            draw.rectangle(box, fill=COLOURS[colour])
        elif shape == "circle":
            draw.ellipse(box, fill=COLOURS[colour])
        else:
            draw.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])], fill=COLOURS[colour])
        path = images / f"{i:03d}.png"
        image.save(path)
        rows.append({"image_path": str(path), "caption": f"a {colour} {shape} on a {background} background"})
    train, validation = root / "train.json", root / "validation.json"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows[:32]))
    validation.write_text("".join(json.dumps(r) + "\n" for r in rows[32:]))
    return train, validation


def patch_script(script: Path, dest: Path) -> Path:
    """A copy of the official script with exactly the SHIMS applied; refuses a script they do not fit."""
    text = script.read_text()
    for old, new in SHIMS:
        if text.count(old) != 1:
            raise SystemExit(f"{script} is not the v4.57 example this was written for: {old!r} occurs "
                             f"{text.count(old)} times, expected once.")
        text = text.replace(old, new)
    dest.write_text(text)
    return dest


def offline_data(root: Path) -> dict[str, str]:
    """NLTK data and the ROUGE metric module the script needs, offline."""
    nltk_data = root / "nltk_data"
    (nltk_data / "tokenizers" / "punkt").mkdir(parents=True, exist_ok=True)
    tables = nltk_data / "tokenizers" / "punkt_tab" / "english"
    tables.mkdir(parents=True, exist_ok=True)
    for name in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
        (tables / name).touch()
    metric = root / "rouge_metric"
    metric.mkdir(exist_ok=True)
    (metric / "rouge_metric.py").write_text(ROUGE_METRIC)
    return {"NLTK_DATA": str(nltk_data), "ROUGE_METRIC_DIR": str(metric)}


def run_pairing(encoder: str, decoder: str, script: Path, data: tuple[Path, Path], root: Path, env: dict[str, str],
                epochs: int, learning_rate: float, forge_overrides: list[str]) -> dict:
    """Forge one pairing with the vedforge command, train it with the example; the measured row."""
    pair = f"{encoder}__{decoder}"
    model, out = root / "forges" / pair, root / "runs" / pair
    for stale in (model, out):  # the script appends to its log; a forge would be skipped as complete
        shutil.rmtree(stale, ignore_errors=True)
    forge = subprocess.run(
        [sys.executable, "-m", "vedforge", f"encoder={encoder}_tiny", f"decoder={decoder}_tiny", f"output.dir={model}",
         *forge_overrides], env=env, capture_output=True, text=True)
    row: dict = {"pair": pair, "forged": forge.returncode == 0}
    if forge.returncode != 0:
        return {**row, "error": forge.stderr.strip()[-500:]}
    train, validation = data
    started = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "vedforge.compat", str(script), "--model_name_or_path", str(model),
         "--train_file", str(train), "--validation_file", str(validation), "--image_column", "image_path",
         "--caption_column", "caption", "--output_dir", str(out), "--overwrite_output_dir", "--do_train", "--do_eval",
         "--predict_with_generate", "--num_train_epochs", str(epochs), "--per_device_train_batch_size", "8",
         "--per_device_eval_batch_size", "8", "--learning_rate", str(learning_rate), "--logging_steps", "1",
         "--max_target_length", "16", "--num_beams", "1", "--seed", "0"],
        env=env, capture_output=True, text=True, cwd=root)
    row["wall_s"] = round(time.perf_counter() - started, 1)
    row["exit"] = run.returncode
    log = (out / "log").read_text() if (out / "log").is_file() else ""
    losses = [float(m) for m in re.findall(r"Step: \d+ \| Loss: ([0-9.eE+-]+) \|", log)]
    evals = sorted(out.glob("ckpt_epoch_*/eval_results.json"), key=lambda p: int(p.parent.name.rsplit("_", 1)[1]))
    last_ckpt = evals[-1].parent if evals else None
    row.update({
        "steps": len(losses),
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "loss_fell": bool(losses) and losses[-1] < losses[0],
        "eval_ran": bool(evals),
        "eval": json.loads(evals[-1].read_text()) if evals else None,
        "generations": json.loads((last_ckpt / "eval_generation.json").read_text())[:2]
        if last_ckpt and (last_ckpt / "eval_generation.json").is_file() else None,
        "checkpoint_saved": bool(last_ckpt) and (last_ckpt / "flax_model.msgpack").is_file(),
    })
    if run.returncode != 0:
        row["error"] = run.stderr.strip()[-1500:]
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--script", type=Path, required=True, help="run_image_captioning_flax.py of transformers v4.57.6")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--encoders", default=",".join(ENCODERS))
    parser.add_argument("--decoders", default=",".join(DECODERS))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--forge-override", action="append", default=[], help="extra vedforge override, repeatable")
    args = parser.parse_args()
    root = args.workdir.absolute()
    root.mkdir(parents=True, exist_ok=True)
    script = patch_script(args.script, root / "run_image_captioning_flax.py")
    data = make_dataset(root / "data")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HOME": str(root / "hf_home"), "JAX_PLATFORMS": "cpu", **offline_data(root)}
    rows = []
    for encoder in args.encoders.split(","):
        for decoder in args.decoders.split(","):
            row = run_pairing(encoder, decoder, script, data, root, env, args.epochs, args.learning_rate,
                              args.forge_override)
            rows.append(row)
            print(json.dumps({k: row.get(k) for k in ("pair", "exit", "steps", "loss_first", "loss_last",
                                                      "eval_ran", "checkpoint_saved", "wall_s")}), flush=True)
            if row.get("error"):
                print(row["error"], file=sys.stderr, flush=True)
    (root / "results.json").write_text(json.dumps(rows, indent=2))
    ok = [r for r in rows if r.get("exit") == 0 and r["loss_fell"] and r["eval_ran"] and r["checkpoint_saved"]]
    print(f"{len(ok)} of {len(rows)} pairings trained (loss fell), evaluated with generate and saved a checkpoint; "
          f"results in {root / 'results.json'}")
    return 0 if len(ok) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
