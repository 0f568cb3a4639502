"""Property tests over the recipe space: every valid combination of group options and values
composes into a recipe with no problems, and every invalid value is refused, by name,
before anything loads."""

from __future__ import annotations

import re

import pytest
from hydra.errors import ConfigCompositionException, HydraException
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from omegaconf.errors import OmegaConfBaseException

from conftest import compose_recipe
from vedforge.core.units import parse_size
from vedforge.core.errors import RecipeError
from vedforge.core.resources import group_options
from vedforge.recipe.validate import recipe_problems, validate_recipe

GROUPS = ("encoder", "decoder", "token_policy", "backend")
OPTIONS = {group: group_options(group) for group in GROUPS}
_SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

_sizes = st.builds(lambda n, unit: f"{n}{unit}", st.integers(1, 10**6), st.sampled_from(["", "B", "KB", "MB", "GB", "KiB", "MiB", "GiB"]))
_words = st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=8)
_tokens = st.one_of(st.none(), st.integers(0, 10**6), _words)


def _valid_overrides(draw) -> list[str]:
    overrides = [f"{group}={draw(st.sampled_from(OPTIONS[group]))}" for group in GROUPS]
    # The generic options name no checkpoint of their own: the recipe must.
    overrides += [f"{group}.name_or_path=org/{group}" for group in ("encoder", "decoder") if f"{group}=any" in overrides]
    if overrides[2] == "token_policy=explicit":
        overrides += [f"token_policy.{name}={draw(st.integers(0, 100))}"
                      for name in ("decoder_start_token", "pad_token", "eos_token")]
    overrides += [
        f"seed={draw(st.integers(0, 2**31 - 1))}",
        f"output.max_shard_size={draw(_sizes)}",
        f"cross_attention.init={draw(st.sampled_from(['random', 'zero']))}",
    ]
    # The format of Flax weights: backend=pt writes PyTorch model.safetensors only.
    formats = ["msgpack", "safetensors"] if "backend=flax" in overrides else ["msgpack"]
    overrides.append(f"output.format={draw(st.sampled_from(formats))}")
    return overrides


@st.composite
def valid_recipes(draw) -> list[str]:
    return _valid_overrides(draw)


def test_every_group_has_options():
    assert all(OPTIONS[group] for group in GROUPS), OPTIONS
    assert {"flax", "pt"} <= set(OPTIONS["backend"])


@_SETTINGS
@given(valid_recipes())
def test_any_valid_combination_composes_without_problems(overrides):
    cfg = compose_recipe(overrides)
    assert recipe_problems(cfg) == []
    for group in GROUPS:
        assert f"{group}=" in " ".join(overrides)


_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,11}", fullmatch=True)


@_SETTINGS
@given(st.sampled_from(GROUPS), _names)
def test_an_unknown_group_option_is_refused_naming_it_and_the_valid_ones(group, option):
    if option in OPTIONS[group] or option.lower() in ("true", "false", "null", "inf", "nan"):
        return
    with pytest.raises((ConfigCompositionException, HydraException)) as info:
        compose_recipe([f"{group}={option}"])
    message = str(info.value)
    assert f"{group}/{option}" in message
    assert all(valid in message for valid in OPTIONS[group])


@_SETTINGS
@given(st.sampled_from(["seed", "output.overwrite", "output.pytorch", "hub.offline", "output.format",
                        "cross_attention.init", "encoder.weights", "backend.name"]),
       st.text(st.characters(codec="ascii", categories=["L"]), min_size=3, max_size=10))
def test_a_wrong_typed_value_is_refused_at_composition(key, value):
    valid_words = {"true", "false", "yes", "no", "on", "off", "msgpack", "safetensors", "random", "zero", "pretrained",
                   "flax", "pt"}
    if value.lower() in valid_words:
        return
    with pytest.raises((ConfigCompositionException, OmegaConfBaseException, HydraException)) as info:
        compose_recipe([f"{key}={value}"])
    assert value in str(info.value) or value in str(info.value.__cause__)


@_SETTINGS
@given(st.text(min_size=1, max_size=12).filter(lambda t: "=" not in t and "," not in t and "$" not in t
                                                  and not re.match(r"^\s*\d+(\.\d+)?\s*([KMGT]i?B|B)?\s*$", t, re.I)))
def test_an_unparsable_shard_size_is_reported_by_value(text):
    try:
        cfg = compose_recipe([f"output.max_shard_size='{text}'"]) if "'" not in text and "\\" not in text else None
    except (ConfigCompositionException, OmegaConfBaseException, HydraException):
        return  # the override grammar refused it first: also before anything loads
    if cfg is None:
        return
    with pytest.raises(RecipeError) as info:
        validate_recipe(cfg)
    assert "output.max_shard_size" in str(info.value)


@_SETTINGS
@given(st.sampled_from(GROUPS), st.one_of(st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=False, allow_infinity=False).map(repr),
                                          st.sampled_from(["true", "False", "1e3", "nan", "inf"])))
def test_a_number_or_boolean_as_group_option_is_refused_before_hydra(group, value):
    from vedforge.cli.main import _bad_group_override

    message = _bad_group_override([f"{group}={value}"])
    assert message is not None and f"{group}={value}" in message
    assert all(option in message for option in OPTIONS[group])


@_SETTINGS
@given(st.sampled_from(GROUPS), _names)
def test_a_name_as_group_option_is_left_to_hydra(group, value):
    from vedforge.cli.main import _bad_group_override

    if value.lower() not in ("true", "false", "inf", "nan"):
        assert _bad_group_override([f"{group}={value}"]) is None


