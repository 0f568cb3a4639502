"""What every architecture's plan is made of: its located, configured inputs and its weight layouts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vedforge.families.registry import ModelFamily
from vedforge.recipe.typed import PartRecipe
from vedforge.sources.resolve import ResolvedSource
from vedforge.sources.weight_files import WeightFile
from vedforge.weights.layouts import WeightLayout

# A plan's outcome: forge the recipe, or skip it because its output is already complete.
FORGE, SKIP = "forge", "skip"


@dataclass(frozen=True)
class PartPlan:
    """One input of the pairing, located and configured."""

    recipe: PartRecipe
    source: ResolvedSource  # configs, tokenizer and processor on disk; weights maybe not yet
    config: Any  # vedforge.sources.loading.PartConfig
    family: ModelFamily
    files: tuple[WeightFile, ...]  # the weights to read (none for random weights)
    saved_config: Any  # the config the checkpoint's tensors were saved with (no overrides)

    @property
    def role(self) -> str:
        return self.recipe.role

    @property
    def built_with_torch(self) -> bool:
        """An encoder built by transformers' PyTorch classes (a decoder is always assembled in Flax layout)."""
        return self.role == "encoder" and self.family.built_with == "pytorch"

    @property
    def read_bytes(self) -> int:
        return sum(f.bytes or 0 for f in self.files)

    @property
    def download_bytes(self) -> int:
        return sum(f.bytes or 0 for f in self.files if not f.on_disk)


def roles_by_weights(plan: Any) -> tuple[list[str], list[str]]:
    """The plan's parts whose weights are read from a checkpoint, and those drawn at random."""
    roles = ("encoder", "decoder")
    return ([role for role in roles if not plan.part(role).recipe.random_weights],
            [role for role in roles if plan.part(role).recipe.random_weights])


@dataclass(frozen=True)
class LayoutPlan:
    """A weight layout to write and the files it will write."""

    layout: WeightLayout
    files: tuple[str, ...]
    bytes: int  # tensor bytes (the files add a few header bytes)
