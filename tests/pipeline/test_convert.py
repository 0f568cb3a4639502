"""``vedforge convert``: Flax forges and trained Flax checkpoints become PyTorch directories that
compute the Flax model's logits; bad sources end in one clear error and leave nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import FLAX, TRANSFORMERS_5, compose_recipe, needs_flax  # noqa: E402
from vedforge.pipeline.convert import convert  # noqa: E402
from vedforge.core.errors import CorruptCheckpointError, NotACheckpointError, OutputError, VedforgeError  # noqa: E402
from vedforge.pipeline.runner import forge  # noqa: E402

# One pair per decoder family, and every Flax encoder once.
ROUND_TRIPS = (("vit", "gpt2"), ("beit", "roberta"), ("dinov2", "bert"), ("clip_vision", "bart"))


def _forge(tmp_path: Path, encoder: str = "vit", decoder: str = "gpt2", *extra: str, name: str = "forge") -> Path:
    """A forge of the tiny pair; a Flax one unless ``extra`` says backend=pt. Without Flax
    classes (transformers 5) the Flax forge's files are made from a backend=pt forge of the
    same recipe (tests_support.flax_source_from_pytorch)."""
    if FLAX or "backend=pt" in extra:
        return forge(compose_recipe([f"encoder={encoder}_tiny", f"decoder={decoder}_tiny",
                                     f"output.dir={tmp_path / name}", *extra])).output_dir
    from tests_support import flax_source_from_pytorch

    options = dict(e.split("=", 1) for e in extra)
    pt = forge(compose_recipe([f"encoder={encoder}_tiny", f"decoder={decoder}_tiny", "backend=pt",
                               f"output.dir={tmp_path / (name + '_pt')}"])).output_dir
    return flax_source_from_pytorch(pt, tmp_path / name, fmt=options.get("output.format", "msgpack"),
                                    max_shard_size=options.get("output.max_shard_size", "5GB"),
                                    keep_pytorch=options.get("output.pytorch") == "true")


def _flax_model(directory: Path):
    from vedforge import compat

    return compat.FlaxVisionEncoderDecoderModel.from_pretrained(directory)


def _pt_model(directory: Path):
    from transformers import VisionEncoderDecoderModel

    model, info = VisionEncoderDecoderModel.from_pretrained(directory, output_loading_info=True)
    # Every tensor comes from the file: nothing missing, unexpected or reshaped, nothing left on meta.
    assert not any(info.values()), info
    assert not [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type == "meta"]
    return model.eval()


def _inputs(config, batch: int = 2):
    size = config.encoder.image_size
    pixels = np.random.RandomState(0).rand(batch, 3, size, size).astype(np.float32)
    ids = np.array([[config.decoder_start_token_id, 5, 9, 3, 17, 11]] * batch)
    return pixels, ids


def _assert_same_logits(flax_dir: Path, pt_dir: Path, params=None) -> None:
    """The PyTorch model computes the Flax model's logits; without Flax, it loads completely."""
    if not FLAX:
        _pt_model(pt_dir)
        return
    flax_model, pt_model = _flax_model(flax_dir), _pt_model(pt_dir)
    pixels, ids = _inputs(pt_model.config)
    expected = np.asarray(flax_model(pixel_values=pixels, decoder_input_ids=ids, params=params).logits)
    with torch.no_grad():
        got = pt_model(pixel_values=torch.from_numpy(pixels), decoder_input_ids=torch.from_numpy(ids)).logits.numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def _nothing_under(out: Path) -> None:
    assert not out.exists()
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


@pytest.mark.parametrize("encoder, decoder", ROUND_TRIPS)
def test_forge_round_trip_gives_the_flax_logits(tmp_path, encoder, decoder):
    from transformers import AutoImageProcessor, AutoTokenizer, GenerationConfig

    src = _forge(tmp_path, encoder, decoder)
    result = convert(src, tmp_path / "pt")
    out = result.output_dir
    assert (out / "model.safetensors").is_file() and not (out / "flax_model.msgpack").exists()
    _assert_same_logits(src, out)
    # Tokenizer, image processor and generation config come along and load.
    assert AutoTokenizer.from_pretrained(out).get_vocab() == AutoTokenizer.from_pretrained(src).get_vocab()
    assert AutoImageProcessor.from_pretrained(out).to_dict() == AutoImageProcessor.from_pretrained(src).to_dict()
    assert GenerationConfig.from_pretrained(out).to_dict() == GenerationConfig.from_pretrained(src).to_dict()
    manifest = json.loads((out / "vedforge_manifest.json").read_text())
    assert manifest["conversion"]["source"] == str(src)
    assert manifest["conversion"]["source_forge"]["recipe"]["decoder"]["name_or_path"] == f"builtin:{decoder}_tiny"
    assert set(manifest["files"]) >= {"model.safetensors", "config.json", "generation_config.json",
                                      "preprocessor_config.json", "tokenizer_config.json", "README.md"}
    from vedforge.pipeline.artifacts import altered_files

    assert list(altered_files(out, manifest["files"])) == []
    card = (out / "README.md").read_text()
    assert f"# {encoder if encoder != 'clip_vision' else 'clip_vision_model'} + {decoder}" in card
    assert ("pad_token_id + 1" in card) == (decoder == "roberta")


