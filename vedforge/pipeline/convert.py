"""``vedforge convert SRC OUT``: a Flax vision-encoder-decoder directory becomes a PyTorch one.

SRC is what ``FlaxVisionEncoderDecoderModel.save_pretrained`` writes (a vedforge forge, or a
checkpoint a training run saved): ``flax_model.msgpack``, its shards with
``flax_model.msgpack.index.json``, or Flax-layout ``model.safetensors``; beside it the config,
and where present the generation config, tokenizer and image processor. OUT gets PyTorch
``model.safetensors`` (sharded past ``max_shard_size``), the configs, the tokenizer and image
processor, a model card and a manifest, published as a forge is: all at once, or not at all.

The weights stream as a forge's do: the input is indexed from its headers, each tensor is
converted when the writer reaches it (:mod:`vedforge.weights.pytorch_layout`) and tensors that need
no change are copied file to file by the kernel, so memory stays at a few tensors whatever
the checkpoint's size. The names come from the Flax paths, so no PyTorch model is built and torch
is not imported; the checkpoint is checked against its config by :mod:`vedforge.pipeline.checkpoint_fit`.
The weights are written in the background while the configs, tokenizer and image processor are
made. For a forge whose files transformers wrote in the installed version and that is unchanged
since, they are made from its files (:mod:`vedforge.pipeline.conversion_files`) and transformers
is not imported either; any other source has transformers (slow to import) load and save them.
``VisionEncoderDecoderModel.from_pretrained(SRC, from_flax=True)`` is
no alternative: in transformers 4.51-4.57 it leaves the parameters on the meta device, and
transformers 5 cannot read Flax files at all.
"""

from __future__ import annotations

import errno
import json
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from vedforge.pipeline.artifacts import MANIFEST, OutputLock, StagedArtifact, file_table, is_artifact_dir
from vedforge.pipeline.conversion_files import CONFIG, GENERATION_CONFIG, PROCESSOR_FILES, TOKENIZER_FILES, SourceFiles
from vedforge.core.errors import CorruptCheckpointError, NotACheckpointError, OutputError, VedforgeError, first_line

# What transformers' PyTorch save_pretrained shards at.
DEFAULT_MAX_SHARD_SIZE = "5GB"
_WHAT_SRC_IS = ("a directory written by FlaxVisionEncoderDecoderModel.save_pretrained (a vedforge forge, or a "
                "checkpoint a training run saved)")


@dataclass
class ConversionResult:
    """What a conversion produced."""

    output_dir: Path
    manifest: dict[str, Any]
    # Seconds spent writing the weights, and in total: a record of this run, kept out of the
    # directory, whose files depend on the source alone.
    timings_s: dict[str, float] = field(default_factory=dict)


@dataclass
class FlaxSource:
    """A Flax vision-encoder-decoder checkpoint directory, indexed but not read."""

    path: Path
    config: Any  # transformers.VisionEncoderDecoderConfig
    layout: str  # "msgpack" or "safetensors"
    weight_files: list[Path]
    params: dict[tuple[str, ...], Any]  # Flax paths -> lazy tensors


def read_flax_source(src: Path) -> FlaxSource:
    """Check that ``src`` is a Flax vision-encoder-decoder checkpoint and index its weights.

    Only headers are read: no tensor is loaded.

    Raises:
        NotACheckpointError: ``src`` is missing, not a directory, not a vision-encoder-decoder
            checkpoint, or holds no Flax weights.
        CorruptCheckpointError: its config, index or weight files cannot be parsed, or a shard is missing.
    """
    src = src.absolute()
    layout, files, params = _index_flax_source(src)
    return FlaxSource(src, _read_config(src), layout, files, params)


def _index_flax_source(src: Path) -> tuple[str, list[Path], dict[tuple[str, ...], Any]]:
    """:func:`read_flax_source` up to the config, which is only checked for its model type
    (transformers, which parses it, is slow to import): the layout, weight files and tensors."""
    if not src.exists():
        raise NotACheckpointError(f"The source '{src}' does not exist. Give {_WHAT_SRC_IS}.")
    if not src.is_dir():
        raise NotACheckpointError(f"The source '{src}' is a file, not a directory. Give {_WHAT_SRC_IS}.")
    _check_model_type(src)
    layout, files = _flax_weight_files(src)
    return layout, files, _index_params(src, layout, files)


