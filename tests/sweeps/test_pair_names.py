"""Pair directory names: readable, free of override punctuation, and never shared by two recipes."""

from __future__ import annotations

import itertools

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Quote, QuotedString
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from vedforge.sweeps.pair_names import pair_dirname

_PARSER = OverridesParser.create()
_SETTINGS = settings(max_examples=300, deadline=None)


def test_plain_overrides_read_as_typed():
    assert pair_dirname("vit", "gpt2", ["decoder=gpt2", "encoder=vit"]) == "vit__gpt2"
    assert pair_dirname("vit", "gpt2", ["encoder=vit", "decoder=gpt2", "seed=1"]) == "vit__gpt2__seed=1"
    assert pair_dirname("vit", "gpt2", ["decoder.name_or_path=builtin:x"]) == "vit__gpt2__decoder.name_or_path=builtin:x"
    assert pair_dirname("vit", "gpt2", ["output.overwrite=true", "hub.offline=true", "seed=2", "recipe=r"]) \
        == "vit__gpt2__seed=2"


def test_order_of_the_overrides_does_not_matter():
    overrides = ["seed=3", "+encoder.config_overrides.image_size=64", "cross_attention.init=zero"]
    names = {pair_dirname("vit", "gpt2", order) for order in itertools.permutations(overrides)}
    assert names == {"vit__gpt2__cross_attention.init=zero__encoder.config_overrides.image_size=64__seed=3"}


def test_append_prefix_is_dropped_because_it_composes_the_same_recipe():
    plain = pair_dirname("vit", "gpt2", ["encoder.config_overrides.drop_path_rate=0.0"])
    assert plain == "vit__gpt2__encoder.config_overrides.drop_path_rate=0.0"
    assert pair_dirname("vit", "gpt2", ["+encoder.config_overrides.drop_path_rate=0.0"]) == plain
    assert pair_dirname("vit", "gpt2", ["++encoder.config_overrides.drop_path_rate=0.0"]) == plain


def test_the_value_is_written_in_one_form_whatever_the_spacing():
    assert pair_dirname("vit", "gpt2", ["x=[1, 2]"]) == pair_dirname("vit", "gpt2", ["x=[1,2]"])


def test_punctuation_is_replaced_and_the_name_marked_with_a_hash():
    deleted = pair_dirname("vit", "gpt2", ["~encoder.config_overrides.foo"])
    assert deleted.startswith("vit__gpt2__encoder.config_overrides.foo@") and "~" not in deleted
    quoted = pair_dirname("vit", "gpt2", ["decoder.name_or_path='/models/my gpt2'"])
    assert quoted.startswith("vit__gpt2__decoder.name_or_path=_models_my_gpt2@")


def test_values_that_look_alike_after_replacement_get_different_names():
    lookalikes = ["x=a_b", "x=a/b", "x='a b'", "x=a__b", "x='a_b'", "~x=a_b", "x='a/b'", "x=a-b"]
    names = [pair_dirname("vit", "gpt2", [line]) for line in lookalikes]
    assert len(set(names)) == len(lookalikes), names


def test_a_separator_inside_a_value_does_not_merge_two_overrides():
    one = pair_dirname("vit", "gpt2", ["k=a__seed=1"])
    two = pair_dirname("vit", "gpt2", ["k=a", "seed=1"])
    assert two == "vit__gpt2__k=a__seed=1" and one != two
    assert pair_dirname("vit_", "gpt2", []) != pair_dirname("vit", "_gpt2", [])


def test_long_names_are_cut_and_stay_distinct():
    long_a, long_b = "x=" + "a" * 400, "x=" + "a" * 399 + "b"
    names = [pair_dirname("vit", "gpt2", [line]) for line in (long_a, long_b)]
    assert names[0] != names[1] and all(len(n.encode()) <= 200 for n in names)


