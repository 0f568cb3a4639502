"""Turn a recipe's ``name_or_path`` into a local checkpoint directory.

Everything downstream works from a local directory. Hub checkpoints are fetched (or found
in the cache) here, once, and the commit they resolved to is recorded for the manifest.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from vedforge.core.errors import NotACheckpointError, SourceNotFoundError
from vedforge.core.resources import assets_dir

BUILTIN_PREFIX = "builtin:"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")

# Only what a forge reads: configs, tokenizer and processor files, and Flax weights
# (preferred) or safetensors weights. The PyTorch .bin files most repos also carry are skipped.
_METADATA_PATTERNS = ["*.json", "*.txt", "*.model", "*.tiktoken"]
_WEIGHT_PATTERN_SETS = (["flax_model*.msgpack"], ["model*.safetensors"])
# Encoders built with PyTorch (backend=pt, no Flax port) read what transformers' PyTorch
# classes read; older repos have only .bin files.
_TORCH_WEIGHT_PATTERN_SETS = (["model*.safetensors"], ["pytorch_model*.bin"])


@dataclass(frozen=True)
class ResolvedSource:
    """A checkpoint located on disk, and where it came from."""

    role: str  # "encoder" or "decoder"
    name_or_path: str
    kind: str  # "hub", "local" or "builtin"
    path: Path
    revision: Optional[str] = None
    commit: Optional[str] = None

    def describe(self) -> str:
        """A short human description used in messages."""
        return f"'{self.name_or_path}'"

    def location(self) -> dict[str, Any]:
        """Where the part was found, as the manifest and the plan record it: the hub revision and
        the commit it resolved to, or the local path."""
        if self.kind == "hub":
            return {"revision": self.revision, "commit": self.commit}
        return {"path": str(self.path)}


def builtin_names() -> list[str]:
    """Names of the checkpoints embedded in vedforge."""
    root = assets_dir()
    return sorted(p.name for p in root.iterdir() if (p / "config.json").is_file()) if root.is_dir() else []


def weight_pattern_sets(*, torch_weights: bool) -> tuple[list[str], ...]:
    """The weights file patterns a fetch tries, in order (it stops at the first set that matches)."""
    return _TORCH_WEIGHT_PATTERN_SETS if torch_weights else _WEIGHT_PATTERN_SETS


def hub_offline(requested: bool) -> bool:
    """True when the recipe or the environment (HF_HUB_OFFLINE) forbids network access."""
    from huggingface_hub import constants

    return requested or bool(constants.HF_HUB_OFFLINE)


def resolve_source(
    role: str,
    name_or_path: str,
    *,
    revision: Optional[str],
    subfolder: str,
    cache_dir: Optional[str],
    offline: bool,
    token: Optional[str],
    need_weights: bool,
    torch_weights: bool = False,
) -> ResolvedSource:
    """Locate a checkpoint and return its directory.

    Without ``need_weights`` only configs, tokenizer and processor files are fetched, so a
    pairing can be checked before gigabytes of weights are; ``torch_weights`` fetches the
    files transformers' PyTorch classes read instead of the Flax-readable ones.

    Raises:
        SourceNotFoundError: the name is neither an existing path, a builtin, nor a hub repo
            that can be fetched (or found in the cache while offline).
        NotACheckpointError: the directory exists but holds no ``config.json``.
    """
    where = f"{role}.name_or_path='{name_or_path}'"
    if name_or_path.startswith(BUILTIN_PREFIX):
        name = name_or_path[len(BUILTIN_PREFIX):]
        path = assets_dir() / name
        # Only the listed names: "builtin:/abs/path" or "builtin:../x" must not pass as embedded.
        if name not in builtin_names():
            raise SourceNotFoundError(
                f"There is no embedded checkpoint named '{name}' ({where}). "
                f"Embedded checkpoints: {', '.join(BUILTIN_PREFIX + n for n in builtin_names())}."
            )
        return ResolvedSource(role, name_or_path, "builtin", path)

    local = Path(name_or_path).expanduser()
    if local.exists():
        path = local.resolve() / subfolder if subfolder else local.resolve()
        _require_checkpoint_dir(path, where)
        return ResolvedSource(role, name_or_path, "local", path)
    if name_or_path.startswith((".", "/", "~")) or not _REPO_ID.match(name_or_path):
        raise SourceNotFoundError(
            f"The {role} checkpoint path '{name_or_path}' does not exist ({where}). "
            "Give an existing local checkpoint directory, a Hugging Face hub repo id such as "
            "'google/vit-base-patch16-224-in21k', or an embedded checkpoint "
            f"({', '.join(BUILTIN_PREFIX + n for n in builtin_names())})."
        )
    path, commit = _fetch_from_hub(
        role, name_or_path, revision=revision, subfolder=subfolder, cache_dir=cache_dir,
        offline=offline, token=token, need_weights=need_weights, torch_weights=torch_weights,
    )
    _require_checkpoint_dir(path, where)
    return ResolvedSource(role, name_or_path, "hub", path, revision=revision or "main", commit=commit)


def _require_checkpoint_dir(path: Path, where: str) -> None:
    if not path.is_dir():
        raise NotACheckpointError(f"'{path}' is not a directory ({where}); a checkpoint is a directory holding config.json.")
    if not (path / "config.json").is_file():
        found = sorted(p.name for p in path.iterdir())[:8]
        raise NotACheckpointError(
            f"The directory '{path}' is not a checkpoint: it has no config.json ({where}; it holds: "
            f"{', '.join(found) if found else 'nothing'}). Point name_or_path at a directory written by "
            "save_pretrained, or at a hub repo id."
        )


def _fetch_from_hub(
    role: str, repo_id: str, *, revision: Optional[str], subfolder: str, cache_dir: Optional[str],
    offline: bool, token: Optional[str], need_weights: bool, torch_weights: bool = False,
) -> tuple[Path, str]:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = hub_offline(offline)
    prefix = f"{subfolder.strip('/')}/" if subfolder else ""
    weight_sets = _TORCH_WEIGHT_PATTERN_SETS if torch_weights else _WEIGHT_PATTERN_SETS
    pattern_sets = [_METADATA_PATTERNS] + ([list(s) for s in weight_sets] if need_weights else [])
    where = f"{role}.name_or_path='{repo_id}', revision={revision or 'main'}"
    snapshot: Optional[Path] = None
    try:
        for patterns in pattern_sets:
            snapshot = Path(
                snapshot_download(
                    repo_id,
                    revision=revision,
                    cache_dir=cache_dir,
                    local_files_only=offline,
                    token=token,
                    allow_patterns=[prefix + p for p in patterns],
                )
            )
            # Flax weights found: the safetensors set would be a second, redundant download.
            if patterns is not _METADATA_PATTERNS and _has_weights(snapshot / subfolder):
                break
    except RevisionNotFoundError:
        raise SourceNotFoundError(
            f"The hub repo '{repo_id}' has no revision '{revision}' ({where}). Give a branch, tag or commit that exists."
        ) from None
    except GatedRepoError:
        raise SourceNotFoundError(
            f"The hub repo '{repo_id}' is gated ({where}): accept its terms on the hub and set HF_TOKEN."
        ) from None
    except RepositoryNotFoundError:
        raise SourceNotFoundError(
            f"There is no hub repo '{repo_id}' ({where}), or it is private and no token was given. "
            "Check the spelling, set HF_TOKEN for a private repo, or give a local checkpoint directory."
        ) from None
    except LocalEntryNotFoundError:
        cache = cache_dir or os.environ.get("HF_HUB_CACHE") or "the default Hugging Face cache"
        if offline:
            raise SourceNotFoundError(
                f"'{repo_id}' at revision {revision or 'main'} is not in {cache} and offline mode is on "
                f"({where}). Run once with network access (hub.offline=false, HF_HUB_OFFLINE unset) to fill "
                "the cache, or point name_or_path at a local checkpoint directory."
            ) from None
        raise SourceNotFoundError(
            f"'{repo_id}' could not be fetched from the hub and is not in {cache} ({where}). "
            "Check the network, or point name_or_path at a local checkpoint directory."
        ) from None
    except HFValidationError:
        raise SourceNotFoundError(
            f"'{repo_id}' is neither an existing path nor a valid hub repo id ({where})."
        ) from None
    assert snapshot is not None
    # Snapshot directories are named by the commit they hold.
    return snapshot / subfolder if subfolder else snapshot, snapshot.name


def _has_weights(path: Path) -> bool:
    return any(path.glob("flax_model*.msgpack")) or any(path.glob("model*.safetensors")) or any(path.glob("pytorch_model*.bin"))


def locate(part: Any, hub: Any, *, need_weights: bool, torch_weights: bool = False) -> ResolvedSource:
    """Resolve a recipe part (:class:`vedforge.recipe.typed.PartRecipe`) with the recipe's hub settings."""
    return resolve_source(
        part.role, part.name_or_path, revision=part.revision, subfolder=part.subfolder, cache_dir=hub.cache_dir,
        offline=hub.offline, token=hub.token, need_weights=need_weights, torch_weights=torch_weights,
    )