def test_conversion_writes_the_bytes_the_forge_writes_for_pytorch(tmp_path):
    src = _forge(tmp_path, "vit", "bert", "output.pytorch=true")
    out = convert(src, tmp_path / "pt").output_dir
    # Same conversion, same streaming writer: the very same file.
    assert (out / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()


def test_sharded_flax_input_and_sharded_pytorch_output(tmp_path):
    src = _forge(tmp_path, "vit", "bart", "output.max_shard_size=40KB")
    assert (src / "flax_model.msgpack.index.json").is_file() and not (src / "flax_model.msgpack").exists()
    out = convert(src, tmp_path / "pt", max_shard_size="60KB").output_dir
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and all((out / s).is_file() for s in shards) and not (out / "model.safetensors").exists()
    _assert_same_logits(src, out)


def test_flax_safetensors_input(tmp_path):
    src = _forge(tmp_path, "dinov2", "roberta", "output.format=safetensors")
    from vedforge.weights.checkpoint import safetensors_format

    assert safetensors_format(src / "model.safetensors") == "flax"
    out = convert(src, tmp_path / "pt").output_dir
    _assert_same_logits(src, out)


# --- a checkpoint a training run saved -------------------------------------------------------


def train_and_save(src: Path, dest: Path, *, steps: int = 6, **save_kwargs) -> tuple[list[float], dict]:
    """Fine-tune the Flax model in ``src`` for a few optax steps on a fixed batch (as a training
    script does: teacher forcing, dropout on, cross-entropy on shifted labels) and save it with
    ``save_pretrained(params=...)`` beside its tokenizer and image processor. Returns the losses
    and the trained parameters."""
    import jax
    import optax
    from transformers import AutoImageProcessor, AutoTokenizer

    model = _flax_model(src)
    tokenizer, processor = AutoTokenizer.from_pretrained(src), AutoImageProcessor.from_pretrained(src)
    images = [(np.random.RandomState(i).rand(40, 48, 3) * 255).astype(np.uint8) for i in range(2)]
    pixels = processor(images, return_tensors="np")["pixel_values"]
    labels = tokenizer(["a red square", "two cats on a mat"], padding="max_length", truncation=True, max_length=8,
                       return_tensors="np")["input_ids"]
    start = model.config.decoder_start_token_id
    decoder_input_ids = np.concatenate([np.full((2, 1), start), labels[:, :-1]], axis=1)
    optimizer = optax.adamw(1e-2)

    def loss_fn(params, rng):
        logits = model(pixel_values=pixels, decoder_input_ids=decoder_input_ids, params=params, dropout_rng=rng,
                       train=True).logits
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @jax.jit
    def step(params, opt_state, rng):
        loss, grads = jax.value_and_grad(loss_fn)(params, rng)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    params, rng = model.params, jax.random.PRNGKey(0)
    opt_state, losses = optimizer.init(params), []
    for _ in range(steps):
        rng, dropout = jax.random.split(rng)
        params, opt_state, loss = step(params, opt_state, dropout)
        losses.append(float(loss))
    params = jax.tree_util.tree_map(np.asarray, params)
    model.save_pretrained(dest, params=params, **save_kwargs)
    tokenizer.save_pretrained(dest)
    processor.save_pretrained(dest)
    return losses, params


@pytest.mark.parametrize("decoder", [
    "gpt2", "roberta",
    pytest.param("bert", marks=pytest.mark.slow), pytest.param("bart", marks=pytest.mark.slow),
])
@needs_flax
def test_checkpoint_a_training_loop_saved_converts(tmp_path, decoder):
    src = _forge(tmp_path, "vit", decoder)
    trained = tmp_path / "trained"
    losses, params = train_and_save(src, trained)
    assert losses[-1] < losses[0], losses
    # A training run's folder: no vedforge manifest, and maybe no generation config.
    assert not (trained / "vedforge_manifest.json").exists()
    (trained / "generation_config.json").unlink(missing_ok=True)
    out = convert(trained, tmp_path / "pt").output_dir
    _assert_same_logits(trained, out)
    # The trained weights, not the forge's, went across.
    from safetensors.numpy import load_file

    converted, before = load_file(out / "model.safetensors"), _flat(_flax_model(src).params)
    compared = [k for k in converted if k in before]
    assert len(compared) == len(converted)
    assert any(not np.array_equal(converted[k], before[k]) for k in compared)
    np.testing.assert_array_equal(converted[compared[0]], _flat(params)[compared[0]])
    manifest = json.loads((out / "vedforge_manifest.json").read_text())
    assert manifest["conversion"]["generation_config"] == "derived from config.json"
    assert manifest["conversion"]["source_forge"] is None
    from transformers import GenerationConfig

    generation = GenerationConfig.from_pretrained(out)
    model = _pt_model(out)
    assert generation.decoder_start_token_id == model.config.decoder_start_token_id
    pixels, _ = _inputs(model.config, batch=1)
    with torch.no_grad():
        tokens = model.generate(torch.from_numpy(pixels), max_new_tokens=4)
    assert tokens[0, 0].item() == model.config.decoder_start_token_id


def _flat(params) -> dict[str, np.ndarray]:
    """Flax parameters under the PyTorch names they convert to (weights only; enough to compare)."""
    from flax.traverse_util import flatten_dict

    from vedforge.weights.pytorch_layout import pytorch_name

    out = {}
    for path, value in flatten_dict(params).items():
        value = np.asarray(value)
        name, axes = pytorch_name(path, value.ndim, {})
        out[name] = np.transpose(value, axes) if axes else value
    return out


@needs_flax
def test_sharded_checkpoint_saved_by_transformers_converts(tmp_path):
    src = _forge(tmp_path, "vit", "gpt2")
    trained = tmp_path / "trained"
    train_and_save(src, trained, steps=2, max_shard_size="50KB")
    assert (trained / "flax_model.msgpack.index.json").is_file() and not (trained / "flax_model.msgpack").exists()
    out = convert(trained, tmp_path / "pt").output_dir
    _assert_same_logits(trained, out)


@needs_flax
def test_bfloat16_checkpoint_keeps_its_dtype(tmp_path):
    from safetensors.torch import load_file

    src = _forge(tmp_path, "vit", "gpt2")
    model = _flax_model(src)
    bf16_params = model.to_bf16(model.params)
    model.save_pretrained(tmp_path / "bf16", params=bf16_params)
    out = convert(tmp_path / "bf16", tmp_path / "pt").output_dir
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    tensors, expected = load_file(out / "model.safetensors"), _flat(bf16_params)
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}
    for name, tensor in tensors.items():
        np.testing.assert_array_equal(tensor.float().numpy(), np.asarray(expected[name], dtype=np.float32), err_msg=name)
    _pt_model(out)


