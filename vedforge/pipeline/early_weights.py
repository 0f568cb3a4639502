"""Weights written while a forge plans, when an earlier forge of the same inputs said what they are.

Planning a forge is mostly importing transformers and reading configs: CPU work under the GIL.
Writing the weights is mostly the kernel copying checkpoint bytes and hashing them: work that
releases the GIL. The two could overlap, but the write follows the plan. What the write needs,
though, is plain data (an architecture's *weights job*: the tensor tree, the seed, the
initialiser's scale, the files), and it depends only on the recipe and the checkpoints' files.

So every forge keeps its weights job in the cache of derivations
(:mod:`vedforge.core.derived_cache`) under a key of the recipe and a fingerprint of the
checkpoints' local files, both read without transformers. The next forge of those inputs starts
writing that job at once, in a thread, into a directory of its own beside the output; it plans
as usual; and it adopts the written files only when its plan's own job is equal to the one it
followed. Anything else (a changed config, another library version, a plan that fails or skips)
deletes them, and the weights are written from the plan as always. A stale prediction costs one
wasted write; it never changes what is published.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Mapping, Optional

from omegaconf import DictConfig

log = logging.getLogger("vedforge")

KIND = "weights-job"
_FORMAT = 1
# Files whose size and modification time stand for their bytes (hashing gigabytes to predict
# a write would cost what the prediction saves): weights, and anything this large (an ONNX
# export beside the checkpoint); every other file (configs, tokenizer, processor) is hashed.
_WEIGHT_SUFFIXES = (".msgpack", ".safetensors", ".bin", ".pt", ".pth", ".h5", ".ckpt")
_HASHED_UP_TO = 16 << 20


def _fingerprint(directory: Path) -> list[list[Any]]:
    """The files of a checkpoint directory: weights by size and modification time, the rest
    (configs, tokenizer, processor) by their sha256."""
    rows: list[list[Any]] = []
    for path in sorted(directory.iterdir()):
        if not path.is_file():
            continue
        stat = path.stat()
        if path.name.endswith(_WEIGHT_SUFFIXES) or stat.st_size > _HASHED_UP_TO:
            rows.append([path.name, stat.st_size, stat.st_mtime_ns])
        else:
            rows.append([path.name, hashlib.sha256(path.read_bytes()).hexdigest()])
    return rows


def _local_checkpoint(name_or_path: str, subfolder: str) -> Optional[Path]:
    """The directory of an embedded or local checkpoint; None for a hub name, which only the
    plan may resolve (it may need the network)."""
    from vedforge.core.resources import assets_dir
    from vedforge.sources.resolve import BUILTIN_PREFIX, builtin_names

    if name_or_path.startswith(BUILTIN_PREFIX):
        name = name_or_path[len(BUILTIN_PREFIX):]
        return assets_dir() / name if name in builtin_names() else None
    local = Path(name_or_path).expanduser()
    if not local.is_dir():
        return None
    path = local.resolve() / subfolder if subfolder else local.resolve()
    return path if path.is_dir() else None


def inputs_key(cfg: DictConfig) -> Optional[str]:
    """The key a forge of ``cfg`` keeps its weights job under: the recipe as the manifest records
    it and the fingerprints of both checkpoints' files. None when a part is drawn at random or is
    not a local or embedded checkpoint, or the recipe is invalid (the plan says why)."""
    from vedforge.core.derived_cache import derivation_key
    from vedforge.core.errors import VedforgeError
    from vedforge.recipe.typed import ROLES, typed_recipe

    try:
        recipe = typed_recipe(cfg)
    except VedforgeError:
        return None
    sources = {}
    for role in ROLES:
        part = recipe.part(role)
        if part.random_weights:
            return None  # no architecture keeps a job for drawn parts: nothing to predict
        directory = _local_checkpoint(part.name_or_path, part.subfolder)
        if directory is None:
            return None
        try:
            sources[role] = {"path": str(directory), "files": _fingerprint(directory)}
        except OSError:
            return None
    return derivation_key(KIND, _FORMAT, {"recipe": recipe.data, "sources": sources})


class EarlyWeights:
    """The weights job kept for one forge's inputs, and the early write of it, if one runs."""

    def __init__(self, key: str, kept: Optional[dict[str, Any]]):
        self.key, self.kept = key, kept
        self.directory: Optional[Path] = None
        self._thread: Optional[threading.Thread] = None
        self._cancel = threading.Event()
        self._hashes: dict[Path, str] = {}
        self._failure: list[BaseException] = []

    def begin(self, output_dir: Path) -> None:
        """Start writing the kept job into a new directory beside ``output_dir``. Nothing starts when
        no job is kept, when ``output_dir`` already holds files (the plan will skip a complete
        artifact, or refuse, or replace it: rarely worth a speculative write), or when the directory
        cannot be made."""
        from vedforge.architectures import architecture
        from vedforge.pipeline.artifacts import EARLY_PREFIX, is_artifact_dir

        final = output_dir.absolute()
        if self.kept is None or is_artifact_dir(final):
            return
        try:
            arch = architecture(self.kept["architecture"])
            self.directory = Path(tempfile.mkdtemp(prefix=f".{final.name}.{EARLY_PREFIX}{os.getpid()}-", dir=final.parent))
        except (OSError, KeyError, ValueError):
            return
        job, directory = self.kept["job"], self.directory

        def run() -> None:
            try:
                self._hashes.update(arch.write_weights_job(job, directory, self._cancel))
            except BaseException as exc:  # reported by adopt(), which then writes from the plan
                self._failure.append(exc)

        self._thread = threading.Thread(target=run, name="vedforge-early-weights", daemon=True)
        self._thread.start()
        log.info("Writing the weights while planning, as the last forge of these inputs wrote them")

    def adopt(self, current: Optional[dict[str, Any]], staging: Path) -> Optional[dict[Path, str]]:
        """The early write's files moved into ``staging`` when the plan's weights job ``current``
        (:func:`plan_job`) is the one it followed (``{path: sha256}``), else None, the early files
        deleted. Either way ``current`` is kept for the next forge of these inputs."""
        from vedforge.core.derived_cache import store

        if current is not None and current != self.kept:
            store(KIND, self.key, current)
        if self._thread is None:
            return None
        if current is None or current != self.kept:
            log.info("The plan differs from the last forge of these inputs: its weights are written again")
            self.close()
            return None
        self._thread.join()
        if self._failure:
            log.info("The weights written while planning are not used (%s); writing them again", self._failure[0])
            self.close()
            return None
        assert self.directory is not None
        adopted = {}
        for path, digest in self._hashes.items():
            moved = staging / path.relative_to(self.directory)
            moved.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, moved)
            adopted[moved] = digest
        self.close()
        return adopted

    def close(self) -> None:
        """Stop the early write if it runs, and delete whatever it left."""
        if self._thread is not None:
            self._cancel.set()
            self._thread.join()
            self._thread = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


def plan_job(arch: Any, plan: Any) -> Optional[dict[str, Any]]:
    """``plan``'s weights job as forges keep it: JSON data naming its architecture; None when the
    plan's weights need the plan itself."""
    job = arch.weights_job(plan)
    return None if job is None else json.loads(json.dumps({"architecture": arch.name, "job": job}))


def start_early_weights(cfg: DictConfig, key: Optional[str] = None) -> Optional[EarlyWeights]:
    """For a forge of ``cfg``: the kept weights job of its inputs, its early write started if
    one is kept; None when the inputs cannot be keyed before planning."""
    from vedforge.core.derived_cache import lookup

    key = key if key is not None else inputs_key(cfg)
    if key is None:
        return None
    kept = lookup(KIND, key)
    early = EarlyWeights(key, kept if isinstance(kept, Mapping) and "job" in kept else None)
    early.begin(Path(str(cfg.output.dir)))
    return early
