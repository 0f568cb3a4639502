"""Random-weight parts: drawn tensor by tensor from the seed with transformers' per-family
initialisers, without compiling anything; same recipe, same bytes; and the forge loads and runs."""

from __future__ import annotations

import pytest

from conftest import FLAX, FLAX_ONLY_REASON

# Flax-only: checkpoints saved by transformers' Flax classes, or the Flax model itself.
if not FLAX:
    pytest.skip(FLAX_ONLY_REASON, allow_module_level=True)

import json
import math
import os
import subprocess
import sys

import numpy as np
from conftest import compose_recipe

PIXELS = np.zeros((1, 3, 32, 32), np.float32)

# Each embedded family and the role its class is chosen for.
FAMILIES = {"vit": "encoder", "beit": "encoder", "dinov2": "encoder", "clip": "encoder",
            "gpt2": "decoder", "bert": "decoder", "roberta": "decoder", "bart": "decoder"}


def _config(name: str, **changes):
    from transformers import AutoConfig

    from vedforge.core.resources import assets_dir

    config = AutoConfig.from_pretrained(assets_dir() / f"{name}_tiny")
    for key, value in changes.items():
        setattr(config.vision_config if name == "clip" else config, key, value)
    return config


def _class(name: str, config):
    from vedforge.compat import register_clip_vision
    from vedforge.sources.loading import checkpoint_class

    register_clip_vision()
    return checkpoint_class(config, FAMILIES[name])


def _drawn(name: str, config, seed: int = 0) -> dict[tuple[str, ...], np.ndarray]:
    from vedforge.families.random_init import random_part_state

    state = random_part_state(lambda: _class(name, config), config, seed=seed, role=FAMILIES[name], choice="test")
    if name == "clip":  # only the vision tower goes into the combined model
        state = {k: v for k, v in state.items() if k[0] == "vision_model"}
    return {k: np.asarray(v) for k, v in state.items()}


def _compare_with_flax_init(name: str, config) -> None:
    """Every tensor has the shape, dtype and distribution transformers' Flax ``init`` gives it:
    constants exactly, random tensors with a matching spread and no offset."""
    from flax.traverse_util import flatten_dict

    ours = _drawn(name, config)
    flax = flatten_dict(_class(name, config)(config, seed=0).params)
    assert set(ours) <= set(flax)
    assert name == "clip" or set(ours) == set(flax)
    for path, ref in ((k, np.asarray(flax[k])) for k in sorted(ours)):
        got, where = ours[path], "/".join(path)
        assert got.shape == ref.shape and got.dtype == ref.dtype, where
        if ref.std() == 0:
            np.testing.assert_array_equal(got, ref, err_msg=where)
            continue
        # The standard deviation's sampling error is about std / sqrt(2n).
        spread = 6 / math.sqrt(2 * ref.size) + 0.02
        assert abs(got.std() / ref.std() - 1) < spread, (where, got.std(), ref.std())
        assert abs(got.mean()) < 6 * ref.std() / math.sqrt(ref.size), (where, got.mean())
        # Truncated normals stay inside the same bound in both.
        assert np.abs(got).max() <= max(np.abs(ref).max() * 1.5, 6 * ref.std()), where


def test_the_embedded_default_pair_draws_what_flax_init_draws():
    _compare_with_flax_init("vit", _config("vit"))
    _compare_with_flax_init("gpt2", _config("gpt2"))


@pytest.mark.slow
@pytest.mark.parametrize("name,changes", [
    ("beit", {}), ("dinov2", {}), ("clip", {}), ("bert", {}), ("roberta", {}), ("bart", {}),
    # Options that add parameters of their own.
    ("beit", dict(use_relative_position_bias=True, use_absolute_position_embeddings=True, use_mask_token=True)),
    ("beit", dict(use_shared_relative_position_bias=True, layer_scale_init_value=0.0)),
    ("dinov2", dict(use_swiglu_ffn=True, layerscale_value=0.5)),
])
def test_every_family_draws_what_flax_init_draws(name, changes):
    _compare_with_flax_init(name, _config(name, **changes))


def _wide(name: str, **changes):
    """A wider tiny config, so the standard deviation of every tensor is measured closely."""
    if name in ("gpt2",):
        return _config(name, n_embd=128, n_inner=256, initializer_range=0.05, **changes)
    if name == "bart":
        return _config(name, d_model=128, decoder_ffn_dim=256, encoder_ffn_dim=256, init_std=0.05, **changes)
    if name == "clip":
        return _config(name, hidden_size=128, intermediate_size=256, **changes)
    return _config(name, hidden_size=128, intermediate_size=256, initializer_range=0.05, **changes)


