"""The lines of a plan report every architecture shares: one input, as data and as text."""

from __future__ import annotations

from typing import Any

from vedforge.core.units import human_bytes


def part_summary(part: Any) -> dict[str, Any]:
    """One input of a plan as plain data."""
    source = part.source
    entry: dict[str, Any] = {
        "name_or_path": part.recipe.name_or_path,
        "kind": source.kind,
        "model_type": part.config.checkpoint.model_type,
        "family": part.family.label,
        "built_with": part.family.built_with,
        "weights": part.recipe.weights,
        "weight_files": [{"name": f.name, "bytes": f.bytes, "on_disk": f.on_disk} for f in part.files],
        "read_bytes": part.read_bytes,
        "download_bytes": part.download_bytes,
    }
    taken_from = getattr(part.config, "taken_from", None)
    if taken_from is not None:
        entry["taken_from"] = taken_from
    entry.update(source.location())
    return entry


def part_line(role: str, part: dict[str, Any]) -> str:
    """One input (a :func:`part_summary`) as two lines of text."""
    where = (f"{part['name_or_path']} @ {part.get('revision')} ({part.get('commit')})" if part["kind"] == "hub"
             else f"{part['name_or_path']} ({part['kind']}: {part['path']})")
    fetched = (f"{human_bytes(part['download_bytes'])} to download, {human_bytes(part['read_bytes'])} to read"
               if part["weights"] == "pretrained" else "no weights read")
    inside = f", its {part['taken_from']}" if part.get("taken_from") else ""
    return (f"  {role}: {where}{inside}\n    {part['model_type']} ({part['family']}, {part['built_with']}), "
            f"{part['weights']} weights; {fetched}")