# --- bad sources and outputs -----------------------------------------------------------------


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def test_not_a_checkpoint(tmp_path):
    from vedforge.core.resources import assets_dir

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(NotACheckpointError, match=r"has no config.json \(it holds: notes.txt\)"):
        convert(empty, tmp_path / "out")
    with pytest.raises(NotACheckpointError, match="model_type 'gpt2', not 'vision-encoder-decoder'"):
        convert(assets_dir() / "gpt2_tiny", tmp_path / "out")
    with pytest.raises(NotACheckpointError, match="does not exist"):
        convert(tmp_path / "nowhere", tmp_path / "out")
    pt_only = _forge(tmp_path, "vit", "gpt2", "backend=pt", name="pt_forge")
    with pytest.raises(NotACheckpointError, match="already a PyTorch checkpoint"):
        convert(pt_only, tmp_path / "out")
    no_weights = _copy(pt_only, tmp_path / "no_weights")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(NotACheckpointError, match="holds no Flax weights"):
        convert(no_weights, tmp_path / "out")
    _nothing_under(tmp_path / "out")


def test_weights_that_do_not_fit_the_config(tmp_path):
    src = _copy(_forge(tmp_path), tmp_path / "other_config")
    config = json.loads((src / "config.json").read_text())
    config["decoder"]["n_layer"] += 1
    (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(NotACheckpointError, match=r"nothing for decoder\.transformer\.h\.2\..*save it again"):
        convert(src, tmp_path / "out")
    _nothing_under(tmp_path / "out")


def test_a_layer_lacking_a_tensor_or_an_extra_part_is_refused(tmp_path):
    from vedforge.weights.checkpoint import read_msgpack
    from vedforge.weights.writer import write_flax_checkpoint

    forged = _forge(tmp_path)
    params = {path: np.asarray(t) for path, t in read_msgpack([forged / "flax_model.msgpack"]).items()}
    lacking = ("decoder", "transformer", "h", "1", "mlp", "c_fc", "bias")
    extra = {("enc_to_dec_proj", "kernel"): np.zeros((3, 3), np.float32)}
    for name, state, error in (
        ("lacking", {p: t for p, t in params.items() if p != lacking}, r"nothing for decoder\.transformer\.h\.1\.mlp\.c_fc\.bias"),
        ("extra", {**params, **extra}, r"no PyTorch place for enc_to_dec_proj/kernel \(3, 3\)"),
    ):
        src = _copy(forged, tmp_path / name)
        (src / "flax_model.msgpack").unlink()
        write_flax_checkpoint(src, state, 10**9)
        with pytest.raises(NotACheckpointError, match=error + ".*save it again"):
            convert(src, tmp_path / "out")
        _nothing_under(tmp_path / "out")


@pytest.mark.parametrize("damage, error", [
    ("truncate", "truncated"),
    ("garbage", "cannot be parsed as Flax msgpack"),
    ("missing_shard", "names shard files that are missing"),
    ("bad_index", "cannot be read"),
    ("foreign_index", "does not match its shard files"),
])
def test_corrupt_checkpoints(tmp_path, damage, error):
    sharded = damage in ("missing_shard", "bad_index", "foreign_index")
    src = _copy(_forge(tmp_path, "vit", "gpt2", *(["output.max_shard_size=40KB"] if sharded else [])), tmp_path / "bad")
    if damage == "truncate":
        weights = src / "flax_model.msgpack"
        os.truncate(weights, weights.stat().st_size - 1000)
    elif damage == "garbage":
        (src / "flax_model.msgpack").write_bytes(b"\xc1 not msgpack" * 100)
    elif damage == "missing_shard":
        next(src.glob("flax_model-00002-of-*.msgpack")).unlink()
    elif damage == "bad_index":
        (src / "flax_model.msgpack.index.json").write_text("{ not json")
    else:
        index = json.loads((src / "flax_model.msgpack.index.json").read_text())
        index["weight_map"]["decoder/extra/kernel"] = next(iter(index["weight_map"].values()))
        (src / "flax_model.msgpack.index.json").write_text(json.dumps(index))
    with pytest.raises(CorruptCheckpointError, match=error):
        convert(src, tmp_path / "out")
    _nothing_under(tmp_path / "out")


def test_existing_output_is_kept_unless_overwrite(tmp_path):
    src = _forge(tmp_path, "vit", "gpt2")
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(OutputError, match="--overwrite"):
        convert(src, out)
    assert (out / "mine.txt").read_text() == "keep me"
    convert(src, out, overwrite=True)
    assert not (out / "mine.txt").exists() and (out / "model.safetensors").is_file()
    with pytest.raises(OutputError, match="is the source directory"):
        convert(src, src, overwrite=True)
    with pytest.raises(VedforgeError, match="'lots' is not a size"):
        convert(src, tmp_path / "other", max_shard_size="lots")
    _nothing_under(tmp_path / "other")


def test_a_failed_write_publishes_nothing_and_keeps_the_old_output(tmp_path, monkeypatch):
    import errno

    from vedforge.weights import writer as checkpoint_writer

    src = _forge(tmp_path, "vit", "gpt2")
    real = checkpoint_writer.write_pytorch_checkpoint

    def full_disk(directory, *args, **kwargs):
        real(directory, *args, **kwargs)  # the weights are written into the staging directory, then the disk fills
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_writer, "write_pytorch_checkpoint", full_disk)
    with pytest.raises(OutputError, match="No space left on device.*Nothing was published"):
        convert(src, tmp_path / "out")
    _nothing_under(tmp_path / "out")

    previous = tmp_path / "previous"
    previous.mkdir()
    (previous / "model.safetensors").write_bytes(b"old")
    with pytest.raises(OutputError, match="already there is untouched"):
        convert(src, previous, overwrite=True)
    assert [p.name for p in previous.iterdir()] == ["model.safetensors"]
    assert (previous / "model.safetensors").read_bytes() == b"old"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".previous.")]