def _close(values: np.ndarray, std: float, where: str) -> None:
    assert abs(values.mean()) < 6 * std / math.sqrt(values.size), (where, values.mean())
    assert abs(values.std() / std - 1) < 6 / math.sqrt(2 * values.size) + 0.01, (where, values.std(), std)


def _check_rules(tensors: dict[tuple[str, ...], np.ndarray], rule) -> set[str]:
    """Apply ``rule(path, shape) -> ('const', c) | ('normal', std) | ('truncated', std)`` to every
    tensor; return the kinds seen."""
    kinds = set()
    for path, values in tensors.items():
        where = "/".join(path)
        kind, value = rule(path, values.shape)
        kinds.add(kind)
        if kind == "const":
            assert (values == value).all(), (where, value)
        else:
            _close(values, value, where)
            if kind == "truncated":
                # A normal truncated to two of its own (pre-truncation) deviations.
                assert np.abs(values).max() <= 2 * value / 0.87962566103423978 + 1e-7, where
    return kinds


def _norm_or_bias(path, shape):
    if path[-1] == "bias":
        return "const", 0.0
    if path[-1] == "scale":
        return "const", 1.0
    return None


# transformers' Flax modules, family by family (modeling_flax_*.py), written out independently of
# the recorder: what each kind of tensor starts as.
def _vit_rule(r):
    def rule(path, shape):
        if found := _norm_or_bias(path, shape):
            return found
        fan_in = math.prod(shape[:-1])  # variance_scaling(r**2, "fan_in", "truncated_normal")
        return "truncated", r / math.sqrt(fan_in)
    return rule


def _beit_rule(r, layer_scale):
    def rule(path, shape):
        if found := _norm_or_bias(path, shape):
            return found
        if path[-1] in ("lambda_1", "lambda_2"):
            return "const", layer_scale
        if path[-1] in ("cls_token", "mask_token", "position_embeddings", "relative_position_bias_table"):
            return "const", 0.0
        return "normal", r
    return rule


def _dinov2_rule(r):
    def rule(path, shape):
        if found := _norm_or_bias(path, shape):
            return found
        if path[-1] == "lambda1":
            return "const", 1.0  # layerscale_value is applied in the forward pass, not stored
        if path[-1] == "mask_token":
            return "truncated", r  # shape (1, hidden): fan_in 1
        return "truncated", r / math.sqrt(math.prod(shape[:-1]))
    return rule


def _clip_rule(path, shape):
    if found := _norm_or_bias(path, shape):
        return found
    if path[-1] == "class_embedding":
        return "normal", 0.02
    return "normal", 0.01  # patch and position embeddings, attention and MLP kernels


def _text_rule(r, *, lecun=("transform",), fixed=None):
    def rule(path, shape):
        if found := _norm_or_bias(path, shape):
            return found
        if any(p in lecun for p in path):  # a head left at flax's default Dense init (lecun_normal)
            return "truncated", 1 / math.sqrt(shape[0])
        if fixed and path[-1] == "kernel":
            return "normal", fixed
        return "normal", r
    return rule


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_tensor_kind_follows_its_familys_initialiser(name):
    config = _wide(name)
    tensors = _drawn(name, config)
    rules = {
        "vit": _vit_rule(0.05), "dinov2": _dinov2_rule(0.05), "clip": _clip_rule,
        "beit": _beit_rule(0.05, getattr(config, "layer_scale_init_value", None)),
        # GPT-2's Conv1D kernels are normal(0.02) whatever initializer_range says; embeddings follow it.
        "gpt2": _text_rule(0.05, fixed=0.02),
        "bert": _text_rule(0.05), "roberta": _text_rule(0.05), "bart": _text_rule(0.05),
    }
    kinds = _check_rules(tensors, rules[name])
    assert "const" in kinds and kinds & {"normal", "truncated"}


def test_beit_layer_scale_and_dinov2_layer_scale_follow_the_config():
    beit = _drawn("beit", _config("beit", layer_scale_init_value=0.25))
    assert all((v == np.float32(0.25)).all() for k, v in beit.items() if k[-1].startswith("lambda_"))
    dinov2 = _drawn("dinov2", _config("dinov2", layerscale_value=0.5))
    assert all((v == 1).all() for k, v in dinov2.items() if k[-1] == "lambda1")