def _holdings(src: Path) -> str:
    names = sorted(p.name for p in src.iterdir())
    shown = ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
    return shown or "nothing"


def _check_model_type(src: Path) -> None:
    path = src / CONFIG
    if not path.is_file():
        raise NotACheckpointError(
            f"'{src}' is not a Flax vision-encoder-decoder checkpoint: it has no {CONFIG} (it holds: {_holdings(src)}). "
            f"Give {_WHAT_SRC_IS}."
        )
    try:
        model_type = json.loads(path.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise CorruptCheckpointError(f"The config '{path}' cannot be read as JSON ({exc}). Save the checkpoint again.") from None
    if model_type != "vision-encoder-decoder":
        raise NotACheckpointError(
            f"'{src}' is not a vision-encoder-decoder checkpoint: its {CONFIG} has model_type {model_type!r}, not "
            f"'vision-encoder-decoder'. vedforge convert takes a combined image-to-text model: {_WHAT_SRC_IS}."
        )


def _read_config(src: Path) -> Any:
    """The config of ``src``, whose model type :func:`_index_flax_source` has checked."""
    from transformers import VisionEncoderDecoderConfig

    path = src / CONFIG
    try:
        return VisionEncoderDecoderConfig.from_pretrained(str(src))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptCheckpointError(
            f"The config '{path}' is not a valid vision-encoder-decoder config ({first_line(exc)})."
        ) from None


def _flax_weight_files(src: Path) -> tuple[str, list[Path]]:
    from vedforge.weights.checkpoint import find_weight_files, safetensors_format
    from vedforge.weights.formats import FLAX_INDEX, FLAX_WEIGHTS, SAFE_INDEX, SAFE_WEIGHTS

    try:
        layout, files = find_weight_files(src)
    except NotACheckpointError:
        raise NotACheckpointError(
            f"'{src}' holds no Flax weights: expected {FLAX_WEIGHTS}, {FLAX_INDEX} with its shards, or a Flax-layout "
            f"{SAFE_WEIGHTS} (it holds: {_holdings(src)}). Give {_WHAT_SRC_IS}."
        ) from None
    if layout == "safetensors":
        fmt = safetensors_format(files[0])
        if fmt != "flax":
            name = SAFE_WEIGHTS if files[0].name == SAFE_WEIGHTS else SAFE_INDEX
            already = (" It is already a PyTorch checkpoint: load it with VisionEncoderDecoderModel.from_pretrained."
                       if fmt == "pt" else "")
            raise NotACheckpointError(
                f"'{src}' holds no Flax weights: its {name} is in '{fmt}' layout, not Flax layout.{already} "
                f"vedforge convert takes {_WHAT_SRC_IS}."
            )
    return layout, files


def _index_params(src: Path, layout: str, files: list[Path]) -> dict[tuple[str, ...], Any]:
    from vedforge.weights.checkpoint import read_msgpack, read_safetensors
    from vedforge.weights.formats import FLAX_INDEX, FLAX_WEIGHTS, SAFE_INDEX, SAFE_WEIGHTS

    if layout == "msgpack":
        params = read_msgpack(files)
    else:
        params = {tuple(name.split(".")): t for name, t in read_safetensors(files).items()}
    single = src / (FLAX_WEIGHTS if layout == "msgpack" else SAFE_WEIGHTS)
    if not single.is_file():  # the files were found through the shard index
        index = src / (FLAX_INDEX if layout == "msgpack" else SAFE_INDEX)
        _check_index_covers(index, params, "/" if layout == "msgpack" else ".")
    return params


def _check_index_covers(index: Path, params: dict[tuple[str, ...], Any], separator: str) -> None:
    """The shard index must name exactly the tensors the shards hold, or it belongs to other files."""
    listed = set(json.loads(index.read_text())["weight_map"])
    held = {separator.join(path) for path in params}
    if listed != held:
        missing, extra = sorted(listed - held), sorted(held - listed)
        detail = (f"it lists {len(missing)} tensor(s) no shard holds (e.g. {', '.join(missing[:3])})" if missing else
                  f"the shards hold {len(extra)} tensor(s) it does not list (e.g. {', '.join(extra[:3])})")
        raise CorruptCheckpointError(
            f"The shard index '{index}' does not match its shard files: {detail}. A shard is missing, damaged or from "
            "another save; save the checkpoint again."
        )


def parameter_counts(params: dict[tuple[str, ...], Any]) -> dict[str, int]:
    """Parameters per top-level part (encoder, decoder, enc_to_dec_proj) and in total, from shapes."""
    import numpy as np

    counts: dict[str, int] = {}
    for path, tensor in params.items():
        counts[path[0]] = counts.get(path[0], 0) + int(np.prod(tensor.shape, dtype=np.int64))
    counts["total"] = sum(counts.values())
    return counts


def pytorch_tensors(source: FlaxSource) -> dict[str, Any]:
    """The PyTorch state dict of ``source``'s model, as lazily converted tensors.

    Raises:
        NotACheckpointError: the tensors do not hold the model the config describes (a part
            or layer is missing or extra, or a layer lacks a tensor the others have).
    """
    tensors = _pytorch_named(source.path, source.params)
    _check_fits(source.path, source.config, source.params)
    return tensors


def _pytorch_named(src: Path, params: dict[tuple[str, ...], Any]) -> dict[str, Any]:
    from vedforge.core.errors import BackendError
    from vedforge.weights.pytorch_layout import pytorch_named

    try:
        return pytorch_named(params)
    except BackendError as exc:
        raise NotACheckpointError(f"'{src}' is not a checkpoint vedforge can convert: {exc}") from None


def _check_fits(src: Path, config: Any, params: dict[tuple[str, ...], Any]) -> None:
    from vedforge.core.errors import BackendError
    from vedforge.pipeline.checkpoint_fit import check_checkpoint_fits

    try:
        check_checkpoint_fits(config, params, advice=(
            f"'{src}' is not a complete checkpoint of the model its {CONFIG} describes: save it again with "
            "FlaxVisionEncoderDecoderModel.save_pretrained"))
    except BackendError as exc:
        raise NotACheckpointError(str(exc)) from None
    except (AttributeError, TypeError) as exc:
        # A config without the sizes every vision-encoder-decoder has (an encoder without hidden_size).
        raise NotACheckpointError(
            f"The {CONFIG} of '{src}' does not describe a vision-encoder-decoder model transformers can build "
            f"({config.encoder.model_type} + {config.decoder.model_type}: {type(exc).__name__}: {first_line(exc)})."
        ) from None


def _weights_dtype(tensors: dict[str, Any]) -> Optional[str]:
    """The one floating dtype of the weights, as PyTorch's save_pretrained records it in the config."""
    import numpy as np

    from vedforge.weights.bfloat16 import dtype_name, is_bfloat16

    names = {dtype_name(t.dtype) for t in tensors.values() if np.dtype(t.dtype).kind == "f" or is_bfloat16(t.dtype)}
    return names.pop() if len(names) == 1 else None


def _generation_config(src: Path, config: Any) -> tuple[Any, bool]:
    """SRC's generation config, or (as transformers does for a checkpoint without one) one
    derived from the model config; and whether it was derived."""
    from transformers import GenerationConfig

    if (src / GENERATION_CONFIG).is_file():
        try:
            return GenerationConfig.from_pretrained(str(src)), False
        except (OSError, ValueError, TypeError) as exc:
            raise CorruptCheckpointError(
                f"The generation config '{src / GENERATION_CONFIG}' cannot be read ({first_line(exc)}). "
                "Fix or delete it (a generation config is then derived from config.json)."
            ) from None
    return GenerationConfig.from_model_config(config), True


def _generation_settings_in_config(src: Path, config: Any) -> dict[str, Any]:
    """The generation settings SRC's config.json holds with a value other than the default.

    transformers 4 keeps them on the loaded config and names them itself; transformers 5 drops
    them when it reads config.json (and refuses to save a config holding them), so there they are
    read from the file.
    """
    if hasattr(config, "_get_non_default_generation_parameters"):
        return config._get_non_default_generation_parameters()
    from transformers import GenerationConfig

    raw = json.loads((src / CONFIG).read_text())
    defaults = GenerationConfig._get_default_generation_params()
    return {key: raw[key] for key in defaults
            if key in raw and key != "use_cache" and raw[key] is not None and raw[key] != defaults[key]}


def _tokenizer(src: Path) -> Any:
    if not any((src / name).is_file() for name in TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(src))
    except Exception as exc:  # tokenizers raises its own exception types for unparsable files
        raise CorruptCheckpointError(
            f"The tokenizer files in '{src}' cannot be loaded ({type(exc).__name__}: "
            f"{first_line(exc)}). Save the tokenizer there again, or "
            "remove its files to convert the model without it."
        ) from None


def _processor(src: Path) -> Any:
    """SRC's image processor, loaded to check that it loads; None when SRC has none."""
    if not any((src / name).is_file() for name in PROCESSOR_FILES):
        return None
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(str(src))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptCheckpointError(
            f"The image processor in '{src}' cannot be loaded ({first_line(exc)}). Save it there again, "
            "or remove preprocessor_config.json to convert the model without it."
        ) from None


def _source_manifest(src: Path) -> Optional[dict[str, Any]]:
    """What a vedforge forge recorded about itself, when SRC is one."""
    try:
        manifest = json.loads((src / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    return {key: manifest[key] for key in ("recipe", "inputs", "seed", "token_ids", "versions") if key in manifest}


def _check_output(src: Path, out: Path, overwrite: bool) -> None:
    if out == src:
        raise OutputError(
            f"The output directory '{out}' is the source directory. Converting in place would replace the Flax "
            "checkpoint; give another OUT."
        )
    if src.is_relative_to(out):
        raise OutputError(
            f"The output directory '{out}' contains the source '{src}', which publishing would replace; give another OUT."
        )
    if out.exists() and not out.is_dir():
        raise OutputError(f"The output path '{out}' is a file, not a directory. Give a directory path as OUT.")
    if is_artifact_dir(out) and not overwrite:
        raise OutputError(
            f"The output directory '{out}' already holds files. Choose another OUT, or pass --overwrite to replace it "
            "once the new directory is complete."
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"The output directory '{out}' cannot be created ({exc.strerror or exc}). Give an OUT you can write to."
        ) from None


def convert(src: Path, out: Path, *, max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
            overwrite: bool = False) -> ConversionResult:
    """Convert the Flax vision-encoder-decoder checkpoint in ``src`` into a PyTorch directory ``out``.

    Args:
        src: a directory written by ``FlaxVisionEncoderDecoderModel.save_pretrained`` or by vedforge.
        out: the directory to publish; nothing appears under it until it is complete.
        max_shard_size: weights larger than this are split into shards plus an index, e.g. ``"5GB"``.
        overwrite: replace ``out`` if it already holds files (in one step, once the new one is complete).

    Raises:
        VedforgeError: a problem with ``src``, ``out``, the options or the environment; nothing is
            written under ``out``, and an existing ``out`` is untouched.
    """
    from vedforge.core.frameworks import require_torch_installed, transformers_version
    from vedforge.core.units import parse_size
    from vedforge.pipeline.conversion_files import copyable_source
    from vedforge.weights.writer import BackgroundWrite

    started = time.perf_counter()
    try:
        shard_size = parse_size(max_shard_size)
    except ValueError:
        raise VedforgeError(
            f"--max-shard-size {max_shard_size!r} is not a size; write it like 5GB, 500MB, 2GiB or a byte count."
        ) from None
    src, out = Path(src).absolute(), Path(out).absolute()
    layout, weight_files, params = _index_flax_source(src)
    _check_output(src, out, overwrite)
    require_torch_installed("vedforge convert")
    tensors = _pytorch_named(src, params)
    dtype = _weights_dtype(tensors)
    files = copyable_source(src, transformers_version())
    staged = StagedArtifact(out, overwrite=overwrite)
    with OutputLock(out):
        _check_output(src, out, overwrite)  # again under the lock: another process may have written meanwhile
        try:
            with staged:
                staging = staged.path
                write_started = time.perf_counter()
                # The weights stream to disk while the configs, tokenizer, image processor and card
                # are made and saved; whatever fails there cancels the write.
                weights = BackgroundWrite(staging, tensors, shard_size, on_file=staged.sync_in_background)
                try:
                    if files is not None:
                        _check_fits(src, files.view, params)
                        parts = _copied_parts(src, files, layout, weight_files, params, tensors, dtype, max_shard_size)
                        manifest = _write_parts(staging, parts)
                    else:
                        with _short_switch_interval():
                            source = FlaxSource(src, _read_config(src), layout, weight_files, params)
                            _check_fits(src, source.config, params)
                            parts = _converted_parts(source, tensors, dtype, max_shard_size)
                            manifest = _write_parts(staging, parts)
                    hashes = weights.result()
                except BaseException:  # an interrupt too: the staging directory goes once the write has stopped
                    weights.cancel()
                    raise
                written = time.perf_counter() - write_started
                manifest["files"] = file_table(
                    staging, known={p.relative_to(staging).as_posix(): h for p, h in hashes.items()})
                (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
                final = staged.publish()
        except OSError as exc:
            kept = " The directory already there is untouched." if is_artifact_dir(out) else ""
            raise OutputError(
                f"Writing the converted model to '{out}' failed: {exc.strerror or exc} "
                f"({errno.errorcode.get(exc.errno, exc.errno)}). Nothing was published.{kept} Free space there, or give "
                "another OUT."
            ) from None
    return ConversionResult(final, manifest, timings_s={"write_weights": round(written, 3),
                                                        "total": round(time.perf_counter() - started, 3)})


# While transformers is imported and reads the source, this thread runs Python for long
# stretches; the weights' threads take the GIL back thousands of times (after each block they
# transpose, hash or write), and at the default 5 ms switch interval each of those waits can last
# that long. Elsewhere the default stands: with this thread idle, a shorter interval only adds
# switches between the weights' threads.
_SWITCH_INTERVAL_S = 0.0005


@contextmanager
def _short_switch_interval() -> Iterator[None]:
    interval = sys.getswitchinterval()
    sys.setswitchinterval(_SWITCH_INTERVAL_S)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


@dataclass
class _Parts:
    """Everything of a converted directory besides its weights, ready to save: transformers'
    objects (saved with ``save_pretrained``) or the file route's config text, the source files
    copied as they are (``copies``) and files written from text (``written``)."""

    config: Any
    generation: Any
    tokenizer: Any
    manifest: dict[str, Any]
    copies: tuple[Path, ...] = ()
    written: dict[str, str] = field(default_factory=dict)


def _manifest(src: Path, layout: str, weight_files: list[Path], params: dict[tuple[str, ...], Any],
              tensors: dict[str, Any], dtype: Optional[str], max_shard_size: str | int, *, encoder_type: str,
              decoder_type: str, derived_generation: bool, moved: list[str], tokenizer: bool,
              processor: bool) -> dict[str, Any]:
    """The manifest of the converted directory, its file table aside; the same whichever route
    made the configs."""
    from vedforge.families.registry import family_of
    from vedforge.weights.writer import nbytes

    return {
        "format_version": 1,
        "conversion": {
            "source": str(src),
            "source_layout": layout,
            "max_shard_size": str(max_shard_size),
            "source_weights": {f.name: f.stat().st_size for f in weight_files},
            "source_forge": _source_manifest(src),
            "generation_config": "derived from config.json" if derived_generation else "copied",
            "moved_to_generation_config": sorted(moved),
            "tokenizer": tokenizer,
            "image_processor": processor,
        },
        "versions": _versions(),
        "encoder_model_type": encoder_type,
        "decoder_model_type": decoder_type,
        "weight_layouts": ["pytorch"],
        "dtype": dtype,
        "parameters": parameter_counts(params),
        "pytorch_tensors": len(tensors),
        "pytorch_bytes": sum(nbytes(t) for t in tensors.values()),
        # As vedforge.families.torch_fixes.needs_compat says, without importing torch as it does.
        "needs_torch_compat": _needs_torch_compat(family_of(encoder_type)),
    }


def _converted_parts(source: FlaxSource, tensors: dict[str, Any], dtype: Optional[str],
                     max_shard_size: str | int) -> _Parts:
    """The config, generation config, tokenizer, image processor and manifest of the converted
    directory (its file table aside), as transformers loads and saves them."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    src, config = source.path, source.config
    _mark_as_built(config)
    config.architectures = ["VisionEncoderDecoderModel"]
    if dtype is not None:
        config.dtype = dtype
    generation, derived_generation = _generation_config(src, config)
    # Generation settings an older config.json holds (max_length, num_beams...) go to the generation
    # config, as transformers' PyTorch save_pretrained moves them.
    moved = _generation_settings_in_config(src, config)
    for name, value in moved.items():
        setattr(generation, name, value)
        if hasattr(config, name):
            setattr(config, name, None)
    tokenizer, processor = _tokenizer(src), _processor(src)
    # The image processor is carried as the file it is, as a forge carries its encoder's
    # (vedforge.sources.processor_files): it loads as the processor just loaded, and both routes
    # write the same bytes.
    copies = tuple(src / name for name in PROCESSOR_FILES if processor is not None and (src / name).is_file())
    manifest = _manifest(src, source.layout, source.weight_files, source.params, tensors, dtype, max_shard_size,
                         encoder_type=config.encoder.model_type, decoder_type=config.decoder.model_type,
                         derived_generation=derived_generation, moved=list(moved), tokenizer=tokenizer is not None,
                         processor=processor is not None)
    return _Parts(config, generation, tokenizer, manifest, copies=copies)


def _copied_parts(src: Path, files: SourceFiles, layout: str, weight_files: list[Path],
                  params: dict[tuple[str, ...], Any], tensors: dict[str, Any], dtype: Optional[str],
                  max_shard_size: str | int) -> _Parts:
    """:func:`_converted_parts` for a source :func:`vedforge.pipeline.conversion_files.copyable_source`
    accepted: the config edited as JSON and the other files copied (special_tokens_map.json
    rewritten on transformers 4), byte for byte what transformers would save, without importing it."""
    from vedforge.core.frameworks import major_version, transformers_version
    from vedforge.pipeline.conversion_files import converted_config_text

    text = converted_config_text(files.config, dtype, major_version(transformers_version()))
    manifest = _manifest(src, layout, weight_files, params, tensors, dtype, max_shard_size,
                         encoder_type=files.config["encoder"]["model_type"],
                         decoder_type=files.config["decoder"]["model_type"],
                         derived_generation=False, moved=[], tokenizer=bool(files.tokenizer),
                         processor=bool(files.processor))
    return _Parts(text, None, None, manifest, copies=tuple(src / name for name in files.copied),
                  written=files.rewritten)


def _mark_as_built(config: Any) -> None:
    """Leave on ``config`` the marks that building transformers 4's PyTorch
    ``VisionEncoderDecoderModel`` from it leaves, which its ``config.json`` has always recorded
    (:func:`vedforge.core.frameworks.config_to_build`); no model is built here, and these are all
    of them: the combined model unties its embeddings, and the causal-LM class of a sequence-to-sequence
    decoder (BART's, and its kin's) declares its config a decoder only. transformers 5 builds
    from a copy of the config and leaves none."""
    from vedforge.core.frameworks import config_to_build

    if config_to_build(config) is not config:
        return
    config.tie_word_embeddings = False
    if getattr(config.decoder, "is_encoder_decoder", False):
        config.decoder.is_decoder = True
        config.decoder.is_encoder_decoder = False


def _needs_torch_compat(family: Any) -> bool:
    return family is not None and family.torch_compat_fix is not None


def _write_parts(staging: Path, parts: _Parts) -> dict[str, Any]:
    """Save ``parts`` into ``staging``; return the manifest to complete."""
    import shutil

    from vedforge.pipeline.conversion_card import render_conversion_card

    if isinstance(parts.config, str):
        (staging / CONFIG).write_text(parts.config)
    else:
        parts.config.save_pretrained(staging)
    for path in parts.copies:
        shutil.copyfile(path, staging / path.name)
    for name, text in parts.written.items():
        (staging / name).write_text(text, encoding="utf-8")
    if parts.generation is not None:
        parts.generation.save_pretrained(staging)
    if parts.tokenizer is not None:
        parts.tokenizer.save_pretrained(staging)
    (staging / "README.md").write_text(render_conversion_card(parts.manifest))
    return parts.manifest


def _versions() -> dict[str, str]:
    from importlib import metadata

    from vedforge.pipeline.manifest import package_versions

    versions = package_versions()
    try:
        versions["torch"] = metadata.version("torch")
    except metadata.PackageNotFoundError:
        versions["torch"] = "not installed"
    return versions
