"""The config tree: every group option composes against the schema; bad keys and types fail at compose time."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from conftest import compose_recipe
from vedforge.core.resources import group_options as _options
from vedforge.recipe.schema import BackendName, PolicyKind, Weights


@pytest.mark.parametrize("group", ["encoder", "decoder", "token_policy", "backend"])
def test_every_option_composes(group):
    options = _options(group)
    assert options, f"no options in conf/{group}"
    for option in options:
        cfg = compose_recipe([f"{group}={option}"])
        node = cfg[group]
        if group == "token_policy":
            assert node.kind == PolicyKind(option)
        elif group == "backend":
            assert node.name == BackendName(option)
        elif option == "any":
            # The generic option names no checkpoint: Hydra reports the missing name_or_path.
            assert OmegaConf.is_missing(node, "name_or_path") and node.weights == Weights.pretrained
        else:
            assert node.name_or_path
            assert isinstance(node.weights, Weights)


def test_tiny_options_are_offline_and_real_ones_name_hub_repos():
    for group in ("encoder", "decoder"):
        for option in (o for o in _options(group) if o != "any"):
            node = compose_recipe([f"{group}={option}"])[group]
            if option.endswith("_tiny"):
                assert node.name_or_path.startswith("builtin:") and node.weights == Weights.random
            else:
                assert "/" in node.name_or_path and node.weights == Weights.pretrained


def test_config_overrides_merge_into_the_recipe():
    cfg = compose_recipe(["encoder=vit", "+encoder.config_overrides.image_size=384"])
    assert cfg.encoder.config_overrides.image_size == 384


@pytest.mark.parametrize(
    "override",
    ["encoder.revison=main", "seed=abc", "output.overwrite=maybe", "token_policy.kind=sometimes", "encoder.weights=zeros"],
)
def test_misspelt_keys_and_wrong_types_fail_at_compose_time(override):
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose_recipe([override])


def test_unknown_group_option_fails_at_compose_time():
    with pytest.raises(ConfigCompositionException, match="vit_huge"):
        compose_recipe(["encoder=vit_huge"])


def test_the_generic_option_says_which_checkpoint_is_missing(tmp_path):
    from vedforge.recipe.validate import recipe_problems

    problems = recipe_problems(compose_recipe(["encoder=any", f"output.dir={tmp_path}"]))
    assert any("encoder.name_or_path" in p for p in problems), problems
    assert recipe_problems(compose_recipe(["encoder=any", "encoder.name_or_path=org/tower",
                                           f"output.dir={tmp_path}"])) == []
