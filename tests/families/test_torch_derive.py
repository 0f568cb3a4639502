"""Initialisers read off transformers' PyTorch classes on the meta device match what the classes'
own initialisation draws, for language models and vision towers, on either transformers line."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from statistics import NormalDist

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from vedforge.core.resources import assets_dir  # noqa: E402
from vedforge.families.random_init import Init, UnknownInitializerError, draw  # noqa: E402

# Widths large enough that a standard deviation is estimated to about 1% (so a factor such as
# xavier's sqrt(2) or a swapped fan is far outside the tolerance), small enough to build quickly.
WIDE = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4}
FAMILIES = {
    "llama": ("AutoModelForCausalLM", {**WIDE, "num_key_value_heads": 2, "vocab_size": 1024, "pad_token_id": 3}),
    "qwen2": ("AutoModelForCausalLM", {**WIDE, "num_key_value_heads": 2, "vocab_size": 1024, "pad_token_id": 5}),
    "gemma": ("AutoModelForCausalLM", {**WIDE, "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 1024,
                                       "pad_token_id": 0}),
    "gpt2": ("AutoModelForCausalLM", {"n_embd": 256, "n_inner": 512, "n_layer": 2, "n_head": 4, "vocab_size": 1024}),
    "vit": ("AutoModel", {**WIDE, "image_size": 64, "patch_size": 8}),
    "clip": ("AutoModel", {**WIDE, "image_size": 64, "patch_size": 8}),
    "siglip": ("AutoModel", {**WIDE, "image_size": 64, "patch_size": 8}),
    # Families that had hand-written tables: their classes' initialisers agree between the lines.
    "deit": ("AutoModel", {**WIDE, "image_size": 64, "patch_size": 8}),
    "convnext": ("AutoModel", {"hidden_sizes": [128, 256], "image_size": 64}),
    "swin": ("AutoModel", {"embed_dim": 64, "num_heads": [2, 4], "image_size": 64}),
    "detr": ("AutoModel", {"d_model": 256, "encoder_ffn_dim": 512, "decoder_ffn_dim": 512, "num_queries": 64}),
}


def _config(name: str):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(assets_dir() / f"{name}_tiny")
    if name in ("clip", "siglip"):
        config = config.vision_config
    for key, value in FAMILIES[name][1].items():
        setattr(config, key, value)
    return config


def _expected_std(init: Init) -> float:
    if init.kind == "uniform":
        return init.scale / math.sqrt(3)
    if init.kind == "truncated_normal":
        a, b = init.low, init.high
        pdf = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
        mass = (math.erf(b / math.sqrt(2)) - math.erf(a / math.sqrt(2))) / 2
        variance = 1 + (a * pdf(a) - b * pdf(b)) / mass - ((pdf(a) - pdf(b)) / mass) ** 2
        return init.scale * math.sqrt(variance)
    return init.scale


def _agrees(name: str, values: np.ndarray, init: Init) -> None:
    """``values`` (drawn by torch) could come from ``init``, and from nothing it is mistaken for."""
    values = values.astype(np.float64)
    body = values
    for start, stop, value in init.rows:
        assert np.all(values[start:stop] == np.float32(value)), f"{name}: rows {start}:{stop} should be {value}"
        body = np.delete(body, np.s_[start:stop], axis=0)
    if init.kind == "constant":
        # Exactly the constant, as float32 holds it (a layer scale of 1e-6).
        assert np.all(body == np.float32(init.scale)), f"{name}: should be exactly {init.scale}"
        return
    assert init.kind in ("normal", "uniform", "truncated_normal"), f"{name}: {init.describe()} {init.reason}"
    n, std = body.size, _expected_std(init)
    if n < 100:
        return  # too few values to tell distributions apart (a tiny backbone's first convolution)
    # The sample std's relative error is about 1/sqrt(2n); six of those cannot be met by chance and
    # no factor of another initialiser (sqrt(2), sqrt(3), 1/0.88) fits inside it for n >= 1000.
    tolerance = 6 / math.sqrt(2 * n)
    assert abs(body.std() / std - 1) < tolerance, f"{name}: std {body.std():.4g}, derived {init.describe()}"
    assert abs(body.mean() - init.mean) < 6 * std / math.sqrt(n), f"{name}: mean {body.mean():.4g}"
    peak = np.abs(body - init.mean).max()
    if init.kind == "uniform":
        # A uniform reaches its bound and never passes it; a normal of the same std passes sqrt(3) std.
        assert init.scale * 0.9 < peak <= init.scale * (1 + 1e-6), f"{name}: peak {peak:.4g} for {init.describe()}"
    elif n >= 1000:
        assert peak > 2.2 * std, f"{name}: peak {peak:.4g} is a uniform's, not {init.describe()}"


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_derived_initialisers_match_what_the_class_draws(name, monkeypatch):
    import transformers

    from vedforge.families.torch_init import _derive_table
    from vedforge.weights.saved_names import buffers_saved_by_4_57, saved_names

    choice, _ = FAMILIES[name]
    config = _config(name)
    # SigLIP's hand-written table is compared with transformers 4.57 in test_torch_init; here the
    # derived initialisers are compared, on either line, so no family is hand-written.
    monkeypatch.setattr("vedforge.families.torch_init.NUMPY_DRAWN", ())
    table = _derive_table(config, choice)
    torch.manual_seed(0)
    model = getattr(transformers, choice).from_config(config)
    renamed = saved_names(model)
    state = {renamed[k]: v.detach().float().numpy() for k, v in model.state_dict().items()}
    params = {renamed[k] for k, _ in model.named_parameters(remove_duplicate=False)}
    assert set(table.tensors) == params
    for saved, (shape, _, init, stream) in table.tensors.items():
        assert tuple(state[saved].shape) == shape
        _agrees(saved, state[saved], init)
        if stream != saved:  # tied: the same values as its source
            assert np.array_equal(state[saved], state[stream]), saved
    # Buffers as the model computes them (and, on 5.x, Swin's indices that only 4.57 saves).
    state.update({k: v.numpy() for k, v in buffers_saved_by_4_57(model, renamed).items()})
    for saved, value in table.buffers.items():
        assert np.array_equal(value, state[saved]), saved


def test_padding_rows_are_zero_as_transformers_makes_them():
    from vedforge.families.torch_init import _derive_table

    table = _derive_table(_config("llama"), "AutoModelForCausalLM")
    init = table.tensors["model.embed_tokens.weight"][2]
    assert init.kind == "normal" and init.rows == ((3, 4, 0.0),)
    drawn = draw(init, (1024, 256), np.float32, np.random.default_rng(0))
    assert np.all(drawn[3] == 0) and np.all(drawn[2] != 0) and abs(drawn.std() - 0.02) < 0.001


def _record(fn):
    from vedforge.families.torch_derive import InitRecorder

    recorder = InitRecorder()
    with torch.device("meta"), recorder.recording():
        module = fn()
    return recorder, module


def test_calls_are_traced_to_the_parameter_through_data_views_and_dtype_casts():
    def build():
        layer = torch.nn.Linear(64, 32)
        layer.weight.data.normal_(mean=0.0, std=0.05)
        layer.weight.data.mul_(0.5)
        layer.bias.data = torch.nn.init.trunc_normal_(layer.bias.data.to(torch.float32), std=1.0, a=-1.0, b=3.0)
        table = torch.nn.Embedding(10, 8, padding_idx=None)
        torch.nn.init.xavier_uniform_(table.weight, gain=2.0)
        table.weight.data[4:6].zero_()
        return torch.nn.ModuleDict({"layer": layer, "table": table})

    recorder, module = _record(build)
    assert recorder.parameter_init(module["layer"].weight) == Init("normal", 0.025)
    bias = recorder.parameter_init(module["layer"].bias)
    assert (bias.kind, bias.scale, bias.low, bias.high) == ("truncated_normal", 1.0, -1.0, 3.0)
    table = recorder.parameter_init(module["table"].weight)
    assert table.kind == "uniform" and table.scale == pytest.approx(2.0 * math.sqrt(6 / 18))
    assert table.rows == ((4, 6, 0.0),)


def test_a_module_constructor_default_is_kept_when_init_weights_leaves_it():
    recorder, layer = _record(lambda: torch.nn.Linear(48, 16))
    weight = recorder.parameter_init(layer.weight)
    # nn.Linear's kaiming_uniform_(a=sqrt(5)): a bound of 1/sqrt(fan_in).
    assert weight.kind == "uniform" and weight.scale == pytest.approx(1 / math.sqrt(48))


def test_an_initialiser_that_cannot_be_reproduced_is_refused_only_when_drawn():
    from vedforge.families.random_init import SeededTensor

    def build():
        layer = torch.nn.Linear(8, 8)
        torch.nn.init.orthogonal_(layer.weight)
        with torch.no_grad():
            layer.bias[2] = 1.0
        return layer

    recorder, layer = _record(build)
    weight, bias = recorder.parameter_init(layer.weight), recorder.parameter_init(layer.bias)
    assert weight.kind == bias.kind == "unknown" and "orthogonal_" in weight.reason
    refused = Init("unknown", 0.0, "Foo (foo) parameter weight: x")
    tensor = SeededTensor(("weight",), (8, 8), np.float32, refused, 0, "e")
    with pytest.raises(UnknownInitializerError, match=r"Foo \(foo\) parameter weight"):
        np.asarray(tensor)


def test_a_cached_table_is_read_without_importing_torch(tmp_path):
    # The first process derives (and imports torch through transformers); the second is given only
    # the config's to_dict(), as a plain object, so any torch import would be the table's own.
    derive = textwrap.dedent(f"""
        import json
        from transformers import AutoConfig
        from vedforge.families.torch_init import random_torch_state
        config = AutoConfig.from_pretrained({str(assets_dir() / 'llama_tiny')!r})
        json.dump(config.to_dict(), open({str(tmp_path / 'config.json')!r}, "w"))
        state = random_torch_state(config, seed=3, role="decoder", choice="AutoModelForCausalLM")
        import numpy as np
        print(sum(float(np.abs(np.asarray(t)).sum()) for t in state.values()))
    """)
    read = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        from vedforge.families.torch_init import random_torch_state
        class Config:
            model_type = "llama"
            def to_dict(self):
                return json.load(open({str(tmp_path / 'config.json')!r}))
        state = random_torch_state(Config(), seed=3, role="decoder", choice="AutoModelForCausalLM")
        print(sum(float(np.abs(np.asarray(t)).sum()) for t in state.values()), "torch" in sys.modules)
    """)
    env = {**os.environ, "VEDFORGE_CACHE": str(tmp_path / "cache")}
    first = subprocess.run([sys.executable, "-c", derive], env=env, capture_output=True, text=True, check=True)
    second = subprocess.run([sys.executable, "-c", read], env=env, capture_output=True, text=True, check=True)
    assert second.stdout.split() == [first.stdout.split()[0], "False"]


def test_augmented_assignment_and_a_hand_written_truncated_normal_are_followed():
    def build():
        scale = torch.nn.Parameter(torch.ones(64, 16))
        scale *= 0.5
        scale += 2.0
        # transformers 4.57's SigLIP draws its truncated normal by inversion, in place.
        table = torch.nn.Parameter(torch.empty(32, 16))
        low, high = NormalDist().cdf(-2.0), NormalDist().cdf(2.0)
        with torch.no_grad():
            table.uniform_(2 * low - 1, 2 * high - 1)
            table.erfinv_()
            table.mul_(0.1 * math.sqrt(2.0))
            table.add_(0.0)
            table.clamp_(min=-0.2, max=0.2)
        return torch.nn.ParameterDict({"scale": scale, "table": table})

    with torch.no_grad():
        recorder, module = _record(build)
    assert recorder.parameter_init(module["scale"]) == Init("constant", 2.5)
    table = recorder.parameter_init(module["table"])
    assert table.kind == "truncated_normal" and table.scale == pytest.approx(0.1)
    assert (table.low, table.high) == (pytest.approx(-2.0), pytest.approx(2.0))
