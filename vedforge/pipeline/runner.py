"""Forge one model from a composed recipe: plan, fetch, load, assemble, write, publish.

The order matters: everything that can be decided from configs (sources, model types,
token ids, the output location) is checked before any weights are read, and nothing
appears under the output name until the artifact is complete.
"""

from __future__ import annotations

import errno
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from omegaconf import DictConfig, OmegaConf

from vedforge.architectures import architecture_of
from vedforge.core.errors import OutputError
from vedforge.pipeline.early_weights import EarlyWeights, inputs_key, plan_job, start_early_weights
from vedforge.pipeline.artifacts import (MANIFEST, OutputLock, StagedArtifact, file_table, is_artifact_dir,
                                         write_recipe_records)
from vedforge.pipeline.manifest import build_manifest, write_manifest
from vedforge.pipeline.plan import SKIP, build_plan
from vedforge.pipeline.plan_report import FORGE_AGAIN, log_plan
from vedforge.pipeline.replay import PlanLog, keep_record, lookup_record, replay_enabled
from vedforge.pipeline.replay import record_key as replay_key, replay as replay_record
from vedforge.recipe.typed import ROLES
from vedforge.weights.progress import byte_progress

log = logging.getLogger("vedforge")


@dataclass
class ForgeResult:
    """What a forge produced."""

    output_dir: Path
    manifest: dict[str, Any]
    # True when output_dir already held a complete artifact of this very recipe.
    skipped: bool = False
    # Checkpoints read from disk per role (0 when a sweep's cache already held them).
    loads: dict[str, int] = field(default_factory=dict)
    # Seconds per stage, and "total": a record of this run, logged to vedforge.log and kept out of
    # the artifact, whose files depend on the recipe alone.
    timings_s: dict[str, float] = field(default_factory=dict)


class PartCache:
    """Checkpoint tensors shared by the forges of one process, so a sweep over N encoders and
    M decoders reads N + M checkpoints instead of 2 x N x M. States are never mutated."""

    def __init__(self) -> None:
        self._states: dict[tuple, Any] = {}

    def get(self, key: tuple, load) -> tuple[Any, bool]:
        """The state for ``key``, and whether it had to be loaded."""
        if key in self._states:
            return self._states[key], False
        state = load()
        self._states[key] = state
        return state, True


class _Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def step(self, name: str, message: str) -> Iterator[None]:
        log.info(message)
        start = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - start, 3)

    def finish(self, started: float) -> dict[str, float]:
        """Each stage's seconds, and the total since ``started``."""
        return {**self.timings, "total": round(time.perf_counter() - started, 3)}


def forge(cfg: DictConfig, *, hydra_records: Optional[Path] = None, cache: Optional[PartCache] = None,
          replay: bool = True) -> ForgeResult:
    """Forge the model described by ``cfg`` into ``cfg.output.dir``: plan, then fetch, load,
    assemble, write and publish.

    Args:
        cfg: a composed recipe (see :class:`vedforge.recipe.schema.ForgeConfig`).
        hydra_records: Hydra's ``.hydra`` directory for this run, copied into the artifact
            when the artifact is written somewhere other than Hydra's run directory.
        cache: checkpoint tensors shared with other forges in this process (a sweep).
        replay: replay the record an identical earlier forge kept, if any (:mod:`vedforge.pipeline.replay`);
            ``vedforge verify`` plans its rebuild instead.

    Raises:
        VedforgeError: any problem the user can fix; nothing is written under the output name.
    """
    timer = _Timer()
    started = time.perf_counter()
    # The key of a single forge's inputs (None for a sweep's, which share checkpoints instead).
    inputs = inputs_key(cfg) if cache is None else None
    record_key = None
    if inputs is not None and replay_enabled():
        # A single forge of inputs forged before: their record answers what the plan would.
        record_key = replay_key(cfg, inputs)
        record = lookup_record(record_key) if record_key is not None else None
        if record is not None and replay and (replayed := _replay(cfg, record, hydra_records)) is not None:
            return replayed
    plan_log = PlanLog()
    # A single forge of local checkpoints starts writing the weights the last forge of the same
    # inputs wrote while it plans, and keeps them only if the plan agrees (early_weights). A
    # sweep shares its checkpoints' tensors between pairs instead.
    early = start_early_weights(cfg, inputs) if inputs is not None else None
    try:
        with timer.step("plan", "Planning the forge from configs"), plan_log.attached():
            plan = build_plan(cfg)
            log_plan(plan)
        if plan.outcome == SKIP:
            return _skipped(plan.output_dir, plan.previous, timer.finish(started))
        arch = architecture_of(plan)
        # What the weights are as plain data, kept for the next forge of these inputs.
        job = plan_job(arch, plan) if inputs is not None else None
        # The output is checked and claimed before anything is fetched: a download is never
        # spent on a forge that cannot publish.
        with OutputLock(plan.output_dir):
            staged = StagedArtifact(plan.output_dir, overwrite=plan.recipe.output.overwrite)
            staged.check()
            with timer.step("fetch", "Fetching weights"):
                sources = arch.fetch(plan)
            with timer.step("load", arch.load_message(plan)):
                states, loads = load(plan, sources, cache or PartCache())
            with timer.step("assemble", arch.assemble_message):
                assembly, tensors = arch.assemble(plan, states)
            del states
            try:
                with staged:
                    manifest = write(plan, sources, assembly, tensors, staged, hydra_records, timer, early, job)
                    if record_key is not None and job is not None:
                        weights = {name for layout in plan.layouts for name in layout.files}
                        keep_record(record_key, job, staged.path, weights, manifest, plan_log.records, plan.output_dir)
                    final = staged.publish()
            except OSError as exc:
                # A full disk, a quota, a file system turned read-only: nothing was published.
                kept = " The artifact already there is untouched." if is_artifact_dir(staged.final) else ""
                raise OutputError(
                    f"Writing the artifact to '{staged.final}' failed: {exc.strerror or exc} "
                    f"({errno.errorcode.get(exc.errno, exc.errno)}). Nothing was published.{kept} Free space there, "
                    "or set output.dir to another location."
                ) from None
    finally:
        if early is not None:
            early.close()
    timings = timer.finish(started)
    counts = manifest["parameters"]
    log.info(
        "Forged %s + %s: %s parameters (%s new) in %.1f s -> %s",
        manifest["inputs"]["encoder"]["model_type"], manifest["inputs"]["decoder"]["model_type"],
        f"{counts['total']:,}", f"{counts['new']:,}", timings["total"], final,
    )
    log.info("Stage times: %s", ", ".join(f"{name} {seconds:.3f} s" for name, seconds in timings.items()))
    return ForgeResult(final, manifest, loads=loads, timings_s=timings)


