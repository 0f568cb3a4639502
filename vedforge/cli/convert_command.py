"""``vedforge convert SRC OUT``: the command line of :mod:`vedforge.pipeline.convert`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from vedforge.pipeline.convert import DEFAULT_MAX_SHARD_SIZE, convert


def _needs_torch_to_load(src: Path) -> bool:
    """True when SRC's image processor is a fast one, which transformers loads only with torch."""
    import json

    try:
        kind = json.loads((src / "preprocessor_config.json").read_text()).get("image_processor_type")
    except (OSError, ValueError, AttributeError):
        return False  # no processor, or one the conversion reports as unreadable
    return isinstance(kind, str) and kind.endswith("Fast")


def main(argv: list[str]) -> int:
    """Entry of ``vedforge convert SRC OUT``; returns the exit code."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="vedforge convert",
        description="Convert a Flax vision-encoder-decoder checkpoint (a vedforge forge, or a directory a training run "
        "saved with FlaxVisionEncoderDecoderModel.save_pretrained: flax_model.msgpack, its shards, or Flax-layout "
        "model.safetensors) into a PyTorch directory that VisionEncoderDecoderModel.from_pretrained and "
        "pipeline('image-to-text') load in transformers 4 and 5: model.safetensors, config, generation config, "
        "tokenizer and image processor, model card and manifest. Nothing appears under OUT until it is complete.",
        epilog="Exit codes: 0 converted, 2 a problem with SRC, OUT or an option (one paragraph says which), "
        "3 an internal error, 130 interrupted. VEDFORGE_DEBUG=1 shows tracebacks.",
    )
    parser.add_argument("src", metavar="SRC", type=Path, help="the Flax checkpoint directory")
    parser.add_argument("out", metavar="OUT", type=Path, help="the PyTorch directory to write")
    parser.add_argument("--max-shard-size", default=DEFAULT_MAX_SHARD_SIZE, metavar="SIZE",
                        help=f"split weights larger than this into shards plus an index (default {DEFAULT_MAX_SHARD_SIZE})")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT if it already holds files, in one step once the new directory is complete")
    args = parser.parse_args(argv)
    # Before transformers is imported: a conversion needs no Flax, and transformers would
    # otherwise import jax (about 0.15 GiB and a second of start-up) for its image transforms.
    os.environ.setdefault("USE_FLAX", "0")
    if "transformers" not in sys.modules and not _needs_torch_to_load(args.src):
        # Nor torch, which transformers would import (seconds of start-up) although the
        # configs, tokenizer and slow image processors it reads here give the same files without it.
        os.environ.setdefault("USE_TORCH", "0")
        # With neither framework, transformers warns at import that models are unavailable; the
        # conversion silences its warnings once it is imported, and this one comes before.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    result = convert(args.src, args.out, max_shard_size=args.max_shard_size, overwrite=args.overwrite)
    counts = result.manifest["parameters"]
    files = sorted(result.manifest["files"])
    print(f"Converted {result.manifest['encoder_model_type']} + {result.manifest['decoder_model_type']} "
          f"({counts['total']:,} parameters) to PyTorch in {result.timings_s['total']:.1f} s: "
          f"{result.output_dir} ({', '.join(files)})")
    return 0