# Override sets as a user may type them: dotted keys (underscores included), an optional
# + / ++ / ~ prefix, and values of every kind Hydra parses (numbers, booleans, null, bare
# words, quoted strings with any characters, lists).
_key_part = st.text("abcxyz_019", min_size=1, max_size=6).filter(lambda s: s[0].isalpha())
_keys = st.lists(_key_part, min_size=1, max_size=3).map(".".join)
_bare = st.text("abz09_-./:", min_size=1, max_size=8)
_quoted = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8).map(
    lambda s: QuotedString(text=s, quote=Quote.single).with_quotes())
_scalar = st.one_of(st.integers(-5, 5).map(str), st.sampled_from(["true", "false", "null", "1.5", "1e3"]), _bare, _quoted)
_values = st.one_of(_scalar, st.lists(_scalar, max_size=3).map(lambda xs: "[" + ",".join(xs) + "]"))


@st.composite
def _override_sets(draw) -> list[str]:
    lines = {}
    for key in draw(st.lists(_keys, max_size=4, unique=True)):
        prefix = draw(st.sampled_from(["", "+", "++", "~"]))
        if prefix == "~" and draw(st.booleans()):
            lines[key] = f"~{key}"
        else:
            lines[key] = f"{prefix}{key}={draw(_values)}"
    return list(lines.values())


def _typed(value):
    """A parsed value with its types, so 1, 1.0, True and '1' all differ."""
    if isinstance(value, list):
        return ("list", tuple(_typed(v) for v in value))
    return (type(value).__name__, value)


def _recipe_change(lines: list[str]) -> frozenset:
    """What the override set does to the recipe, as Hydra itself parses it."""
    change = set()
    for line in lines:
        try:
            override = _PARSER.parse_override(line)
        except Exception:  # not a valid override: not a recipe anyone can run
            assume(False)
        change.add((override.key_or_group, override.is_delete(), _typed(override.value())))
    return frozenset(change)


_names = st.sampled_from(["vit", "vit_tiny", "beit", "gpt2", "gpt2_tiny", "my_enc_", "a__b"])


@_SETTINGS
@given(_names, _names, _override_sets())
def test_names_hold_no_override_punctuation(encoder, decoder, lines):
    _recipe_change(lines)
    name = pair_dirname(encoder, decoder, lines)
    assert not set(name) & set("+~'\"/\\ \t\n[](){},"), name
    assert name and len(name.encode()) <= 200 and name not in (".", "..")
    assert name == pair_dirname(encoder, decoder, list(reversed(lines)))


@_SETTINGS
@given(_names, _names, _override_sets(), _names, _names, _override_sets())
def test_two_different_recipes_never_share_a_name(enc_a, dec_a, lines_a, enc_b, dec_b, lines_b):
    if pair_dirname(enc_a, dec_a, lines_a) == pair_dirname(enc_b, dec_b, lines_b):
        assert (enc_a, dec_a, _recipe_change(lines_a)) == (enc_b, dec_b, _recipe_change(lines_b))


@_SETTINGS
@given(_names, _names, _override_sets(), st.data())
def test_near_misses_never_share_a_name(encoder, decoder, lines, data):
    """Random pairs rarely collide by chance; change one override slightly and compare."""
    if not lines:
        return
    index = data.draw(st.integers(0, len(lines) - 1))
    changed = list(lines)
    line = changed[index]
    edit = data.draw(st.sampled_from(["prefix", "value", "quote"]))
    key = line.lstrip("+~").partition("=")[0]
    if edit == "prefix":
        changed[index] = f"~{key}" if not line.startswith("~") else f"{key}=1"
    elif edit == "value":
        changed[index] = f"{line.lstrip('~')}x" if "=" in line else f"{key}=x"
    else:
        value = line.partition("=")[2] if "=" in line else "v"
        changed[index] = f"{key}={QuotedString(text=value, quote=Quote.single).with_quotes()}"
    if _recipe_change(changed) != _recipe_change(lines):
        assert pair_dirname(encoder, decoder, changed) != pair_dirname(encoder, decoder, lines)