# --- the command line ------------------------------------------------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "VEDFORGE_DEBUG"}
    env.update({"HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu"})
    return subprocess.run([sys.executable, "-m", "vedforge", "convert", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_help_prints_usage(tmp_path):
    result = _cli("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: vedforge convert") and "--max-shard-size" in result.stdout


def test_cli_converts_and_reports_bad_sources_in_one_paragraph(tmp_path):
    src = _forge(tmp_path, "vit", "gpt2")
    result = _cli(str(src), "pt", "--max-shard-size", "1GB", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Converted vit + gpt2" in result.stdout and (tmp_path / "pt" / "model.safetensors").is_file()
    if not TRANSFORMERS_5:  # transformers 5 has no image-to-text pipeline task
        from PIL import Image
        from transformers import pipeline

        captioner = pipeline("image-to-text", model=str(tmp_path / "pt"), framework="pt")
        image = Image.fromarray((np.random.RandomState(3).rand(48, 40, 3) * 255).astype(np.uint8))
        assert isinstance(captioner(image, generate_kwargs={"max_new_tokens": 4})[0]["generated_text"], str)

    truncated = _copy(src, tmp_path / "truncated")
    os.truncate(truncated / "flax_model.msgpack", 5000)
    for bad, fragment in ((truncated, "truncated"), (tmp_path / "pt", "is in 'pt' layout")):
        result = _cli(str(bad), "out", cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("vedforge: error: ") and fragment in result.stderr
        assert "Traceback" not in result.stderr and "\n\n" not in result.stderr.strip()
        _nothing_under(tmp_path / "out")
    result = _cli(str(src), cwd=tmp_path)
    assert result.returncode == 2 and "OUT" in result.stderr


def test_generation_settings_of_an_older_config_move_to_the_generation_config(tmp_path):
    from transformers import GenerationConfig

    src = _copy(_forge(tmp_path), tmp_path / "older")
    (src / "generation_config.json").unlink()
    config = json.loads((src / "config.json").read_text())
    config.update(max_length=16, num_beams=3)  # as older checkpoints keep them
    (src / "config.json").write_text(json.dumps(config))
    out = convert(src, tmp_path / "pt").output_dir
    generation = GenerationConfig.from_pretrained(out)
    assert (generation.max_length, generation.num_beams) == (16, 3)
    # Moved, as transformers' save_pretrained moves them: config.json no longer sets them.
    saved = json.loads((out / "config.json").read_text())
    assert saved.get("max_length") is None and saved.get("num_beams") is None
    assert generation.decoder_start_token_id == config["decoder_start_token_id"]
    assert generation.eos_token_id == config["eos_token_id"] and generation.pad_token_id == config["pad_token_id"]


def test_verify_converts_the_recorded_source_again(tmp_path):
    from vedforge.pipeline.verify import verify

    src = _copy(_forge(tmp_path, "vit", "bart"), tmp_path / "src")
    out = convert(src, tmp_path / "pt", max_shard_size="60KB").output_dir
    checks = verify(out)
    assert len(checks) > 5 and all(c.status == "ok" for c in checks), [(c.name, c.status) for c in checks]
    # The source changed since: the files that come from it no longer match.
    generation = json.loads((src / "generation_config.json").read_text())
    (src / "generation_config.json").write_text(json.dumps({**generation, "num_beams": 4}))
    assert {c.name for c in verify(out) if c.status != "ok"} == {"generation_config.json"}


def test_two_conversions_of_one_source_are_byte_identical(tmp_path):
    src = _forge(tmp_path, "vit", "gpt2")
    results = [convert(src, tmp_path / name) for name in ("a", "b")]
    files = [{p.relative_to(r.output_dir).as_posix(): p.read_bytes() for p in r.output_dir.rglob("*") if p.is_file()}
             for r in results]
    assert "vedforge_manifest.json" in files[0] and set(files[0]) == set(files[1])
    assert [name for name in files[0] if files[0][name] != files[1][name]] == []
    # The run's times are the result's, not the manifest's.
    assert "timings_s" not in results[0].manifest and results[0].timings_s["total"] > 0


def test_a_conversion_whose_manifest_holds_timings_still_verifies(tmp_path):
    from vedforge.pipeline.verify import verify

    out = convert(_forge(tmp_path, "vit", "gpt2"), tmp_path / "pt").output_dir
    manifest = json.loads((out / "vedforge_manifest.json").read_text())
    manifest["timings_s"] = {"write_weights": 0.1, "total": 1.5}  # as conversions before this release wrote
    (out / "vedforge_manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    checks = verify(out)
    assert checks and all(c.status == "ok" for c in checks), [(c.name, c.status) for c in checks]


def test_a_tokenizer_that_does_not_load_is_reported(tmp_path):
    src = _copy(_forge(tmp_path), tmp_path / "bad_tokenizer")
    (src / "tokenizer.json").write_text("{ not a tokenizer")
    with pytest.raises(CorruptCheckpointError, match="tokenizer files in .* cannot be loaded"):
        convert(src, tmp_path / "out")
    _nothing_under(tmp_path / "out")


# --- the file route: a forge's files without transformers ----------------------------------


def _files(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def _convert_by_transformers(src: Path, out: Path, monkeypatch) -> Path:
    """``convert`` with every source sent down transformers' route."""
    from vedforge.pipeline import conversion_files

    with monkeypatch.context() as patch:
        patch.setattr(conversion_files, "copyable_source", lambda *args: None)
        return convert(src, out).output_dir


@pytest.mark.parametrize("encoder, decoder, extra", [
    *((e, d, ()) for e, d in ROUND_TRIPS),
    ("vit", "bert", ("output.max_shard_size=40KB",)),
])
def test_a_forge_converted_from_its_files_gives_the_bytes_transformers_saves(tmp_path, monkeypatch, encoder, decoder,
                                                                           extra):
    from vedforge.core.frameworks import transformers_version
    from vedforge.pipeline.conversion_files import copyable_source

    src = _forge(tmp_path, encoder, decoder, *extra)
    assert copyable_source(src, transformers_version()) is not None
    by_files = _files(convert(src, tmp_path / "files").output_dir)
    by_transformers = _files(_convert_by_transformers(src, tmp_path / "transformers", monkeypatch))
    assert set(by_files) == set(by_transformers)
    assert [name for name in by_files if by_files[name] != by_transformers[name]] == []


def test_the_image_processor_is_carried_as_its_file(tmp_path, monkeypatch):
    src = _copy(_forge(tmp_path), tmp_path / "src")
    # Valid, but laid out as transformers would not save it: both routes keep the source's bytes.
    settings = json.loads((src / "preprocessor_config.json").read_text())
    (src / "preprocessor_config.json").write_text(json.dumps(settings))
    out = _convert_by_transformers(src, tmp_path / "pt", monkeypatch)
    assert (out / "preprocessor_config.json").read_bytes() == (src / "preprocessor_config.json").read_bytes()


def test_sources_the_file_route_cannot_reproduce_take_transformers_route(tmp_path):
    from vedforge.core.frameworks import transformers_version
    from vedforge.pipeline.conversion_files import copyable_source

    version = transformers_version()
    forged = _forge(tmp_path)
    assert copyable_source(forged, version) is not None
    assert copyable_source(forged, "0.0.1") is None  # forged by another transformers
    changes = {
        # A file changed since the forge recorded it, though it still loads.
        "edited": lambda d: (d / "tokenizer_config.json").write_text((d / "tokenizer_config.json").read_text() + " "),
        # Not a forge: nothing records who wrote the files.
        "no_manifest": lambda d: (d / "vedforge_manifest.json").unlink(),
        # A file transformers' loaders may read that the file route does not know.
        "unknown_file": lambda d: (d / "chat_template.jinja").write_text("{{ messages }}"),
        # transformers derives the generation config.
        "no_generation_config": lambda d: (d / "generation_config.json").unlink(),
    }
    for name, change in changes.items():
        src = _copy(forged, tmp_path / name)
        change(src)
        assert copyable_source(src, version) is None, name
        out = convert(src, tmp_path / f"{name}_pt").output_dir
        assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()


def test_convert_of_a_forge_imports_no_transformers(tmp_path):
    src = _forge(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "VEDFORGE_DEBUG"}
    env.update({"HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu"})
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "vedforge", "convert", str(src), "pt"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")]
    assert "vedforge.pipeline.convert" in imported
    assert [m for m in imported if m.split(".")[0] in ("transformers", "torch", "jax", "tokenizers")] == []
    _pt_model(tmp_path / "pt")
