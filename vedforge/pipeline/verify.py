"""``vedforge verify DIR``: forge the recorded recipe again (for a ``vedforge convert`` output: convert
its recorded source again) and compare every artifact file's sha256."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from vedforge.core.errors import VedforgeError

EXIT_MISMATCH = 1


@dataclass
class FileCheck:
    """One artifact file's verdict."""

    name: str
    # "ok"; the rebuild against the manifest: "mismatch", "not rebuilt", "extra" (only in the
    # rebuild); the file on disk against the manifest: "altered", "missing" (deleted)
    status: str
    recorded: str | None
    rebuilt: str | None


def recorded_recipe(directory: Path):
    """The recipe stored in an artifact's manifest, as a typed config ready to forge."""
    from omegaconf import OmegaConf

    from vedforge.pipeline.manifest import read_manifest
    from vedforge.recipe.schema import ForgeConfig

    if not directory.exists():
        raise VedforgeError(
            f"'{directory}' does not exist; verify takes a directory written by vedforge (a forge's output "
            "directory or the OUT of vedforge convert).")
    if not directory.is_dir():
        raise VedforgeError(
            f"'{directory}' is a file, not a directory; verify takes a directory written by vedforge (a forge's "
            "output directory or the OUT of vedforge convert).")
    try:
        manifest = read_manifest(directory)
    except FileNotFoundError:
        raise VedforgeError(
            f"'{directory}' has no vedforge_manifest.json; verify takes a directory written by vedforge."
        ) from None
    except ValueError as exc:
        raise VedforgeError(f"The manifest in '{directory}' is not valid JSON ({exc}).") from None
    if isinstance(manifest.get("conversion"), dict):
        return manifest, None  # written by vedforge convert: verified by converting its source again
    recipe = manifest.get("recipe")
    if not isinstance(recipe, dict):
        raise VedforgeError(f"The manifest in '{directory}' records no recipe (written by an older vedforge?).")
    recipe.setdefault("backend", {"name": "flax"})  # artifacts from before the backend choice
    if recipe.get("hub", {}).get("token") == "<redacted>":
        recipe["hub"]["token"] = None  # the token comes from HF_TOKEN again, never from a file
    return manifest, OmegaConf.merge(OmegaConf.structured(ForgeConfig), recipe)


def verify(directory: Path, recipe_record=None) -> list[FileCheck]:
    """Re-forge the recipe recorded in ``directory`` into a temporary directory and compare hashes.

    ``recipe_record`` is what :func:`recorded_recipe` returned for ``directory``, when
    the caller has read it already.
    """
    from vedforge.pipeline.runner import forge

    directory = directory.absolute()
    manifest, cfg = recipe_record or recorded_recipe(directory)
    with tempfile.TemporaryDirectory(prefix="vedforge-verify-") as scratch:
        if cfg is None:
            rebuilt = _reconvert(manifest["conversion"], Path(scratch) / "rebuild")
        else:
            cfg.output.dir = str(Path(scratch) / "rebuild")
            cfg.output.resume = False
            rebuilt = forge(cfg, replay=False).manifest["files"]
    recorded = manifest.get("files", {})
    checks = []
    for name in sorted(set(recorded) | set(rebuilt)):
        old, new = recorded.get(name, {}).get("sha256"), rebuilt.get(name, {}).get("sha256")
        status = "not rebuilt" if new is None else "extra" if old is None else "ok" if old == new else "mismatch"
        checks.append(FileCheck(name, status, old, new))
    # The recorded hashes must also describe the files actually on disk.
    from vedforge.pipeline.artifacts import file_state

    for check in checks:
        if check.status == "ok":
            check.status = file_state(directory / check.name, recorded[check.name]) or "ok"
    return checks


def _reconvert(conversion: dict, out: Path) -> dict:
    """The file table of converting the recorded source again (``vedforge convert``'s artifacts)."""
    from vedforge.pipeline.convert import convert

    source = Path(conversion["source"])
    if not source.is_dir():
        raise VedforgeError(
            f"This directory was converted from '{source}', which no longer exists, so it cannot be converted again "
            "to compare."
        )
    return convert(source, out, max_shard_size=conversion.get("max_shard_size", "5GB")).manifest["files"]
