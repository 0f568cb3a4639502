"""Forge one vision-encoder-decoder model from a composed recipe.

The order matters: everything that can be decided from configs (sources, model types,
token ids, the output location) is checked before any weights are read, and nothing
appears under the output name until the artifact is complete.
"""

from __future__ import annotations

import errno
import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from omegaconf import DictConfig, OmegaConf

from vedforge.artifacts import MANIFEST, OutputLock, StagedArtifact, file_table, is_artifact_dir
from vedforge.backends import needs_torch, require_torch
from vedforge.errors import OutputError, VedforgeError
from vedforge.schema import option_value
from vedforge.validate import validate_recipe

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


# Settings that say where and whether to write, not what: not part of the recorded recipe.
_NOT_RECIPE = ("dir", "overwrite", "resume")


def recipe_dict(cfg: DictConfig) -> dict[str, Any]:
    """The recipe as plain data, resolved, without run-specific or secret values."""
    data = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    for key in _NOT_RECIPE:
        data.get("output", {}).pop(key, None)
    if data.get("hub", {}).get("token") is not None:
        data["hub"]["token"] = "<redacted>"
    return OmegaConf.to_container(OmegaConf.create(data), resolve=True)


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
    """Forge the model described by ``cfg`` into ``cfg.output.dir``.

    Args:
        cfg: a composed recipe (see :class:`vedforge.schema.ForgeConfig`).
        hydra_records: Hydra's ``.hydra`` directory for this run, copied into the artifact
            when the artifact is written somewhere other than Hydra's run directory.
        cache: checkpoint tensors shared with other forges in this process (a sweep).

    Raises:
        VedforgeError: any problem the user can fix; nothing is written under the output name.
    """
    import transformers

    from vedforge.assembly import assemble, target_shapes
    from vedforge.checkpoint_writer import (
        nbytes,
        parse_size,
        write_flax_checkpoint,
        write_pytorch_checkpoint,
        write_safetensors_checkpoint,
    )
    from vedforge.families import PYTORCH_ONLY_ENCODER_TYPES, decoder_family
    from vedforge.loading import load_decoder_config, load_encoder_config, load_part_state
    from vedforge.manifest import describe_input, package_versions, write_manifest
    from vedforge.model_card import render_model_card
    from vedforge.sources import resolve_source
    from vedforge.token_policy import apply_token_ids, generation_config_for, resolve_token_ids

    transformers.utils.logging.set_verbosity_error()
    validate_recipe(cfg)
    recipe = recipe_dict(cfg)
    output_dir = Path(cfg.output.dir).absolute()
    if cfg.output.resume and not cfg.output.overwrite:
        previous = complete_artifact(output_dir, recipe)
        if previous is not None:
            log.info("Already complete, skipped: %s (output.resume=false forges it again)", output_dir)
            return ForgeResult(output_dir, previous, skipped=True, loads={"encoder": 0, "decoder": 0})
    timer = _Timer()
    started = time.perf_counter()
    hub = cfg.hub
    weights = {role: option_value(cfg[role].weights) for role in ("encoder", "decoder")}
    output_format = option_value(cfg.output.format)
    backend = option_value(cfg.backend.name)
    writes_pytorch = needs_torch(cfg)
    # Fail at once, not after minutes of loading, when PyTorch is needed but missing.
    if writes_pytorch:
        require_torch("backend=pt" if backend == "pt" else "output.pytorch=true")

    def locate(role: str, *, need_weights: bool, torch_weights: bool = False):
        return resolve_source(
            role, cfg[role].name_or_path, revision=cfg[role].revision, subfolder=cfg[role].subfolder,
            cache_dir=hub.cache_dir, offline=hub.offline, token=hub.token, need_weights=need_weights,
            torch_weights=torch_weights,
        )

    with timer.step("resolve", "Locating checkpoints"):
        # Configs first: a pairing that cannot be forged is refused before any weights are fetched.
        sources = {role: locate(role, need_weights=False) for role in ("encoder", "decoder")}
    with timer.step("configs", "Reading configs, tokenizer and image processor"):
        enc = load_encoder_config(sources["encoder"], cfg.encoder.config_overrides, hub.trust_remote_code, backend)
        torch_encoder = enc.model.model_type in PYTORCH_ONLY_ENCODER_TYPES
        needs_torch_compat = False
        if torch_encoder:
            from vedforge.torch_compat import needs_compat, prepare_encoder_config

            prepare_encoder_config(enc.model)
            needs_torch_compat = needs_compat(enc.model.model_type)
        dec = load_decoder_config(sources["decoder"], cfg.decoder.config_overrides, hub.trust_remote_code)
        family = decoder_family(dec.model.model_type, sources["decoder"].describe())
        zero_init = option_value(cfg.cross_attention.init) == "zero"
        if zero_init:
            _check_zero_init(family, dec.model.model_type)
        processor = _load_processor(sources["encoder"], hub.trust_remote_code)
        if isinstance(getattr(enc.model, "image_size", None), int):
            _fit_processor_to_image_size(processor, enc.model.image_size)
        tokenizer = _load_tokenizer(sources["decoder"], hub.trust_remote_code)
        ids = resolve_token_ids(cfg.token_policy, tokenizer, dec.model, family, sources["decoder"].describe())
        config = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc.model, dec.model)
        old_vocab = int(dec.model.vocab_size)
        apply_token_ids(config, ids)
        config.architectures = ["VisionEncoderDecoderModel"]
        generation = generation_config_for(config, ids)
        if torch_encoder:
            from vedforge.torch_encoder import standin_trace_config

            target = {k: v for k, v in target_shapes(standin_trace_config(config)).items() if k[0] != "encoder"}
        else:
            target = target_shapes(config)
    with timer.step("fetch", "Fetching weights"):
        sources = {
            role: locate(role, need_weights=weights[role] == "pretrained", torch_weights=role == "encoder" and torch_encoder)
            if sources[role].kind == "hub" else sources[role]
            for role in ("encoder", "decoder")
        }

    total_bytes = sum(nbytes(spec) for spec in target.values())
    if backend == "flax" and output_format == "safetensors" and total_bytes > parse_size(cfg.output.max_shard_size):
        raise VedforgeError(
            f"output.format=safetensors writes one file, but the model ({total_bytes / 1e9:.2f} GB) exceeds "
            f"output.max_shard_size={cfg.output.max_shard_size}, and transformers' Flax classes cannot load sharded "
            "safetensors. Raise output.max_shard_size, or use output.format=msgpack for a sharded checkpoint."
        )
    staged = StagedArtifact(output_dir, overwrite=cfg.output.overwrite)
    with OutputLock(output_dir):
        staged.check()
        cache = cache or PartCache()
        states, loads = {}, {}
        native: dict[str, Any] = {}
        reading = [role for role in ("encoder", "decoder") if weights[role] == "pretrained"]
        drawing = [role for role in ("encoder", "decoder") if weights[role] == "random"]
        message = "; ".join(
            ([f"Reading the {' and '.join(reading)} weights"] if reading else [])
            + ([f"Laying out the random {' and '.join(drawing)} weights (drawn from the seed as they are written)"]
               if drawing else []))
        with timer.step("load", message):
            for role, part in (("encoder", enc), ("decoder", dec)):
                random_weights = weights[role] == "random"
                pytorch_part = role == "encoder" and torch_encoder
                key = (role, str(sources[role].path), weights[role], cfg.seed if random_weights else None,
                       json.dumps(OmegaConf.to_container(cfg[role].config_overrides), sort_keys=True), pytorch_part)
                if pytorch_part:
                    from vedforge.torch_encoder import load_torch_encoder_state

                    def load(r=role, p=part, rw=random_weights):
                        return load_torch_encoder_state(sources[r], p.model, random_weights=rw, seed=cfg.seed)
                else:
                    def load(r=role, p=part, rw=random_weights):
                        return load_part_state(sources[r], p, random_weights=rw, seed=cfg.seed)
                states[role], loaded = cache.get(key, load)
                if pytorch_part:
                    native, torch_missing, torch_buffers = states[role]
                    states[role] = {}
                loads[role] = int(loaded)
                if not loaded:
                    log.info("Reusing the %s checkpoint already read in this sweep", role)
        with timer.step("assemble", "Adding cross-attention"):
            try:
                assembly = assemble(
                    target, states, seed=cfg.seed, init_std=float(getattr(dec.model, family.init_std_attr, 0.02)),
                    aliases=family.aliases,
                    decoder_vocab_growth=(old_vocab, ids.vocab_size) if ids.vocab_size != old_vocab else None,
                )
            except ValueError as exc:
                raise VedforgeError(f"The checkpoints do not fit the combined model: {exc}.") from None
            del states
            if torch_encoder:
                _report_torch_encoder(assembly.reports["encoder"], native, torch_missing, torch_buffers)
            if zero_init:
                _zero_cross_attention_output(assembly, family, dec.model.model_type)
            pytorch_tensors = None
            if writes_pytorch:
                from vedforge.pytorch_layout import to_pytorch_layout

                pytorch_tensors = to_pytorch_layout(config, assembly.params, native)

        needs_keyword_decode = dec.model.model_type not in ("gpt2", "bart")
        # Flax BEiT's stochastic depth needs a "droppath" PRNG in training (vedforge.compat).
        drop_path_rate = float(getattr(enc.model, "drop_path_rate", 0.0) or 0.0) if enc.model.model_type == "beit" else 0.0
        recipe_text = OmegaConf.to_yaml(OmegaConf.create(recipe))
        try:
            with staged:
                out = staged.path
                with timer.step("write_weights", f"Writing the weights to {staged.final}"):
                    shard_size = parse_size(cfg.output.max_shard_size)
                    weight_hashes = {}
                    # Each file's fsync starts once it is complete, while the next one is written.
                    sync = staged.sync_in_background
                    if backend == "flax" and output_format == "safetensors":
                        weight_hashes = write_safetensors_checkpoint(out, assembly.params, on_file=sync)
                    elif backend == "flax":
                        weight_hashes = write_flax_checkpoint(out, assembly.params, shard_size, on_file=sync)
                    if pytorch_tensors is not None:
                        weight_hashes.update(write_pytorch_checkpoint(out, pytorch_tensors, shard_size, on_file=sync))
                with timer.step("write", "Writing configs, processor, tokenizer and model card"):
                    config.save_pretrained(out)
                    generation.save_pretrained(out)
                    processor.save_pretrained(out)
                    tokenizer.save_pretrained(out)
                    _write_recipe_records(out, recipe_text, hydra_records, staged.final)
                manifest = {
                    "format_version": 1,
                    "recipe": recipe,
                    "versions": package_versions(),
                    "inputs": {
                        role: describe_input(sources[role], model_type=part.checkpoint.model_type, weights=weights[role],
                                             initialisation=_initialisation(role, part, weights[role], torch_encoder, cfg.seed))
                        for role, part in (("encoder", enc), ("decoder", dec))
                    },
                    "seed": cfg.seed,
                    "backend": backend,
                    "weight_layouts": (["flax"] if backend == "flax" else []) + (["pytorch"] if writes_pytorch else []),
                    "token_ids": {
                        "policy": option_value(cfg.token_policy.kind),
                        "decoder_start": ids.decoder_start, "pad": ids.pad, "eos": ids.eos, "bos": ids.bos,
                        "added_pad_token": ids.added_pad, "vocab_size": ids.vocab_size,
                    },
                    "parameters": assembly.parameter_counts(),
                    "new_tensors": {part: r.new_tensors for part, r in assembly.reports.items() if r.new_tensors},
                    "resized_tensors": {part: r.resized_tensors for part, r in assembly.reports.items() if r.resized_tensors},
                    "unused_checkpoint_tensors": {part: r.unused_tensors for part, r in assembly.reports.items() if r.unused_tensors},
                    "needs_compat": needs_keyword_decode or enc.model.model_type == "clip_vision_model" or drop_path_rate > 0,
                    "needs_drop_path_rng": drop_path_rate if backend == "flax" and drop_path_rate > 0 else None,
                    "needs_keyword_decode": needs_keyword_decode,
                    "needs_torch_compat": needs_torch_compat,
                }
                (out / "README.md").write_text(render_model_card(manifest=manifest, recipe_yaml=recipe_text))
                manifest["files"] = file_table(
                    out, exclude=(MANIFEST,), known={p.relative_to(out).as_posix(): h for p, h in weight_hashes.items()}
                )
                manifest["timings_s"] = {**timer.timings, "total": round(time.perf_counter() - started, 3)}
                write_manifest(out / MANIFEST, manifest)
                final = staged.publish()
            counts = manifest["parameters"]
            log.info(
                "Forged %s + %s: %s parameters (%s new) in %.1f s -> %s",
                enc.checkpoint.model_type, dec.checkpoint.model_type, f"{counts['total']:,}", f"{counts['new']:,}",
                manifest["timings_s"]["total"], final,
            )
            return ForgeResult(final, manifest, loads=loads)
        except OSError as exc:
            # A full disk, a quota, a file system turned read-only: nothing was published.
            kept = " The artifact already there is untouched." if is_artifact_dir(staged.final) else ""
            raise OutputError(
                f"Writing the artifact to '{staged.final}' failed: {exc.strerror or exc} "
                f"({errno.errorcode.get(exc.errno, exc.errno)}). Nothing was published.{kept} Free space there, or set "
                "output.dir to another location."
            ) from None


