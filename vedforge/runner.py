"""Forge one vision-encoder-decoder model from a composed recipe.

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
from typing import Any, Callable, Iterator, Optional

from omegaconf import DictConfig, OmegaConf

from vedforge.artifacts import MANIFEST, OutputLock, StagedArtifact, file_table, is_artifact_dir
from vedforge.errors import OutputError, VedforgeError
from vedforge.recipe import recipe_dict  # noqa: F401  (part of this module's interface)

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


def complete_artifact(directory: Path, recipe: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The manifest of ``directory`` if it is a complete, unaltered artifact of ``recipe``; else None."""
    from vedforge.artifacts import altered_files
    from vedforge.manifest import read_manifest

    try:
        manifest = read_manifest(directory)
    except (OSError, ValueError):
        return None
    if manifest.get("recipe") != recipe:
        return None
    # Stop hashing at the first altered file.
    if next(altered_files(directory, manifest.get("files", {})), None) is not None:
        return None
    return manifest


def forge(cfg: DictConfig, *, hydra_records: Optional[Path] = None, cache: Optional[PartCache] = None) -> ForgeResult:
    """Forge the model described by ``cfg`` into ``cfg.output.dir``: plan, then fetch, load,
    assemble, write and publish.

    Args:
        cfg: a composed recipe (see :class:`vedforge.schema.ForgeConfig`).
        hydra_records: Hydra's ``.hydra`` directory for this run, copied into the artifact
            when the artifact is written somewhere other than Hydra's run directory.
        cache: checkpoint tensors shared with other forges in this process (a sweep).

    Raises:
        VedforgeError: any problem the user can fix; nothing is written under the output name.
    """
    from vedforge.plan import SKIP, build_plan
    from vedforge.plan_report import log_plan

    timer = _Timer()
    started = time.perf_counter()
    with timer.step("plan", "Planning the forge from configs"):
        plan = build_plan(cfg)
    log_plan(plan)
    if plan.outcome == SKIP:
        log.info("Already complete, skipped: %s (output.resume=false forges it again)", plan.output_dir)
        return ForgeResult(plan.output_dir, plan.previous, skipped=True, loads={"encoder": 0, "decoder": 0})
    with timer.step("fetch", "Fetching weights"):
        sources = fetch(plan)
    with OutputLock(plan.output_dir):
        staged = StagedArtifact(plan.output_dir, overwrite=plan.recipe.output.overwrite)
        staged.check()
        with timer.step("load", _load_message(plan)):
            states, loads = load(plan, sources, cache or PartCache())
        with timer.step("assemble", "Adding the projector and the image token" if _is_prefix(plan) else "Adding cross-attention"):
            assembly, tensors = assemble_weights(plan, states)
        del states
        try:
            with staged:
                manifest = write(plan, sources, assembly, tensors, staged, hydra_records, timer, started)
                final = staged.publish()
        except OSError as exc:
            # A full disk, a quota, a file system turned read-only: nothing was published.
            kept = " The artifact already there is untouched." if is_artifact_dir(staged.final) else ""
            raise OutputError(
                f"Writing the artifact to '{staged.final}' failed: {exc.strerror or exc} "
                f"({errno.errorcode.get(exc.errno, exc.errno)}). Nothing was published.{kept} Free space there, or set "
                "output.dir to another location."
            ) from None
    counts = manifest["parameters"]
    log.info(
        "Forged %s + %s: %s parameters (%s new) in %.1f s -> %s",
        manifest["inputs"]["encoder"]["model_type"], manifest["inputs"]["decoder"]["model_type"],
        f"{counts['total']:,}", f"{counts['new']:,}", manifest["timings_s"]["total"], final,
    )
    return ForgeResult(final, manifest, loads=loads)


def _is_prefix(plan: Any) -> bool:
    """True for the plan of a prefix (LLaVA-style) forge, whose stages live in vedforge.prefix_forge."""
    return getattr(plan, "architecture", "cross_attention") == "prefix"


