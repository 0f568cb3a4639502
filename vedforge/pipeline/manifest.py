"""The ``vedforge_manifest.json`` record: inputs, versions, parameter counts, file hashes.

It holds nothing about the run itself (no times, no paths of the run), so two forges of one
recipe write the same bytes. Manifests of older artifacts may also hold ``timings_s``; nothing
reads it.
"""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from vedforge.sources.resolve import ResolvedSource

_PACKAGES = ("vedforge", "transformers", "jax", "jaxlib", "flax", "tokenizers", "huggingface-hub", "hydra-core", "omegaconf")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that decide a forge's output."""
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def describe_input(source: ResolvedSource, *, model_type: str, weights: str,
                   initialisation: dict[str, Any] | None = None, taken_from: str | None = None) -> dict[str, Any]:
    """The manifest entry of one input: where it came from and what it resolved to (for a part of a
    whole multimodal checkpoint, the config attribute it was taken from), and for random weights
    how they were made."""
    entry: dict[str, Any] = {
        "name_or_path": source.name_or_path,
        "kind": source.kind,
        "model_type": model_type,
        "weights": weights,
    }
    if taken_from is not None:
        entry["taken_from"] = taken_from
    if initialisation is not None:
        entry["initialisation"] = initialisation
    entry.update(source.location())
    return entry


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest as sorted, indented JSON."""
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def read_manifest(directory: Path) -> dict[str, Any]:
    """Read a manifest back (``directory`` is an artifact directory)."""
    return json.loads((directory / "vedforge_manifest.json").read_text())


def manifest_head(plan: Any, sources: dict[str, ResolvedSource], arch: Any) -> dict[str, Any]:
    """The fields every manifest opens with: format, recipe, versions, inputs (each random part
    described by the architecture's ``initialisation(plan, role)``), seed, backend and weight layouts."""
    recipe = plan.recipe
    return {
        "format_version": 1,
        "recipe": recipe.data,
        "versions": {**package_versions(), **arch.extra_versions(plan)},
        "inputs": {
            role: describe_input(sources[role], model_type=plan.part(role).config.checkpoint.model_type,
                                 weights=recipe.part(role).weights, initialisation=arch.initialisation(plan, role),
                                 taken_from=getattr(plan.part(role).config, "taken_from", None))
            for role in ("encoder", "decoder")
        },
        "seed": recipe.seed,
        "backend": recipe.backend,
        "weight_layouts": [layout.layout.name for layout in plan.layouts],
        # What vedforge chose for the recipe's auto settings, and why (absent when it named them).
        **({"choices": recipe.choices} if recipe.choices else {}),
    }


def build_manifest(plan: Any, sources: dict[str, ResolvedSource], assembly: Any) -> dict[str, Any]:
    """The manifest of a forge of ``plan`` from ``sources``, with the parameters ``assembly`` holds;
    the file table is added once written."""
    from vedforge.architectures import architecture_of

    arch = architecture_of(plan)
    return {**manifest_head(plan, sources, arch), **arch.manifest_fields(plan, sources, assembly)}