def _initialisation(role: str, part: Any, weights: str, torch_encoder: bool, seed: int) -> Optional[dict[str, Any]]:
    """How a random part's weights were made, for the manifest; None for pretrained weights."""
    if weights != "random":
        return None
    if role == "encoder" and torch_encoder:
        from vedforge.torch_encoder import describe_torch_generation

        return describe_torch_generation(part.model, seed)
    from vedforge.loading import checkpoint_class
    from vedforge.random_init import describe_generation

    return describe_generation(checkpoint_class(part.checkpoint, role), seed)


def _report_torch_encoder(report: Any, state: dict[str, Any], missing: list[str], buffers: set[str]) -> None:
    """Fill the encoder's part report for an encoder built with PyTorch (buffers such as
    batch-norm statistics are not parameters and are not counted)."""
    import numpy as np

    missing_set = set(missing)
    for name, arr in sorted(state.items()):
        if name in buffers:
            continue
        size = int(np.prod(arr.shape, dtype=np.int64))
        if name in missing_set:
            report.new += size
            report.new_tensors.append(name)
        else:
            report.from_checkpoint += size


def _check_zero_init(family: Any, model_type: str) -> None:
    """Refuse cross_attention.init=zero, before any weights load, where it cannot be exact."""
    from vedforge.families import DECODER_FAMILIES

    if family.cross_attention_output is None:
        exact = sorted(t for t, f in DECODER_FAMILIES.items() if f.cross_attention_output)
        raise VedforgeError(
            f"cross_attention.init=zero cannot keep a '{model_type}' decoder's outputs unchanged: its cross-attention "
            "is followed by a LayerNorm over the residual (or is already pretrained), so a zero projection still "
            f"changes what it computes. Use cross_attention.init=random, or a decoder of type: {', '.join(exact)}."
        )