def test_each_tensor_has_its_own_stream_and_the_seed_changes_them():
    a, b = _drawn("gpt2", _config("gpt2"), seed=0), _drawn("gpt2", _config("gpt2"), seed=1)
    again = _drawn("gpt2", _config("gpt2"), seed=0)
    assert all(np.array_equal(a[k], again[k]) for k in a)
    kernels = [k for k in a if k[-1] == "kernel"]
    assert all(not np.array_equal(a[k], b[k]) for k in kernels)
    # Two tensors of one shape and distribution do not share values.
    q0, q1 = (a[("transformer", "h", layer, "attn", "c_attn", "kernel")] for layer in ("0", "1"))
    assert not np.array_equal(q0, q1)


def test_an_initialiser_that_cannot_be_drawn_fails_only_when_drawn():
    from vedforge.families.random_init import UnknownInitializerError, random_part_state

    config = _config("clip")
    state = random_part_state(lambda: _class("clip", config), config, seed=0, role="encoder", choice="test")
    # A full CLIP checkpoint's logit scale is set by a lambda; the vision tower never needs it.
    with pytest.raises(UnknownInitializerError, match="logit_scale"):
        np.asarray(state[("logit_scale",)])


def test_the_embedded_default_compiles_nothing(tmp_path, monkeypatch):
    """In process: jax reports no backend compilation while the embedded default is forged."""
    import jax

    monkeypatch.setenv("VEDFORGE_CACHE", "off")  # traced, as in a first forge, not read back

    from vedforge.pipeline.runner import forge

    events: list[str] = []

    def listener(event: str, duration: float, **kwargs) -> None:
        events.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        result = forge(compose_recipe([f"output.dir={tmp_path / 'out'}"]))
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert result.manifest["parameters"]["total"] == 69_120
    # The listener hears the abstract shape traces; lowering or compiling would be heard too.
    assert "/jax/core/compile/jaxpr_trace_duration" in events
    lowered = [e for e in events if e.endswith(("jaxpr_to_mlir_module_duration", "backend_compile_duration"))]
    assert lowered == []


def _cli(tmp_path, *args, env=None):
    environment = {k: v for k, v in os.environ.items() if k not in ("VEDFORGE_DEBUG", "JAX_LOG_COMPILES")}
    environment.update({"HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu", **(env or {})})
    return subprocess.run([sys.executable, "-m", "vedforge", *args], cwd=tmp_path, env=environment,
                          capture_output=True, text=True, timeout=300)


def test_the_embedded_default_logs_no_compilation_with_jax_log_compiles(tmp_path):
    out = tmp_path / "out"
    # The cache of derivations off: the initialisers are traced, as in a first forge.
    result = _cli(tmp_path, f"output.dir={out}", "hydra.run.dir=run", env={"JAX_LOG_COMPILES": "1", "VEDFORGE_CACHE": "off"})
    assert result.returncode == 0, result.stderr
    log = result.stdout + result.stderr + (tmp_path / "run" / "vedforge.log").read_text()
    # JAX_LOG_COMPILES is on: the abstract shape traces are logged, compilations would be too.
    assert "Finished tracing" in log
    assert "ompil" not in log, [line for line in log.splitlines() if "ompil" in line]


@pytest.mark.parametrize("args", [(), ("encoder=beit_tiny", "decoder=bart_tiny", "token_policy=add_pad", "seed=5")])
def test_random_weights_are_byte_identical_across_hash_seeds(tmp_path, args):
    outs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"out{hash_seed}"
        result = _cli(tmp_path, *args, f"output.dir={out}", env={"PYTHONHASHSEED": hash_seed})
        assert result.returncode == 0, result.stderr
        outs.append(out)
    a, b = (json.loads((o / "vedforge_manifest.json").read_text()) for o in outs)
    assert a["files"] == b["files"]
    assert (outs[0] / "flax_model.msgpack").read_bytes() == (outs[1] / "flax_model.msgpack").read_bytes()
    assert a["inputs"]["encoder"]["initialisation"]["method"] == "seeded per tensor, without XLA"


def test_the_manifest_says_how_random_weights_were_made(tmp_path):
    from vedforge.pipeline.runner import forge

    manifest = forge(compose_recipe([f"output.dir={tmp_path / 'out'}", "seed=3"])).manifest
    for role, cls in (("encoder", "FlaxViTModel"), ("decoder", "FlaxGPT2LMHeadModel")):
        made = manifest["inputs"][role]["initialisation"]
        assert made["seed"] == 3 and cls in made["distributions"] and "PCG64" in made["generator"]


