"""A forge of inputs forged before, replayed without planning it again.

Every file of an artifact depends only on the recipe, the checkpoints' files, the installed
libraries and vedforge's own code (two forges of one recipe are byte-identical, tested). A
forge's plan is mostly importing transformers to read configs and a tokenizer it then saves again;
for inputs it has forged before, the answer is already known. So after a forge, the record of
what it wrote besides the weights (configs, tokenizer, processor, card, manifest, the log lines
of its plan) is kept in the cache of derivations (:mod:`vedforge.core.derived_cache`) with its
weights job (:mod:`vedforge.pipeline.early_weights`), under a key of:

- the recipe as the manifest records it, and every file of both checkpoints: configs, tokenizer
  and processor files by sha256, weight files by size and modification time;
- the versions of every package the manifest records, and numpy's, safetensors', msgpack's and
  torch's;
- the sha256 of vedforge's own source files, so an edited checkout never replays an older forge.

A forge whose key has a record writes the weights from the job, streamed and hashed as always,
and compares every weight file's sha256 with the record's manifest. Only if all agree does it
write the recorded files and publish; otherwise the staged files are deleted and the forge is
planned and written as usual. Nothing is imported from transformers, jax, flax or torch.
``VEDFORGE_REPLAY=off`` (or ``VEDFORGE_CACHE=off``) plans every forge; ``vedforge verify``
always plans its rebuild.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

from vedforge.core.derived_cache import OFF

if TYPE_CHECKING:
    from omegaconf import DictConfig

log = logging.getLogger("vedforge")

KIND = "forge-record"
_FORMAT = 1
_MORE_PACKAGES = ("numpy", "safetensors", "msgpack", "torch", "ml_dtypes")
_code_digest: Optional[str] = None


def replay_enabled() -> bool:
    """False when ``VEDFORGE_REPLAY`` turns replays off."""
    return os.environ.get("VEDFORGE_REPLAY", "").strip().lower() not in OFF


def _vedforge_code() -> str:
    """The sha256 of vedforge's own source files (computed once per process)."""
    global _code_digest
    if _code_digest is None:
        root = Path(__file__).resolve().parents[1]
        digest = hashlib.sha256()
        for path in sorted(root.rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
        _code_digest = digest.hexdigest()
    return _code_digest


def record_key(cfg: "DictConfig", inputs: Optional[str] = None) -> Optional[str]:
    """The key a forge of ``cfg`` keeps its record under; None when its inputs cannot be keyed
    before planning. ``inputs`` is :func:`vedforge.pipeline.early_weights.inputs_key` of ``cfg``
    when the caller has it."""
    from vedforge.core.derived_cache import derivation_key
    from vedforge.pipeline.early_weights import inputs_key
    from vedforge.pipeline.manifest import package_versions

    inputs = inputs if inputs is not None else inputs_key(cfg)
    if inputs is None:
        return None
    versions = package_versions()
    for name in _MORE_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return derivation_key(KIND, _FORMAT, {"inputs": inputs, "versions": versions, "code": _vedforge_code()})


class PlanLog(logging.Handler):
    """The vedforge log records of a forge's plan, kept so its replay says the same."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[list[Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append([record.levelno, record.getMessage()])

    @contextmanager
    def attached(self) -> Iterator[None]:
        """Collect vedforge's records while the block runs."""
        logger = logging.getLogger("vedforge")
        logger.addHandler(self)
        try:
            yield
        finally:
            logger.removeHandler(self)


def keep_record(key: str, job: dict[str, Any], staging: Path, weight_files: set[str], manifest: dict[str, Any],
                plan_log: list[list[Any]], output_dir: Path) -> None:
    """Keep what a forge into ``output_dir`` wrote into ``staging`` besides its weights
    (``weight_files``), Hydra's records and its log, with its weights job, manifest and plan log,
    for :func:`replay`."""
    from vedforge.core.derived_cache import store
    from vedforge.pipeline.artifacts import HYDRA_RECORDS, MANIFEST

    files = {}
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        rel = path.relative_to(staging).as_posix()
        if rel in weight_files or rel == MANIFEST or rel.endswith(".log") or rel.split("/")[0] in HYDRA_RECORDS:
            continue
        files[rel] = base64.b64encode(path.read_bytes()).decode("ascii")
    store(KIND, key, {"job": job, "files": files, "manifest": manifest, "log": plan_log, "output_dir": str(output_dir)})


def lookup_record(key: str) -> Optional[dict[str, Any]]:
    """The record kept under ``key``, if it is whole."""
    from vedforge.core.derived_cache import lookup

    record = lookup(KIND, key)
    if not isinstance(record, dict) or not {"job", "files", "manifest", "log", "output_dir"} <= record.keys():
        return None
    return record


@dataclass(frozen=True)
class Replayed:
    """What a replay did: published ``output_dir``, or found a complete artifact of the recipe
    there already (``skipped``, with ``manifest`` that artifact's, as the plan's resume check does)."""

    output_dir: Path
    manifest: dict[str, Any]
    seconds: float
    skipped: bool = False


def replay(cfg: "DictConfig", record: dict[str, Any], hydra_records: Optional[Path]) -> Optional[Replayed]:
    """Forge ``cfg`` from ``record``: the weights written from its job and checked against its
    manifest's hashes, then its files. None when the weights differ from the record's (nothing is
    published then): the forge is to be planned.

    Raises:
        VedforgeError: the destination cannot take the artifact (as a planned forge would say).
    """
    from omegaconf import OmegaConf

    from vedforge.architectures import architecture
    from vedforge.pipeline.artifacts import OutputLock, StagedArtifact, complete_artifact, write_recipe_records
    from vedforge.pipeline.manifest import write_manifest
    from vedforge.pipeline.plan import check_destination
    from vedforge.recipe.typed import typed_recipe
    from vedforge.weights.progress import byte_progress

    started = time.perf_counter()
    recipe = typed_recipe(cfg)
    manifest = record["manifest"]
    output_dir = recipe.output.dir
    if recipe.output.resume and not recipe.output.overwrite:
        # Told here, not left to the plan: checking an artifact hashes every file of it.
        previous = complete_artifact(output_dir, manifest["recipe"])
        if previous is not None:
            return Replayed(output_dir, previous, time.perf_counter() - started, skipped=True)
    check_destination(output_dir, overwrite=recipe.output.overwrite)
    log.info("Replaying the forge of these inputs recorded earlier: its configs, tokenizer and card, and the "
             "weights written from the checkpoints and checked against its hashes")
    for level, message in record["log"]:
        log.log(level, "%s", message.replace(record["output_dir"], str(output_dir)))
    arch = architecture(record["job"]["architecture"])
    weights = {name: entry for name, entry in manifest["files"].items() if name not in record["files"]}
    with OutputLock(output_dir):
        staged = StagedArtifact(output_dir, overwrite=recipe.output.overwrite)
        staged.check()
        with staged:
            out = staged.path
            with byte_progress("Reading and writing weights", sum(entry["bytes"] for entry in weights.values())):
                hashes = arch.write_weights_job(record["job"]["job"], out, threading.Event())
            written = {path.relative_to(out).as_posix(): digest for path, digest in hashes.items()}
            if written != {name: entry["sha256"] for name, entry in weights.items()}:
                log.info("The weights differ from the recorded forge's: planning this forge")
                return None
            for path in hashes:
                staged.sync_in_background(path)
            for name, data in record["files"].items():
                target = out / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(base64.b64decode(data))
            write_recipe_records(out, OmegaConf.to_yaml(OmegaConf.create(manifest["recipe"])), hydra_records, staged.final)
            write_manifest(out / "vedforge_manifest.json", manifest)
            final = staged.publish()
    elapsed = time.perf_counter() - started
    log.info("Forged %s + %s (replayed): %s parameters in %.1f s -> %s", manifest["inputs"]["encoder"]["model_type"],
             manifest["inputs"]["decoder"]["model_type"], f"{manifest['parameters']['total']:,}", elapsed, final)
    return Replayed(final, manifest, elapsed)