def _zero_cross_attention_output(assembly: Any, family: Any, model_type: str) -> None:
    """Zero the new cross-attention output projections (cross_attention.init=zero); the caller
    has already refused families where that is not exact (:func:`_check_zero_init`)."""
    module, layer = family.cross_attention_output
    new = set(assembly.reports["decoder"].new_tensors)
    zeroed = [p for p in assembly.params if "/".join(p) in new and any(
        p[i] == module and p[i + 1] == layer for i in range(len(p) - 1))]
    if not zeroed:
        raise VedforgeError(f"cross_attention.init=zero found no new {module}/{layer} tensors in the '{model_type}' decoder.")
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


def _fit_processor_to_image_size(processor: Any, image_size: int) -> None:
    """Make the processor emit images of the encoder's size (after an image_size override)."""
    for attr in ("size", "crop_size"):
        value = getattr(processor, attr, None)
        if isinstance(value, dict) and value:
            setattr(processor, attr, {k: image_size for k in value})


def _load_processor(source, trust_remote_code: bool):
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(str(source.path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise VedforgeError(
            f"The image processor of the encoder {source.describe()} cannot be loaded "
            f"({str(exc).splitlines()[0][:200]}). The checkpoint needs a preprocessor_config.json."
        ) from None


def _load_tokenizer(source, trust_remote_code: bool):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(source.path), trust_remote_code=trust_remote_code)
    except Exception as exc:  # tokenizers raises its own exception types for unparsable files
        raise VedforgeError(
            f"The tokenizer of the decoder {source.describe()} cannot be loaded "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else 'no detail'}). "
            "The checkpoint needs valid tokenizer files (tokenizer.json or vocab files)."
        ) from None
