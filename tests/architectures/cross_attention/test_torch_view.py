"""The cross-attention engine fed from PyTorch models on the meta device (transformers 5 has no Flax
classes): the same Flax tree, initialisers and bytes as the traced Flax classes give under 4.57.

Under transformers 4.57 ``USE_FLAX=0`` hides the Flax classes, so the PyTorch-fed route runs in the
same environment as the Flax one and the two are compared directly.
"""

from __future__ import annotations

import hashlib
import itertools
import json

import pytest

torch = pytest.importorskip("torch")

from conftest import DECODERS, ENCODERS, FLAX, needs_flax  # noqa: E402
from tests_support import run_cli  # noqa: E402
from vedforge.core.resources import assets_dir  # noqa: E402


def _config(encoder: str, decoder: str):
    from transformers import AutoConfig, VisionEncoderDecoderConfig

    enc = AutoConfig.from_pretrained(assets_dir() / f"{encoder}_tiny")
    if enc.model_type == "clip":
        enc = enc.vision_config
    dec = AutoConfig.from_pretrained(assets_dir() / f"{decoder}_tiny")
    dec.is_decoder, dec.add_cross_attention = True, True
    return VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)


def _shapes(tree):
    return {path: tuple(spec.shape) for path, spec in tree.items()}


@needs_flax
@pytest.mark.parametrize("encoder, decoder", [
    pytest.param(e, d, marks=() if i == j else pytest.mark.slow)
    for (i, e), (j, d) in itertools.product(enumerate(ENCODERS), enumerate(DECODERS))])
def test_the_pytorch_view_is_the_traced_flax_tree(encoder, decoder):
    from vedforge.architectures.cross_attention import torch_view
    from vedforge.architectures.cross_attention.assembly import traced_shapes

    config = _config(encoder, decoder)
    assert _shapes(torch_view.target_shapes(config)) == _shapes(traced_shapes(config))


@needs_flax
@pytest.mark.parametrize("name", ENCODERS + DECODERS)
def test_a_checkpoint_and_its_random_initialisers_are_the_flax_classes(name):
    from transformers import AutoConfig

    from vedforge.architectures.cross_attention import torch_view
    from vedforge.architectures.cross_attention.shapes import checkpoint_shapes
    from vedforge.compat import register_clip_vision
    from vedforge.families.random_init import traced_part
    from vedforge.sources.loading import checkpoint_class

    register_clip_vision()
    role = "encoder" if name in ENCODERS else "decoder"
    config = AutoConfig.from_pretrained(assets_dir() / f"{name}_tiny")
    assert _shapes(torch_view.checkpoint_shapes(config, role)) == _shapes(checkpoint_shapes(config, role))
    drawn = torch_view.random_part_state(config, seed=1234, role=role)
    traced = traced_part(checkpoint_class(config, role), config)
    assert set(drawn) == set(traced)
    # Of a full CLIP checkpoint only the vision tower is ever drawn (it is the encoder).
    known = {p for p, (_, init) in traced.items() if init.kind != "unknown" and (name != "clip" or "vision_model" in p)}
    assert {p: drawn[p].init for p in known} == {p: traced[p][1] for p in known}
    # What the Flax class cannot draw (CLIP's logit scale) is refused here too, if it is ever drawn.
    assert all(drawn[p].init.kind == "unknown" for p, (_, init) in traced.items() if init.kind == "unknown")


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# One pair in the default suite; the others (about 10 s each) run with the slow ones.
@pytest.mark.parametrize("encoder, decoder", [("vit", "gpt2"), pytest.param("swin", "bart", marks=pytest.mark.slow)])
def test_pretrained_pt_forge_writes_the_same_bytes_with_and_without_flax_classes(
        tiny_torch_checkpoints, tmp_path, encoder, decoder):
    args = [f"encoder.name_or_path={tiny_torch_checkpoints[encoder]}", "encoder.weights=pretrained",
            f"decoder.name_or_path={tiny_torch_checkpoints[decoder]}", "decoder.weights=pretrained", "backend=pt"]
    without = run_cli(*args, f"output.dir={tmp_path / 'without'}", cwd=tmp_path, env={"USE_FLAX": "0"})
    assert without.returncode == 0, without.stderr
    if not FLAX:
        return  # no Flax route here to compare with
    flax_route = run_cli(*args, f"output.dir={tmp_path / 'with'}", cwd=tmp_path)
    assert flax_route.returncode == 0, flax_route.stderr
    assert _sha(tmp_path / "without" / "model.safetensors") == _sha(tmp_path / "with" / "model.safetensors")


@pytest.mark.parametrize("encoder, decoder", [
    ("vit", "gpt2"), *(pytest.param(*pair, marks=pytest.mark.slow)
                       for pair in (("beit", "roberta"), ("dinov2", "bert"), ("clip_vision", "bart")))])
def test_random_flax_family_pairs_draw_the_same_bytes_with_and_without_flax_classes(tmp_path, encoder, decoder):
    args = [f"encoder={encoder}_tiny", f"decoder={decoder}_tiny", "backend=pt"]
    without = run_cli(*args, f"output.dir={tmp_path / 'without'}", cwd=tmp_path, env={"USE_FLAX": "0"})
    assert without.returncode == 0, without.stderr
    if not FLAX:
        return
    flax_route = run_cli(*args, f"output.dir={tmp_path / 'with'}", cwd=tmp_path)
    assert flax_route.returncode == 0, flax_route.stderr
    assert _sha(tmp_path / "without" / "model.safetensors") == _sha(tmp_path / "with" / "model.safetensors")
    a, b = (json.loads((tmp_path / d / "vedforge_manifest.json").read_text()) for d in ("without", "with"))
    for key in ("parameters", "new_tensors", "unused_checkpoint_tensors"):
        assert a[key] == b[key], key
    assert a["inputs"]["encoder"]["initialisation"] == b["inputs"]["encoder"]["initialisation"]


def test_random_decoders_draw_the_same_bytes_with_and_without_flax_classes(tmp_path):
    # A Swin encoder is built by PyTorch either way; the random BART decoder and the projection
    # come from the Flax-layout engine, fed by traced Flax classes or by the PyTorch view.
    args = ["encoder=swin_tiny", "decoder=bart_tiny", "backend=pt"]
    without = run_cli(*args, f"output.dir={tmp_path / 'without'}", cwd=tmp_path, env={"USE_FLAX": "0"})
    assert without.returncode == 0, without.stderr
    manifest = json.loads((tmp_path / "without" / "vedforge_manifest.json").read_text())
    assert manifest["inputs"]["decoder"]["initialisation"]["distributions"].startswith("the initialisers transformers' FlaxBart")
    if not FLAX:
        return
    flax_route = run_cli(*args, f"output.dir={tmp_path / 'with'}", cwd=tmp_path)
    assert flax_route.returncode == 0, flax_route.stderr
    assert _sha(tmp_path / "without" / "model.safetensors") == _sha(tmp_path / "with" / "model.safetensors")
