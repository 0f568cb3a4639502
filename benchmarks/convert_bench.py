"""Convert benchmark: ``vedforge convert`` against converting by hand, and the I/O floor.

Builds, once, a base-size Flax vision-encoder-decoder checkpoint with random weights (ViT-base/16
+ GPT-2 small, forged by vedforge from the configs of benchmarks/forge_bench.py; --scale large
for ViT-large + GPT-2 large, sharded), then runs each flow in its own process, alternating,
--runs times, and prints the median wall time, peak RSS (against the checkpoint's size) and CPU
seconds (user + system, which other load on the machine inflates far less than wall time), and
vedforge's ratios to the other flows.

    python benchmarks/convert_bench.py                  # base, 3 runs each
    python benchmarks/convert_bench.py --scale large --max-shard-size 2GB --flows vedforge,floor

Flows:
  vedforge  python -m vedforge convert SRC OUT
  by_hand   what a user writes without from_pretrained(from_flax=True) (which leaves the weights on
            the meta device in transformers 4.51-4.57): load the Flax model, build the PyTorch model
            from its config, load_flax_weights_in_pytorch_model, save_pretrained
  floor     kernel-copy the Flax weight files into one file and fsync: the least any conversion does
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from forge_bench import BUILD, FLOOR, REPO, SCALES, FlowFailed, dir_bytes, run, run_with_cpu  # noqa: E402

BY_HAND = r'''
import sys
from transformers import AutoImageProcessor, AutoTokenizer, FlaxVisionEncoderDecoderModel, VisionEncoderDecoderModel
from transformers.modeling_flax_pytorch_utils import load_flax_weights_in_pytorch_model
src, out = sys.argv[1:3]
flax_model = FlaxVisionEncoderDecoderModel.from_pretrained(src)
model = VisionEncoderDecoderModel(flax_model.config)
model = load_flax_weights_in_pytorch_model(model, flax_model.params)
del flax_model
model.save_pretrained(out)
AutoImageProcessor.from_pretrained(src).save_pretrained(out)
AutoTokenizer.from_pretrained(src).save_pretrained(out)
'''


def flax_weights(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.startswith("flax_model") and p.suffix == ".msgpack")


def build_source(py: str, env: dict, cache: Path, scale: str, shard: str) -> Path:
    """A Flax vision-encoder-decoder checkpoint of ``scale``, forged once and kept in ``cache``."""
    parts, source = cache / scale, cache / f"{scale}-ved-{shard}"
    if not (parts / "decoder" / "tokenizer.json").is_file():
        print(f"building {scale} encoder and decoder checkpoints in {parts} (once)...", flush=True)
        shutil.rmtree(parts, ignore_errors=True)
        run([py, "-c", BUILD, json.dumps(SCALES[scale]), str(parts), "0", str(REPO / "vedforge" / "assets")], env)
    if not (source / "vedforge_manifest.json").is_file():
        print(f"forging the {scale} Flax vision-encoder-decoder checkpoint into {source} (once)...", flush=True)
        shutil.rmtree(source, ignore_errors=True)
        run([py, "-m", "vedforge", f"encoder.name_or_path={parts / 'encoder'}", "encoder.weights=pretrained",
             f"decoder.name_or_path={parts / 'decoder'}", "decoder.weights=pretrained", f"output.dir={source}",
             f"output.max_shard_size={shard}", "hydra.output_subdir=null", "hydra/job_logging=none",
             "hydra/hydra_logging=none"], env)
    return source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", choices=sorted(SCALES), default="base")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vedforge-bench")
    parser.add_argument("--flows", default="vedforge,by_hand,floor")
    parser.add_argument("--max-shard-size", default="10GB", help="of the Flax source and of the converted output")
    args = parser.parse_args()
    py = sys.executable
    env = {"JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    source = build_source(py, env, args.cache, args.scale, args.max_shard_size)
    weights = flax_weights(source)
    checkpoint_bytes = sum(p.stat().st_size for p in weights)
    flows = [f.strip() for f in args.flows.split(",")]
    results: dict[str, list[tuple[float, int, int, float]]] = {f: [] for f in flows}
    failures: dict[str, list[FlowFailed]] = {f: [] for f in flows}
    scratch = Path(tempfile.mkdtemp(prefix="vedforge-convert-bench-"))
    try:
        for i in range(args.runs):
            for flow in flows:
                out = scratch / f"{flow}-{i}"
                if flow == "vedforge":
                    cmd = [py, "-m", "vedforge", "convert", str(source), str(out), "--max-shard-size", args.max_shard_size]
                elif flow == "by_hand":
                    cmd = [py, "-c", BY_HAND, str(source), str(out)]
                else:
                    out.mkdir(parents=True)
                    cmd = [py, "-c", FLOOR, *map(str, weights), str(out / "w"), str(checkpoint_bytes)]
                try:
                    wall, rss, cpu = run_with_cpu(cmd, env)
                except FlowFailed as failed:
                    failures[flow].append(failed)
                    print(f"  run {i + 1} {flow:9s} FAILED after {failed.wall:.2f} s at {failed.rss / 2**30:.2f} GiB: "
                          f"{failed.what.splitlines()[0]}", flush=True)
                    shutil.rmtree(out, ignore_errors=True)
                    continue
                written = dir_bytes(out)
                if flow == "vedforge":
                    manifest = json.loads((out / "vedforge_manifest.json").read_text())
                    assert manifest["parameters"]["total"] > 0, manifest
                results[flow].append((wall, rss, written, cpu))
                shutil.rmtree(out, ignore_errors=True)
                print(f"  run {i + 1} {flow:9s} {wall:7.2f} s  {rss / 2**30:5.2f} GiB  {cpu:6.2f} CPU s", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"\nconvert {args.scale}: Flax checkpoint {checkpoint_bytes:,} bytes ({checkpoint_bytes / 2**30:.2f} GiB) in "
          f"{len(weights)} file(s), {args.runs} runs each, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"{'flow':10s} {'median wall s':>14s} {'median peak RSS GiB':>20s} {'RSS/checkpoint':>15s} {'bytes written':>15s} "
          f"{'median CPU s':>13s}")
    med = {}
    for flow, rows in results.items():
        if not rows:
            print(f"{flow:10s} failed in all runs: {failures[flow][0].what.splitlines()[0] if failures[flow] else '?'}")
            continue
        med[flow] = (statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows), rows[-1][2],
                     statistics.median(r[3] for r in rows))
        print(f"{flow:10s} {med[flow][0]:14.2f} {med[flow][1] / 2**30:20.2f} {med[flow][1] / checkpoint_bytes:15.2f} "
              f"{med[flow][2]:15,d} {med[flow][3]:13.2f}")
    if "vedforge" in med:
        for other in ("by_hand", "floor"):
            if other in med:
                print(f"vedforge/{other}: wall {med['vedforge'][0] / med[other][0]:.2f}x "
                      f"({med['vedforge'][0]:.2f} s / {med[other][0]:.2f} s, medians), "
                      f"peak RSS {med['vedforge'][1] / med[other][1]:.2f}x, CPU {med['vedforge'][3] / med[other][3]:.2f}x")


if __name__ == "__main__":
    try:
        main()
    except FlowFailed as failed:
        raise SystemExit(f"A benchmark step failed after {failed.wall:.1f} s: {failed.what}") from None
