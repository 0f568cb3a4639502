"""Which weights files a forge will read for a part, and how many bytes, without opening them.

Local and cached files are measured with ``stat``; files still on the hub are measured from
the hub's file metadata, so ``vedforge plan`` can say how much a forge will download.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from vedforge.weights.checkpoint import find_weight_files
from vedforge.recipe.typed import HubRecipe, PartRecipe
from vedforge.sources.resolve import ResolvedSource, weight_pattern_sets

log = logging.getLogger("vedforge")


@dataclass(frozen=True)
class WeightFile:
    """A weights file a forge reads: its name, size, and whether it is already on disk."""

    name: str
    bytes: Optional[int]  # None when the hub did not say
    on_disk: bool



def planned_weight_files(source: ResolvedSource, part: PartRecipe, hub: HubRecipe, *, torch_weights: bool) -> tuple:
    """The weights files of ``source`` a forge reads (:class:`WeightFile` s).

    Raises:
        NotACheckpointError: a local checkpoint (or a cached one, offline) holds no weights.
    """
    from vedforge.sources.resolve import hub_offline

    if source.kind != "hub" or hub_offline(hub.offline):
        on_disk = _local_files(source.path, torch_weights, part.role)
        return tuple(WeightFile(p.name, p.stat().st_size, True) for p in on_disk)
    remote = _hub_files(source, part, hub, torch_weights)
    if remote is None:
        return ()
    return tuple(WeightFile(name, size, (source.path / name).is_file()) for name, size in remote)


def _local_files(path: Path, torch_weights: bool, role: str) -> list[Path]:
    if torch_weights:
        # What transformers' PyTorch classes read: safetensors, else .bin files.
        for patterns in weight_pattern_sets(torch_weights=True):
            found = sorted(p for pattern in patterns for p in path.glob(pattern))
            if found:
                return found
        return []
    return find_weight_files(path, role)[1]


def _hub_files(source: ResolvedSource, part: PartRecipe, hub: HubRecipe, torch_weights: bool) -> Optional[list[tuple[str, Optional[int]]]]:
    """``(name, bytes)`` of the weights files the fetch will download, from the hub's metadata
    (the first pattern set with a match, as the fetch chooses); None when the hub cannot say."""
    from fnmatch import fnmatch

    from huggingface_hub import HfApi

    prefix = f"{part.subfolder.strip('/')}/" if part.subfolder else ""
    try:
        info = HfApi(token=hub.token).model_info(part.name_or_path, revision=source.commit or part.revision,
                                                 files_metadata=True)
    except Exception as exc:  # the plan is informative here; the fetch reports hub errors properly
        log.debug("No file metadata from the hub for %s: %s", part.name_or_path, exc)
        return None
    siblings = [(s.rfilename, s.size) for s in info.siblings or []]
    for patterns in weight_pattern_sets(torch_weights=torch_weights):
        found = [(name[len(prefix):], size) for name, size in siblings
                 if name.startswith(prefix) and any(fnmatch(name, prefix + p) for p in patterns)]
        if found:
            return sorted(found)
    return []
