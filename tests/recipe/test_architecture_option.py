"""The architecture a recipe names is one of the folders under vedforge/architectures/."""

from __future__ import annotations

import pytest

from conftest import compose_recipe
from vedforge.architectures import architecture
from vedforge.architectures.interface import Architecture
from vedforge.core.errors import RecipeError
from vedforge.core.resources import architecture_names, group_options
from vedforge.recipe.validate import validate_recipe


def test_every_architecture_folder_has_a_config_option_and_an_architecture_object():
    assert architecture_names() == ["cross_attention", "prefix"]
    # auto is no architecture of its own: vedforge.pipeline.choice picks one of the others.
    assert set(group_options("architecture")) == {*architecture_names(), "auto"}
    for name in architecture_names():
        arch = architecture(name)
        assert isinstance(arch, Architecture) and arch.name == name


def test_an_unknown_architecture_name_is_refused_with_the_ones_there_are():
    cfg = compose_recipe(["architecture.name=llava_next"])
    with pytest.raises(RecipeError, match=r"architecture.name=llava_next .*cross_attention, prefix"):
        validate_recipe(cfg)
