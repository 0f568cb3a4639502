"""A forge's plan: everything a forge decides without reading a weight.

:func:`build_plan` reads the recipe and performs the refusals every architecture shares (an
invalid recipe, a missing torch, an output path that is a file or already holds an artifact), then
asks the recipe's architecture for the rest: its checkpoints' configs, tokenizer and image
processor (fetching only those from the hub), and every refusal of its own that needs no weights.
The stages that follow (:mod:`vedforge.pipeline.runner`) only execute it. ``vedforge plan`` prints it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vedforge.architectures import architecture
from vedforge.architectures.parts import FORGE, SKIP
from vedforge.pipeline.artifacts import (OutputLock, StagedArtifact, complete_artifact, not_a_directory,
                                         not_writable)
from vedforge.recipe.typed import Recipe, typed_recipe

__all__ = ["FORGE", "SKIP", "SkipPlan", "build_plan", "check_destination", "unread_weights_notes"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SkipPlan:
    """The plan of a recipe whose output already holds a complete, unaltered artifact of it."""

    recipe: Recipe
    output_dir: Path
    previous: dict  # that artifact's manifest
    outcome: str = SKIP


def build_plan(cfg: DictConfig) -> Any:
    """Plan the forge of ``cfg`` (a composed recipe) without reading any weight: a
    :class:`SkipPlan`, or the plan of the recipe's architecture.

    Raises:
        VedforgeError: every problem that needs no weights to be found.
    """
    from vedforge.pipeline.choice import choose

    # auto architecture and backend are chosen first: the recorded recipe, which resuming
    # compares, holds the choice.
    recipe = choose(typed_recipe(cfg))
    output_dir = recipe.output.dir
    if recipe.output.resume and not recipe.output.overwrite:
        previous = complete_artifact(output_dir, recipe.data)
        if previous is not None:
            return SkipPlan(recipe, output_dir, previous)
    if recipe.writes_pytorch:
        from vedforge.recipe.backends import reads_torch_in_worker, require_torch

        # Refused at once, not after minutes of loading, when PyTorch is needed but missing.
        require_torch("backend=pt" if recipe.backend == "pt" else "output.pytorch=true",
                      in_worker=reads_torch_in_worker(recipe))
    check_destination(output_dir, overwrite=recipe.output.overwrite)
    plan = architecture(recipe.architecture).plan(recipe)
    for note in unread_weights_notes(plan):
        log.warning(note)
    return plan


def unread_weights_notes(plan: Any) -> list[str]:
    """One note per part drawn at random from a checkpoint that holds weights of its own (a
    random-weight option whose ``name_or_path`` was pointed elsewhere): they are not read."""
    from vedforge.sources.resolve import weight_pattern_sets

    notes = []
    for role in ("encoder", "decoder"):
        part = plan.part(role)
        if not part.recipe.random_weights or part.source.kind == "builtin":
            continue
        if part.source.kind == "local":
            patterns = [p for group in weight_pattern_sets(torch_weights=True) + weight_pattern_sets(torch_weights=False)
                        for p in group]
            if not any(next(part.source.path.glob(pattern), None) for pattern in patterns):
                continue
            where = f"the weights in {part.source.path}"
        else:
            where = f"the weights of the hub repo {part.source.name_or_path}"
        notes.append(f"{role}.weights=random: {where} are not read; the {role} is drawn at random from its config. "
                     f"To start from them, add {role}.weights=pretrained.")
    return notes


def check_destination(final: Path, *, overwrite: bool) -> None:
    """Refuse an output location that cannot take the artifact, leaving nothing behind: a path
    that is a file or lies under one, a parent that cannot be created or written in, an existing
    artifact without ``overwrite``, a lock held."""
    final = final.absolute()
    error = not_a_directory(final) or not_writable(final)
    if error is not None:
        raise error
    StagedArtifact(final, overwrite=overwrite).check_contents()
    lock = OutputLock(final)
    if lock.path.exists():
        raise lock.refusal()