@_SETTINGS
@given(st.integers(1, 10**9), st.sampled_from([("B", 1), ("KB", 10**3), ("MB", 10**6), ("GB", 10**9),
                                               ("KiB", 2**10), ("MiB", 2**20), ("GiB", 2**30)]))
def test_sizes_parse_to_their_byte_counts(number, unit):
    suffix, factor = unit
    assert parse_size(f"{number}{suffix}") == number * factor
    assert parse_size(f"{number} {suffix.lower()}") == number * factor


# Each kind of problem: the overrides that cause it, and a fragment of its message.
_PROBLEMS = {
    "seed=-1": (["seed=-1"], "seed=-1"),
    "explicit": (["token_policy=explicit"], "token_policy=explicit needs"),
    "pytorch_over_safetensors": (["output.pytorch=true", "output.format=safetensors"], "output.pytorch=true writes"),
    "bad_token": (["token_policy.pad_token=''"], "token_policy.pad_token=''"),
    "empty_encoder": (["encoder.name_or_path=''"], "encoder.name_or_path is empty"),
}


@_SETTINGS
@given(st.lists(st.sampled_from(sorted(_PROBLEMS)), min_size=1, max_size=len(_PROBLEMS), unique=True))
def test_every_problem_is_reported_at_once(kinds):
    overrides = [override for kind in kinds for override in _PROBLEMS[kind][0]]
    expected = [_PROBLEMS[kind][1] for kind in kinds]
    problems = recipe_problems(compose_recipe(overrides))
    assert len(problems) == len(expected), problems
    for fragment in expected:
        assert any(fragment in p for p in problems), (fragment, problems)


@_SETTINGS
@given(_tokens, _tokens, _tokens)
def test_token_values_of_either_kind_pass_validation(start, pad, eos):
    # Token strings quoted, as the README says: unquoted, true or 1e3 are not strings.
    def text(value):
        return f"'{value}'" if isinstance(value, str) else str(value)

    overrides = [f"token_policy.{name}={text(value)}" for name, value in
                 (("decoder_start_token", start), ("pad_token", pad), ("eos_token", eos)) if value is not None]
    assert recipe_problems(compose_recipe(overrides)) == []


@pytest.mark.parametrize("word", ["true", "False", "yes", "off"])
def test_an_unquoted_boolean_like_token_gets_a_quoting_hint(word):
    problems = recipe_problems(compose_recipe([f"token_policy.eos_token={word}"]))
    if word.lower() in ("yes", "off"):  # strings in Hydra's grammar: nothing to report
        assert problems == []
    else:
        assert len(problems) == 1 and "quote" in problems[0] and "boolean" in problems[0]


# Values that are sometimes valid and sometimes not, for every part of a recipe.
def _torch_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


# Without torch a PyTorch forge only ends in the "install torch" error, which test_backends covers.
_BACKENDS = OPTIONS["backend"] if _torch_installed() else ["flax"]

_EXTRAS = [
    "seed=-1", "seed=7", "output.max_shard_size=lots", "output.max_shard_size=20KB", "token_policy.pad_token=99999",
    "token_policy.eos_token=0", "+encoder.config_overrides.image_size=36", "+encoder.config_overrides.image_size=48",
    "cross_attention.init=zero", "output.pytorch=true", "output.format=safetensors", "encoder.weights=pretrained",
    "+decoder.config_overrides.n_layer=1", "token_policy.decoder_start_token=notatoken",
]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(encoder=st.sampled_from([o for o in OPTIONS["encoder"] if o.endswith("_tiny")] + ["vit"]),
       decoder=st.sampled_from([o for o in OPTIONS["decoder"] if o.endswith("_tiny")]),
       policy=st.sampled_from(OPTIONS["token_policy"]), backend=st.sampled_from(_BACKENDS),
       extras=st.lists(st.sampled_from(_EXTRAS), max_size=3, unique=True))
def test_random_recipes_forge_and_reload_or_fail_cleanly(tmp_path_factory, encoder, decoder, policy, backend, extras):
    """Any mix of valid and invalid settings ends in a forge that reloads, or in a VedforgeError:
    never another exception (which the CLI would report as an internal error)."""
    from vedforge.core.errors import VedforgeError
    from vedforge.pipeline.runner import forge

    out = tmp_path_factory.mktemp("forge") / "out"
    overrides = [f"encoder={encoder}", f"decoder={decoder}", f"token_policy={policy}", f"backend={backend}",
                 f"output.dir={out}", *extras]
    try:
        cfg = compose_recipe(overrides)
    except (ConfigCompositionException, OmegaConfBaseException, HydraException):
        event("refused at composition")
        return  # refused at composition, before anything loads
    try:
        result = forge(cfg)
    except VedforgeError as exc:
        event(f"refused: {type(exc).__name__}")
        assert not out.exists()
        return
    event("forged")
    manifest = result.manifest
    if manifest.get("architecture") == "prefix":
        from transformers import LlavaForConditionalGeneration

        model, info = LlavaForConditionalGeneration.from_pretrained(result.output_dir, output_loading_info=True)
        assert not any(info.values()), info
        assert model.config.image_token_id == manifest["token_ids"]["image"]
        return
    backend = manifest["backend"]
    if backend == "pt" or "output.pytorch=true" in extras:
        from vedforge.torch_compat import VisionEncoderDecoderModel

        model, info = VisionEncoderDecoderModel.from_pretrained(result.output_dir, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"]
    if backend == "flax":
        from vedforge import compat

        model = compat.FlaxVisionEncoderDecoderModel.from_pretrained(result.output_dir)
    assert model.config.decoder_start_token_id == result.manifest["token_ids"]["decoder_start"]