def _skipped(output_dir: Path, previous: dict[str, Any], timings: dict[str, float]) -> ForgeResult:
    """The result of a forge whose output already holds a complete artifact of its recipe."""
    log.info("Already complete, skipped: %s (%s)", output_dir, FORGE_AGAIN)
    return ForgeResult(output_dir, previous, skipped=True, loads={"encoder": 0, "decoder": 0}, timings_s=timings)


def _replay(cfg: DictConfig, record: dict[str, Any], hydra_records: Optional[Path]) -> Optional[ForgeResult]:
    """The replayed forge (:func:`vedforge.pipeline.replay.replay`), or None to plan it."""
    try:
        replayed = replay_record(cfg, record, hydra_records)
    except OSError as exc:
        log.info("The recorded forge could not be replayed (%s): planning this forge", exc.strerror or exc)
        return None
    if replayed is None:
        return None
    timings = {"total": round(replayed.seconds, 3)}
    if replayed.skipped:
        return _skipped(replayed.output_dir, replayed.manifest, timings)
    return ForgeResult(replayed.output_dir, replayed.manifest, loads={"encoder": 1, "decoder": 1}, timings_s=timings)


def load(plan: Any, sources: dict[str, Any], cache: PartCache) -> tuple[dict[str, Any], dict[str, int]]:
    """Each part's tensors (indexed lazily, or drawn for random weights), shared through ``cache``
    with the other forges of a sweep; and whether each had to be read."""
    arch = architecture_of(plan)
    states, loads = {}, {}
    for role in ROLES:
        form, read = arch.part_reader(plan, role, sources[role])
        part = plan.part(role).recipe
        # What the state is made of: the checkpoint's tensors, or for random weights the seed they are drawn from.
        key = (form, role, str(sources[role].path), part.weights, plan.recipe.seed if part.random_weights else None,
               part.overrides_key())
        states[role], loaded = cache.get(key, read)
        loads[role] = int(loaded)
        if not loaded:
            log.info("Reusing the %s checkpoint already read in this sweep", role)
    return states, loads


def write(plan: Any, sources: dict[str, Any], assembly: Any, tensors: dict[str, Any], staged: StagedArtifact,
          hydra_records: Optional[Path], timer: "_Timer", early: Optional[EarlyWeights] = None,
          job: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Every file of the artifact into the staging directory; returns the manifest. Every file,
    the manifest included, depends on the plan alone, so two forges of one recipe are
    byte-identical; the stage times are the run's, in ``timer``. The weights files are those
    ``early`` wrote while planning when the plan's weights ``job`` is what it wrote."""
    arch = architecture_of(plan)
    out = staged.path
    recipe_text = OmegaConf.to_yaml(OmegaConf.create(plan.recipe.data))
    with timer.step("write_weights", f"Writing the weights to {staged.final}"), \
            byte_progress("Reading and writing weights", plan.write_bytes):
        weight_hashes = early.adopt(job, out) if early is not None else None
        if weight_hashes is not None:
            for path in weight_hashes:
                staged.sync_in_background(path)
        else:
            weight_hashes = {}
            for layout in plan.layouts:
                # Each file's fsync starts once it is complete, while the next one is written.
                weight_hashes.update(layout.layout.write(out, tensors[layout.layout.tensors],
                                                         plan.recipe.output.max_shard_size, staged.sync_in_background))
    step, saved = arch.saved_objects(plan)
    with timer.step("write", step):
        for obj in saved:
            obj.save_pretrained(out)
        write_recipe_records(out, recipe_text, hydra_records, staged.final)
    manifest = build_manifest(plan, sources, assembly)
    (out / "README.md").write_text(arch.render_card(manifest, recipe_text))
    manifest["files"] = file_table(
        out, exclude=(MANIFEST,), known={p.relative_to(out).as_posix(): h for p, h in weight_hashes.items()}
    )
    write_manifest(out / MANIFEST, manifest)
    return manifest