def fetch(plan: Any) -> dict[str, Any]:
    """Stage 1: the plan's checkpoints with their weights on disk (hub weights downloaded)."""
    if _is_prefix(plan):
        from vedforge.prefix_plan import fetch_prefix_sources

        return fetch_prefix_sources(plan)
    from vedforge.plan import fetch_sources

    return fetch_sources(plan)


def _load_message(plan: Any) -> str:
    reading = [role for role in ("encoder", "decoder") if not plan.part(role).recipe.random_weights]
    drawing = [role for role in ("encoder", "decoder") if plan.part(role).recipe.random_weights]
    if _is_prefix(plan) and drawing:
        return "; ".join(([f"Indexing the {' and '.join(reading)} weights"] if reading else [])
                         + [f"Drawing the random {' and '.join(drawing)} weights (transformers' PyTorch initialisation, "
                            "seeded from the recipe)"])
    return "; ".join(
        ([f"Reading the {' and '.join(reading)} weights"] if reading else [])
        + ([f"Laying out the random {' and '.join(drawing)} weights (drawn from the seed as they are written)"]
           if drawing else []))


def load(plan: Any, sources: dict[str, Any], cache: PartCache) -> tuple[dict[str, Any], dict[str, int]]:
    """Stage 2: each part's tensors (indexed lazily, or drawn for random weights), shared through
    ``cache`` with the other forges of a sweep; and whether each had to be read."""
    states, loads = {}, {}
    for role in ("encoder", "decoder"):
        key, read = _part_reader(plan, plan.part(role), sources[role])
        states[role], loaded = cache.get(key, read)
        loads[role] = int(loaded)
        if not loaded:
            log.info("Reusing the %s checkpoint already read in this sweep", role)
    return states, loads


def _part_reader(plan: Any, part: Any, source: Any) -> tuple[tuple, Callable[[], Any]]:
    """The cache key of a part's tensors and the function that reads them: by PyTorch name for a
    prefix forge, else as the Flax state (or, for a PyTorch-built encoder, its PyTorch state)."""
    seed, random_weights = plan.recipe.seed, part.recipe.random_weights
    key = (part.role, str(source.path), part.recipe.weights, seed if random_weights else None,
           part.recipe.overrides_key())
    if _is_prefix(plan):
        from vedforge.prefix_forge import read_prefix_part

        return ("prefix", *key), lambda: read_prefix_part(part, source, seed)
    if part.built_with_torch:
        from vedforge.torch_encoder import load_torch_encoder_state

        return (*key, True), lambda: load_torch_encoder_state(source, part.config.model,
                                                              random_weights=random_weights, seed=seed)
    from vedforge.loading import load_part_state

    return (*key, False), lambda: load_part_state(source, part.config, random_weights=random_weights, seed=seed)


