"""PyTorch output: backend=pt, output.pytorch=true, encoders without a Flax port, and the
equivalence of the PyTorch form with the Flax one."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import (DECODERS, ENCODERS, FLAX, TRANSFORMERS_5, compose_recipe, local_recipe,  # noqa: E402
                      needs_flax)
from vedforge.core.errors import BackendError, RecipeError, UnsupportedModelError  # noqa: E402
from vedforge.pipeline.runner import forge  # noqa: E402

PYTORCH_ONLY = ("swin", "deit", "convnext", "detr", "siglip")


def _pairs(encoders, decoders):
    """Every pair; the default run keeps one per encoder and per decoder, the rest are slow."""
    return [
        pytest.param(e, d, marks=() if i % len(decoders) == j else pytest.mark.slow)
        for i, e in enumerate(encoders) for j, d in enumerate(decoders)
    ]


def _flax_model(directory):
    from vedforge import compat

    compat.register_clip_vision()
    # The BERT family needs the keyword fix to generate in Flax.
    return compat.FlaxVisionEncoderDecoderModel.from_pretrained(directory)


def _pt_model(directory):
    from vedforge.torch_compat import VisionEncoderDecoderModel

    model, info = VisionEncoderDecoderModel.from_pretrained(directory, output_loading_info=True)
    # Nothing may be left to transformers' initialisers: every tensor comes from the file.
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return model.eval()


def _inputs(config):
    size = config.encoder.image_size
    pixels = np.random.RandomState(0).rand(1, 3, size, size).astype(np.float32)
    ids = np.array([[config.decoder_start_token_id, 5, 9, 3, 17]])
    return pixels, ids


def _pt_logits(model, pixels, ids):
    with torch.no_grad():
        return model(pixel_values=torch.from_numpy(pixels), decoder_input_ids=torch.from_numpy(ids)).logits.numpy()


def _pt_greedy(model, pixels, steps=4):
    with torch.no_grad():
        return model.generate(torch.from_numpy(pixels), max_new_tokens=steps, do_sample=False).numpy()


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("encoder, decoder", _pairs(ENCODERS, DECODERS))
def test_pytorch_form_computes_what_the_flax_forge_computes(tiny_checkpoints, tmp_path, encoder, decoder):
    out = forge(local_recipe(tiny_checkpoints, encoder, decoder, tmp_path / "out", "output.pytorch=true")).output_dir
    assert (out / "flax_model.msgpack").is_file() and (out / "model.safetensors").is_file()
    flax_model, pt_model = _flax_model(out), _pt_model(out)
    pixels, ids = _inputs(pt_model.config)

    flax_logits = np.asarray(flax_model(pixel_values=pixels, decoder_input_ids=ids).logits)
    np.testing.assert_allclose(_pt_logits(pt_model, pixels, ids), flax_logits, rtol=0, atol=1e-4)

    flax_tokens = np.asarray(flax_model.generate(pixels, max_length=5).sequences)
    pt_tokens = _pt_greedy(pt_model, pixels)
    # PyTorch stops at eos; Flax fills the rest of max_length with the pad id.
    pt_tokens = np.pad(pt_tokens, ((0, 0), (0, 5 - pt_tokens.shape[1])), constant_values=pt_model.config.pad_token_id)
    np.testing.assert_array_equal(pt_tokens, flax_tokens)


def test_pt_forge_carries_the_flax_forges_tensors(tiny_checkpoints, tmp_path):
    both = forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "flax", "output.pytorch=true")).output_dir
    pt_only = forge(local_recipe(tiny_checkpoints, "vit", "gpt2", tmp_path / "pt", "backend=pt")).output_dir
    assert not (pt_only / "flax_model.msgpack").exists()
    # Checkpoint tensors and the new cross-attention alike: the same bytes.
    assert _sha(pt_only / "model.safetensors") == _sha(both / "model.safetensors")
    manifest = json.loads((pt_only / "vedforge_manifest.json").read_text())
    assert manifest["backend"] == "pt" and manifest["weight_layouts"] == ["pytorch"]
    assert manifest["files"]["model.safetensors"]["sha256"] == _sha(pt_only / "model.safetensors")


@needs_flax
def test_embedded_default_recipe_gives_the_same_tensors_on_both_backends(tmp_path):
    flax = forge(compose_recipe([f"output.dir={tmp_path / 'flax'}", "output.pytorch=true"])).output_dir
    pt = forge(compose_recipe([f"output.dir={tmp_path / 'pt'}", "backend=pt"])).output_dir
    assert _sha(pt / "model.safetensors") == _sha(flax / "model.safetensors")


def test_sharded_pytorch_checkpoint_loads_like_a_single_file(tiny_checkpoints, tmp_path):
    single = forge(local_recipe(tiny_checkpoints, "vit", "bart", tmp_path / "one", "backend=pt")).output_dir
    sharded = forge(local_recipe(tiny_checkpoints, "vit", "bart", tmp_path / "many", "backend=pt",
                                 "output.max_shard_size=40KB")).output_dir
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and not (sharded / "model.safetensors").exists()
    a, b = _pt_model(single), _pt_model(sharded)
    pixels, ids = _inputs(a.config)
    np.testing.assert_array_equal(_pt_logits(a, pixels, ids), _pt_logits(b, pixels, ids))


@pytest.mark.parametrize("encoder, decoder", _pairs(PYTORCH_ONLY, ("gpt2", "bart", "bert", "roberta")))
def test_encoders_without_flax_port_forge_with_backend_pt(tmp_path, encoder, decoder):
    result = forge(compose_recipe([f"encoder={encoder}_tiny", f"decoder={decoder}_tiny", "backend=pt",
                                   f"output.dir={tmp_path / 'out'}"]))
    out = result.output_dir
    model = _pt_model(out)
    # A two-tower checkpoint (SigLIP) gives its vision tower.
    assert model.encoder.config.model_type in (encoder, f"{encoder}_vision_model")
    pixels = _processed_image(out)
    tokens = _pt_greedy(model, pixels)
    assert tokens.shape[0] == 1 and tokens[0, 0] == model.config.decoder_start_token_id
    counts = result.manifest["parameters"]
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert result.manifest["needs_torch_compat"] == (encoder in ("convnext", "detr"))


def _processed_image(out):
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(out)
    image = (np.random.RandomState(2).rand(40, 48, 3) * 255).astype(np.uint8)
    return processor(image, return_tensors="np")["pixel_values"]


def test_pytorch_only_encoder_carries_the_decoder_a_flax_forge_would(tmp_path):
    # swin_tiny and vit_tiny have the same hidden size, so the decoder (its checkpoint tensors
    # and its new cross-attention) must come out identical.
    swin = forge(compose_recipe(["encoder=swin_tiny", "backend=pt", f"output.dir={tmp_path / 'swin'}"])).output_dir
    # A Flax forge's PyTorch file where Flax is at hand; else the same recipe with backend=pt.
    vit_backend = "output.pytorch=true" if FLAX else "backend=pt"
    vit = forge(compose_recipe(["encoder=vit_tiny", vit_backend, f"output.dir={tmp_path / 'vit'}"])).output_dir
    from safetensors.numpy import load_file

    a, b = load_file(swin / "model.safetensors"), load_file(vit / "model.safetensors")
    decoder = sorted(k for k in b if k.startswith("decoder."))
    assert decoder and decoder == sorted(k for k in a if k.startswith("decoder."))
    for name in decoder:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@needs_flax
@pytest.mark.parametrize("encoder", PYTORCH_ONLY)
def test_flax_backend_refuses_encoders_without_flax_port(tmp_path, encoder):
    with pytest.raises(UnsupportedModelError, match="backend=pt"):
        forge(compose_recipe(["backend=flax", f"encoder={encoder}_tiny", f"output.dir={tmp_path / 'out'}"]))
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(FLAX, reason="the refusal of an environment without Flax classes")
@pytest.mark.parametrize("extra", ([], ["output.pytorch=true"], ["encoder=swin_tiny"]), ids=("default", "pytorch", "swin"))
def test_flax_backend_is_refused_at_plan_time_without_flax_classes(tmp_path, extra):
    with pytest.raises(BackendError) as refused:
        forge(compose_recipe([f"output.dir={tmp_path / 'out'}", "backend=flax", *extra]))
    message = str(refused.value)
    assert "\n" not in message and 'pip install "vedforge[flax]"' in message and "backend=pt" in message
    assert not (tmp_path / "out").exists()


def test_output_pytorch_with_flax_safetensors_is_refused(tmp_path):
    with pytest.raises(RecipeError, match="output.format=msgpack"):
        forge(compose_recipe(["output.pytorch=true", "output.format=safetensors", f"output.dir={tmp_path}"]))


@pytest.mark.parametrize("overrides, records_torch", [
    (["backend=pt"], True),
    pytest.param(["output.pytorch=true"], True, marks=needs_flax), pytest.param([], False, marks=needs_flax),
])
def test_the_manifest_records_torchs_version_when_the_forge_writes_pytorch(tmp_path, overrides, records_torch):
    manifest = forge(compose_recipe([*overrides, f"output.dir={tmp_path / 'out'}"])).manifest
    assert manifest["versions"].get("torch") == (torch.__version__ if records_torch else None)


@pytest.mark.skipif(TRANSFORMERS_5, reason="transformers 5 has no image-to-text pipeline task (model.generate works)")
@pytest.mark.parametrize("encoder", ("vit", "swin", "convnext", "detr", "siglip"))
def test_image_to_text_pipeline_runs_the_pytorch_output(tmp_path, monkeypatch, encoder):
    import transformers
    from PIL import Image
    from transformers import pipeline

    from vedforge import torch_compat

    # install() patches transformers' class for the process; restore it after this test.
    for name in ("__init__", "forward"):
        monkeypatch.setattr(transformers.VisionEncoderDecoderModel, name, getattr(transformers.VisionEncoderDecoderModel, name))
    extra = ["output.pytorch=true"] if encoder == "vit" else ["backend=pt"]
    out = forge(compose_recipe([f"encoder={encoder}_tiny", f"output.dir={tmp_path / 'out'}", *extra])).output_dir
    torch_compat.install()
    captioner = pipeline("image-to-text", model=str(out), framework="pt")
    image = Image.fromarray((np.random.RandomState(3).rand(48, 40, 3) * 255).astype(np.uint8))
    result = captioner(image, generate_kwargs={"max_new_tokens": 5})
    assert isinstance(result, list) and isinstance(result[0]["generated_text"], str)


def test_pytorch_only_forge_is_reproducible_verifiable_and_resumable(tmp_path):
    from vedforge.pipeline.verify import verify

    recipe = compose_recipe(["encoder=detr_tiny", "backend=pt", f"output.dir={tmp_path / 'out'}"])
    first = forge(recipe)
    checks = verify(first.output_dir)
    assert checks and all(c.status == "ok" for c in checks), [(c.name, c.status) for c in checks if c.status != "ok"]
    assert forge(recipe).skipped


# --- SigLIP: a two-tower checkpoint whose vision tower has no class token ----------------------


@pytest.fixture
def stock_class(monkeypatch):
    """transformers' VisionEncoderDecoderModel as shipped, even after another test's install()."""
    import transformers

    from vedforge import torch_compat

    monkeypatch.setattr(transformers.VisionEncoderDecoderModel, "__init__", torch_compat._STOCK_INIT)
    monkeypatch.setattr(transformers.VisionEncoderDecoderModel, "forward", torch_compat._STOCK_FORWARD)
    return transformers.VisionEncoderDecoderModel


@pytest.mark.parametrize("decoder", ("gpt2", "bart"))
def test_siglip_forge_loads_and_generates_with_stock_transformers(tmp_path, stock_class, decoder):
    result = forge(compose_recipe(["encoder=siglip_tiny", f"decoder={decoder}_tiny", "backend=pt",
                                   f"output.dir={tmp_path / 'out'}"]))
    out = result.output_dir
    model, info = stock_class.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    model.eval()
    assert type(model.encoder).__name__ == "SiglipVisionModel"
    assert model.config.encoder.model_type == "siglip_vision_model"
    assert not any(name.startswith("encoder.text_model") for name in model.state_dict())
    assert result.manifest["needs_torch_compat"] is False

    pixels = torch.from_numpy(_processed_image(out))
    other = torch.from_numpy(np.ascontiguousarray(_processed_image(out)[..., ::-1]))
    ids = torch.tensor([[model.config.decoder_start_token_id, 5, 9]])
    with torch.no_grad():
        first = model(pixel_values=pixels, decoder_input_ids=ids)
        second = model(pixel_values=other, decoder_input_ids=ids)
    # Every patch is memory (no class token to drop): (32 / 8) ** 2 tokens of the tower's width.
    assert first.encoder_last_hidden_state.shape == (1, 16, model.config.encoder.hidden_size)
    # The decoder reads the image: another image gives other logits.
    assert not torch.allclose(first.logits, second.logits)
    tokens = model.generate(pixels, max_new_tokens=4, do_sample=False)
    assert tokens.shape[0] == 1 and tokens[0, 0] == model.config.decoder_start_token_id


@pytest.mark.parametrize("tower_only", (False, True), ids=("two-tower", "vision-tower"))
def test_pretrained_siglip_vision_tower_comes_through_bit_for_bit(tmp_path, tower_only):
    from safetensors.numpy import load_file

    from tests_support import save_torch_siglip_checkpoint

    checkpoint = save_torch_siglip_checkpoint(tmp_path / "siglip", seed=4, tower_only=tower_only)
    result = forge(compose_recipe([f"encoder.name_or_path={checkpoint}", "encoder.weights=pretrained",
                                   "decoder=gpt2_tiny", "backend=pt", f"output.dir={tmp_path / 'out'}"]))
    # transformers 5 saves a lone vision tower without its vision_model. level (4.57 cannot load
    # that layout); the forge writes the 4.x names either way.
    source = {name if name.startswith("vision_model.") else f"vision_model.{name}": tensor
              for name, tensor in load_file(checkpoint / "model.safetensors").items()
              if name.startswith("vision_model.") or (tower_only and not name.startswith("vision_model."))}
    forged = load_file(result.output_dir / "model.safetensors")
    encoder = {name.removeprefix("encoder."): tensor for name, tensor in forged.items() if name.startswith("encoder.")}
    # The vision tower, whole and unchanged; the text tower and the contrastive scale stay behind.
    assert sorted(encoder) == sorted(source)
    for name, tensor in source.items():
        np.testing.assert_array_equal(encoder[name], tensor, err_msg=name)
    manifest = result.manifest
    assert manifest["inputs"]["encoder"]["model_type"] == ("siglip_vision_model" if tower_only else "siglip")
    assert manifest["parameters"]["encoder"] == sum(int(np.prod(t.shape)) for t in source.values())