def _forge_and_run(tmp_path, encoder, decoder, loader):
    from flax.traverse_util import flatten_dict

    from vedforge.pipeline.runner import forge

    result = forge(compose_recipe([f"encoder={encoder}_tiny", f"decoder={decoder}_tiny", f"output.dir={tmp_path / 'out'}"]))
    model = loader.FlaxVisionEncoderDecoderModel.from_pretrained(result.output_dir)
    ids = np.array([[1, 2, 3]], dtype=np.int32)
    logits = np.asarray(model(PIXELS, decoder_input_ids=ids).logits)
    assert logits.shape[:2] == (1, 3) and np.isfinite(logits).all() and logits.std() > 0
    params = flatten_dict(model.params)
    # Random tensors: not constant, and of the declared spread, after a round trip through the file.
    kernels = [np.asarray(v) for k, v in params.items() if k[-1] == "kernel" and k[0] != "decoder" or k[-1] == "embedding"]
    assert kernels and all(v.std() > 0 for v in kernels)
    assert model.generate(PIXELS, max_length=4).sequences.shape == (1, 4)
    return result


def test_random_weight_forge_loads_and_runs_in_stock_flax(tmp_path):
    import transformers

    _forge_and_run(tmp_path, "vit", "gpt2", transformers)


def test_random_weight_forge_loads_and_runs_with_the_compat_class(tmp_path):
    from vedforge import compat

    _forge_and_run(tmp_path, "beit", "bert", compat)


@pytest.mark.slow
@pytest.mark.parametrize("encoder,decoder", [("dinov2", "roberta"), ("clip_vision", "bart")])
def test_random_weight_forges_of_the_other_families_load_and_run(tmp_path, encoder, decoder):
    from vedforge import compat

    _forge_and_run(tmp_path, encoder, decoder, compat)


@pytest.mark.parametrize("make,shape", [
    (lambda i: i.normal(0.3), (400, 300)),
    (lambda i: i.lecun_normal(), (400, 300)),
    (lambda i: i.glorot_uniform(), (400, 300)),
    (lambda i: i.he_normal(), (3, 3, 40, 300)),  # a convolution kernel: fan_in counts the window
    (lambda i: i.variance_scaling(0.5, "fan_avg", "normal"), (400, 300)),
])
def test_jax_initialisers_are_read_and_drawn_with_their_distribution(make, shape):
    import jax

    from vedforge.families.random_init import describe_initializer, draw

    init_fn = make(jax.nn.initializers)
    spec = describe_initializer(init_fn, (shape, np.float32), shape)
    ours = draw(spec, shape, np.float32, np.random.Generator(np.random.PCG64(0)))
    theirs = np.asarray(init_fn(jax.random.PRNGKey(0), shape, np.float32))
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    assert abs(ours.std() / theirs.std() - 1) < 0.01, (spec, ours.std(), theirs.std())
    assert abs(ours.mean()) < 5 * theirs.std() / math.sqrt(ours.size)
    assert np.abs(ours).max() <= np.abs(theirs).max() * 1.02 or spec.kind == "normal"
    # The same quantiles, so the shape of the distribution matches too (truncation, uniformity).
    q = [0.01, 0.1, 0.5, 0.9, 0.99]
    np.testing.assert_allclose(np.quantile(ours, q), np.quantile(theirs, q), atol=0.05 * theirs.std())


def test_an_initialiser_nobody_declares_is_refused():
    from vedforge.families.random_init import UnknownInitializerError, describe_initializer

    with pytest.raises(UnknownInitializerError, match="initialiser"):
        describe_initializer(lambda key, shape: np.zeros(shape), ((2,),), (2,))


def test_bf16_draws_made_without_ml_dtypes_have_its_bytes():
    # Every kind of initialiser, a constant and rows set after the draw, in vedforge's stored
    # bfloat16 and in ml_dtypes' bfloat16.
    import ml_dtypes

    from vedforge.families.random_init import Init, draw
    from vedforge.weights.bfloat16 import STORAGE

    inits = [Init("normal", 0.02), Init("uniform", 0.3), Init("truncated_normal", 0.5, mean=0.1),
             Init("constant", 1 + 2**-8 + 2**-30), Init("normal", 1.0, rows=((0, 1, 1 + 2**-8 + 2**-30), (3, 4, 0.0)))]
    for init in inits:
        theirs = draw(init, (5, 7), ml_dtypes.bfloat16, np.random.default_rng(2))
        ours = draw(init, (5, 7), STORAGE, np.random.default_rng(2))
        assert ours.dtype == STORAGE and ours.tobytes() == theirs.tobytes(), init