def assemble_weights(plan: Any, states: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Stage 3: the combined model's tensors, and per weight layout the tensors it writes."""
    if _is_prefix(plan):
        from vedforge.prefix_forge import assemble_prefix_weights

        return assemble_prefix_weights(plan, states)
    from vedforge.assembly import assemble
    from vedforge.plan import report_torch_encoder

    family = plan.decoder.family
    dec_config = plan.decoder.config.model
    native: dict[str, Any] = {}
    states = dict(states)
    if plan.encoder.built_with_torch:
        native, torch_missing, torch_buffers = states["encoder"]
        states["encoder"] = {}
    growth = (plan.old_vocab, plan.ids.vocab_size) if plan.ids.vocab_size != plan.old_vocab else None
    try:
        assembly = assemble(plan.target, states, seed=plan.recipe.seed,
                            init_std=float(getattr(dec_config, family.init_std_attr, 0.02)), aliases=family.aliases,
                            decoder_vocab_growth=growth)
    except ValueError as exc:
        raise VedforgeError(f"The checkpoints do not fit the combined model: {exc}.") from None
    if plan.encoder.built_with_torch:
        report_torch_encoder(assembly.reports["encoder"], native, torch_missing, torch_buffers)
    if plan.recipe.cross_attention_init == "zero":
        _zero_cross_attention_output(assembly, family)
    tensors = {}
    for layout in plan.layouts:
        if layout.layout.tensors == "flax":
            tensors[layout.layout.tensors] = assembly.params
        else:
            from vedforge.pytorch_layout import to_pytorch_layout

            tensors[layout.layout.tensors] = to_pytorch_layout(plan.config, assembly.params, native)
    return assembly, tensors


def write(plan: Any, sources: dict[str, Any], assembly: Any, tensors: dict[str, Any], staged: StagedArtifact,
          hydra_records: Optional[Path], timer: "_Timer", started: float) -> dict[str, Any]:
    """Stage 4: every file of the artifact into the staging directory; returns the manifest."""
    from vedforge.manifest import write_manifest
    from vedforge.progress import byte_progress

    out = staged.path
    recipe_text = OmegaConf.to_yaml(OmegaConf.create(plan.recipe.data))
    with timer.step("write_weights", f"Writing the weights to {staged.final}"), \
            byte_progress("Reading and writing weights", plan.write_bytes):
        weight_hashes: dict[Path, str] = {}
        for layout in plan.layouts:
            # Each file's fsync starts once it is complete, while the next one is written.
            weight_hashes.update(layout.layout.write(out, tensors[layout.layout.tensors], plan.recipe.output.max_shard_size,
                                                     staged.sync_in_background))
    if _is_prefix(plan):
        from vedforge.prefix_forge import build_prefix_manifest as build_manifest
        from vedforge.prefix_card import render_prefix_card as render_card

        step = "Writing the config, processor (tokenizer, image processor, chat template) and model card"
        # A LlavaProcessor saves its tokenizer itself.
        savers = (plan.config, plan.generation, plan.processor)
    else:
        from vedforge.manifest import build_manifest
        from vedforge.model_card import render_model_card as render_card

        step = "Writing configs, processor, tokenizer and model card"
        savers = (plan.config, plan.generation, plan.processor, plan.tokenizer)
    with timer.step("write", step):
        for saver in savers:
            saver.save_pretrained(out)
        _write_recipe_records(out, recipe_text, hydra_records, staged.final)
    manifest = build_manifest(plan, sources, assembly)
    (out / "README.md").write_text(render_card(manifest=manifest, recipe_yaml=recipe_text))
    manifest["files"] = file_table(
        out, exclude=(MANIFEST,), known={p.relative_to(out).as_posix(): h for p, h in weight_hashes.items()}
    )
    manifest["timings_s"] = {**timer.timings, "total": round(time.perf_counter() - started, 3)}
    write_manifest(out / MANIFEST, manifest)
    return manifest


def _zero_cross_attention_output(assembly: Any, family: Any) -> None:
    """Zero the new cross-attention output projections (cross_attention.init=zero); the plan
    has already refused families where that is not exact."""
    module, layer = family.cross_attention_output
    new = set(assembly.reports["decoder"].new_tensors)
    zeroed = [p for p in assembly.params if "/".join(p) in new and any(
        p[i] == module and p[i + 1] == layer for i in range(len(p) - 1))]
    if not zeroed:
        raise VedforgeError(
            f"cross_attention.init=zero found no new {module}/{layer} tensors in the '{family.model_type}' decoder.")
    for path in zeroed:
        assembly.params[path].zero = True


def _write_recipe_records(out: Path, recipe_text: str, hydra_records: Optional[Path], final: Path) -> None:
    import shutil

    if hydra_records is not None and hydra_records.is_dir():
        if hydra_records.parent.absolute() != final.absolute():
            shutil.copytree(hydra_records, out / ".hydra")
        return
    (out / ".hydra").mkdir()
    (out / ".hydra" / "config.yaml").write_text(recipe_text)
