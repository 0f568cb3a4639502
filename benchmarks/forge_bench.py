"""Forge benchmark: vedforge against the classic script, the PyTorch-by-hand flow and the I/O floor.

Builds two realistic-size random checkpoints once (ViT-base/16 + GPT-2 small by default; ViT-large
+ GPT-2 large with --scale large) as local Flax checkpoints, then runs each flow in a separate
process, alternating, --runs times, and prints median wall time, median peak RSS, bytes written,
and the ratios vedforge/classic, vedforge/PyTorch and vedforge/floor.

    python benchmarks/forge_bench.py                 # base pair, 3 runs each
    python benchmarks/forge_bench.py --scale large   # ~1.1B parameters, sharded output
    python benchmarks/forge_bench.py --sweep         # also a 2x2 sweep of base-size checkpoints
    python benchmarks/forge_bench.py --flows tiny    # the embedded default beside the import floor

The ``tiny`` flow times what a new user runs first: ``vedforge`` (the embedded tiny ViT + GPT-2,
random weights), beside ``python -c "import transformers, flax"`` (with USE_TORCH=0, as vedforge
runs Flax forges) and ``vedforge --help``, alternating in the same run.

Wall time includes interpreter start-up and imports: it is what a user waits for. Every run
starts after an (untimed) os.sync(), so no flow pays for the previous one's disk writeback.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCALES = {
    "base": dict(
        encoder=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                     image_size=224, patch_size=16),
        decoder=dict(n_embd=768, n_layer=12, n_head=12, vocab_size=50257, n_positions=1024),
    ),
    "large": dict(
        encoder=dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                     image_size=224, patch_size=16),
        decoder=dict(n_embd=1280, n_layer=36, n_head=20, vocab_size=50257, n_positions=1024),
    ),
}

BUILD = r'''
import sys, json, shutil
from pathlib import Path
from transformers import ViTConfig, GPT2Config, FlaxViTModel, FlaxGPT2LMHeadModel, ViTImageProcessor, AutoTokenizer
spec, out, seed, assets = json.loads(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
enc = FlaxViTModel(ViTConfig(**spec["encoder"]), seed=seed)
enc.save_pretrained(out / "encoder")
ViTImageProcessor(size={"height": spec["encoder"]["image_size"], "width": spec["encoder"]["image_size"]}).save_pretrained(out / "encoder")
del enc
dec = FlaxGPT2LMHeadModel(GPT2Config(**spec["decoder"], bos_token_id=50256, eos_token_id=50256), seed=seed)
dec.save_pretrained(out / "decoder")
AutoTokenizer.from_pretrained(assets / "gpt2_tiny").save_pretrained(out / "decoder")
'''

CLASSIC = r'''
import sys
from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer, FlaxVisionEncoderDecoderModel
enc, dec, out = sys.argv[1:4]
encoder_config = AutoConfig.from_pretrained(enc)
decoder_config = AutoConfig.from_pretrained(dec)
decoder_config.is_decoder = True
decoder_config.add_cross_attention = True
model = FlaxVisionEncoderDecoderModel.from_encoder_decoder_pretrained(
    encoder_pretrained_model_name_or_path=enc, decoder_pretrained_model_name_or_path=dec,
    encoder_config=encoder_config, decoder_config=decoder_config)
decoder_start_token_id = decoder_config.decoder_start_token_id
pad_token_id = decoder_config.pad_token_id
if decoder_start_token_id is None:
    decoder_start_token_id = decoder_config.bos_token_id
if pad_token_id is None:
    pad_token_id = decoder_config.eos_token_id
model.config.eos_token_id = decoder_config.eos_token_id
model.config.decoder_start_token_id = decoder_start_token_id
model.config.pad_token_id = pad_token_id
image_processor = AutoImageProcessor.from_pretrained(enc)
tokenizer = AutoTokenizer.from_pretrained(dec)
tokenizer.pad_token = tokenizer.convert_ids_to_tokens(model.config.pad_token_id)
model.save_pretrained(out)
image_processor.save_pretrained(out)
tokenizer.save_pretrained(out)
'''

PYTORCH = r'''
import sys
from transformers import AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel
enc, dec, out = sys.argv[1:4]
model = VisionEncoderDecoderModel.from_encoder_decoder_pretrained(enc, dec)
model.config.decoder_start_token_id = model.config.decoder.bos_token_id
model.config.pad_token_id = model.config.decoder.eos_token_id
model.config.eos_token_id = model.config.decoder.eos_token_id
model.save_pretrained(out)
AutoImageProcessor.from_pretrained(enc).save_pretrained(out)
AutoTokenizer.from_pretrained(dec).save_pretrained(out)
'''

CONVERT_TO_PT = r'''
# from_pretrained(from_flax=True) leaves parameters on the meta device in transformers 4.51-4.57:
# build the PyTorch models from their configs and load the Flax weights explicitly.
import shutil, sys
from pathlib import Path
from transformers import AutoConfig, GPT2LMHeadModel, ViTModel
from transformers.modeling_flax_pytorch_utils import load_flax_checkpoint_in_pytorch_model
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
for name, cls in (("encoder", ViTModel), ("decoder", GPT2LMHeadModel)):
    model = load_flax_checkpoint_in_pytorch_model(cls(AutoConfig.from_pretrained(src / name)), str(src / name / "flax_model.msgpack"))
    model.save_pretrained(dst / name, safe_serialization=True)
    for item in (src / name).iterdir():
        if item.suffix in (".json", ".txt") and not (dst / name / item.name).exists():
            shutil.copy(item, dst / name / item.name)
'''

FLOOR = r'''
import os, sys
# The least any forge must do: put the inputs' bytes into the output (a kernel copy where the
# platform has one, as vedforge does), add the new tensors' bytes, fsync.
inputs, out, nbytes = sys.argv[1:-2], sys.argv[-2], int(sys.argv[-1])
left = nbytes
with open(out, "wb") as f:
    for path in inputs:
        with open(path, "rb") as src:
            size = os.fstat(src.fileno()).st_size
            done = 0
            while done < size and hasattr(os, "copy_file_range"):
                done += os.copy_file_range(src.fileno(), f.fileno(), size - done)
            src.seek(done)
            while block := memoryview(src.read(64 << 20)):
                while block:
                    block = block[os.write(f.fileno(), block):]
            left -= size
    block = b"\0" * (64 << 20)
    while left > 0:
        left -= os.write(f.fileno(), block[: min(left, len(block))])
    os.fsync(f.fileno())
'''


class FlowFailed(Exception):
    """A flow's process ended with an error or a signal (the OOM killer, at large scale)."""

    def __init__(self, what: str, wall: float, rss: int):
        super().__init__(what)
        self.what, self.wall, self.rss = what, wall, rss


def run(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> tuple[float, int]:
    """Run ``cmd``; return (wall seconds, peak RSS bytes) of that one child, or raise FlowFailed."""
    wall, rss, _ = run_with_cpu(cmd, env, cwd)
    return wall, rss


def run_with_cpu(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> tuple[float, int, float]:
    """:func:`run`, also returning the child's CPU seconds (user + system), which other load on
    the machine inflates far less than wall time."""
    # Untimed: flush the previous run's dirty pages so no flow pays for another's writeback.
    os.sync()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (the kernel's OOM killer, if memory ran out)" if name == "SIGKILL" else ""
        raise FlowFailed(f"killed by {name}{hint}", wall, usage.ru_maxrss * 1024)
    if code != 0:
        raise FlowFailed(f"exit {code}:\n{stderr[-3000:]}", wall, usage.ru_maxrss * 1024)
    return wall, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def weight_files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.name.startswith(("flax_model", "model")) and not p.name.endswith(".json"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", choices=sorted(SCALES), default="base")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vedforge-bench")
    parser.add_argument("--flows", default="classic,vedforge,floor,pytorch",
                        help="comma-separated: classic, vedforge, floor, pytorch (this scale's pair), tiny")
    parser.add_argument("--max-shard-size", default="10GB")
    parser.add_argument("--sweep", action="store_true", help="also time a 2x2 sweep of base-size checkpoints")
    args = parser.parse_args()
    py = sys.executable
    env = {"JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    flows = [f.strip() for f in args.flows.split(",") if f.strip()]
    if "tiny" in flows:
        tiny_benchmark(py, env, args.runs)
        flows.remove("tiny")
        if not flows:
            return

    inputs = args.cache / args.scale
    if not (inputs / "decoder" / "tokenizer.json").is_file():
        print(f"building {args.scale} checkpoints in {inputs} (once)...", flush=True)
        shutil.rmtree(inputs, ignore_errors=True)
        run([py, "-c", BUILD, json.dumps(SCALES[args.scale]), str(inputs), "0", str(REPO / "vedforge" / "assets")], env)
    enc, dec = inputs / "encoder", inputs / "decoder"
    input_bytes = sum(f.stat().st_size for f in weight_files(enc) + weight_files(dec))
    try:
        import importlib.util

        has_torch = importlib.util.find_spec("torch") is not None
    except ImportError:
        has_torch = False
    if "pytorch" in flows and not has_torch:
        flows.remove("pytorch")
    if "pytorch" in flows and not (inputs / "pt" / "decoder" / "model.safetensors").is_file():
        run([py, "-c", CONVERT_TO_PT, str(inputs), str(inputs / "pt")], env)

    results: dict[str, list[tuple[float, int, int]]] = {f: [] for f in flows}
    failures: list[FlowFailed] = []
    scratch = Path(tempfile.mkdtemp(prefix="vedforge-bench-out-"))
    out_bytes_ref = None
    for i in range(args.runs):
        for flow in flows:
            out = scratch / f"{flow}-{i}"
            if flow == "classic":
                try:
                    wall, rss = run([py, "-c", CLASSIC, str(enc), str(dec), str(out)], {**env, "USE_TORCH": "0"})
                except FlowFailed as failed:
                    # At large scale the classic script may not fit in memory: that is a result.
                    failures.append(failed)
                    shutil.rmtree(out, ignore_errors=True)
                    print(f"  run {i + 1} {flow:9s} FAILED after {failed.wall:.2f} s at {failed.rss / 2**30:.2f} GiB: "
                          f"{failed.what}", flush=True)
                    continue
            elif flow == "vedforge":
                wall, rss = run([py, "-m", "vedforge", f"encoder.name_or_path={enc}", "encoder.weights=pretrained",
                                 f"decoder.name_or_path={dec}", "decoder.weights=pretrained", f"output.dir={out}",
                                 f"output.max_shard_size={args.max_shard_size}", "hydra.output_subdir=null",
                                 "hydra/job_logging=none", "hydra/hydra_logging=none"], env)
                out_bytes_ref = dir_bytes(out)
            elif flow == "pytorch":
                wall, rss = run([py, "-c", PYTORCH, str(inputs / "pt" / "encoder"), str(inputs / "pt" / "decoder"), str(out)], env)
            else:
                out.mkdir(parents=True)
                nbytes = out_bytes_ref or input_bytes
                wall, rss = run([py, "-c", FLOOR, *map(str, weight_files(enc) + weight_files(dec)), str(out / "w"), str(nbytes)], env)
            results[flow].append((wall, rss, dir_bytes(out)))
            shutil.rmtree(out, ignore_errors=True)
            print(f"  run {i + 1} {flow:9s} {wall:7.2f} s  {rss / 2**30:5.2f} GiB", flush=True)

    print(f"\n{args.scale} pair: inputs {input_bytes / 1e6:.0f} MB, {args.runs} runs each, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d')}")
    print(f"{'flow':10s} {'median wall s':>14s} {'median peak RSS GiB':>20s} {'bytes written':>15s}")
    med = {}
    for flow, rows in results.items():
        if not rows:
            worst = max(failures, key=lambda f: f.rss)
            print(f"{flow:10s} failed in all {len(failures)} runs; peak RSS up to {worst.rss / 2**30:.2f} GiB, "
                  f"after up to {max(f.wall for f in failures):.1f} s: {worst.what.splitlines()[0]}")
            continue
        med[flow] = (statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows), rows[-1][2])
        print(f"{flow:10s} {med[flow][0]:14.2f} {med[flow][1] / 2**30:20.2f} {med[flow][2]:15,d}")
        if flow == "classic" and failures:
            print(f"{'':10s} (medians of the {len(rows)} runs that finished; {len(failures)} of {args.runs} failed: "
                  f"{failures[0].what.splitlines()[0]}, at {max(f.rss for f in failures) / 2**30:.2f} GiB)")
    if "vedforge" in med:
        for other in ("classic", "pytorch", "floor"):
            if other in med:
                print(f"vedforge/{other}: wall {med['vedforge'][0] / med[other][0]:.2f}, "
                      f"peak RSS {med['vedforge'][1] / med[other][1]:.2f}")
    if args.sweep:
        sweep_benchmark(py, env, inputs, args, med)
    shutil.rmtree(scratch, ignore_errors=True)


def tiny_benchmark(py: str, env: dict, runs: int) -> None:
    """The embedded default (``vedforge`` with no overrides but output.dir) beside the import
    floor and ``vedforge --help``, alternating, ``runs`` times each."""
    scratch = Path(tempfile.mkdtemp(prefix="vedforge-bench-tiny-"))
    walls: dict[str, list[float]] = {"vedforge": [], "floor": [], "help": []}
    cpus: dict[str, list[float]] = {flow: [] for flow in walls}
    commands = {
        # As a new user runs it: console logging on, Hydra's run directory under the cwd.
        "vedforge": lambda i: [py, "-m", "vedforge", f"output.dir={scratch / f'model-{i}'}"],
        "floor": lambda i: [py, "-c", "import transformers, flax"],
        "help": lambda i: [py, "-m", "vedforge", "--help"],
    }
    for i in range(runs):
        for flow, command in commands.items():
            # The floor without torch, as vedforge runs Flax forges (transformers imports torch when it can).
            wall, _, cpu = run_with_cpu(command(i), {**env, "USE_TORCH": "0"} if flow == "floor" else env, cwd=scratch)
            walls[flow].append(wall)
            cpus[flow].append(cpu)
            print(f"  run {i + 1} tiny {flow:9s} {wall:7.2f} s wall {cpu:6.2f} s CPU", flush=True)
    med = {flow: statistics.median(values) for flow, values in walls.items()}
    cpu = {flow: statistics.median(values) for flow, values in cpus.items()}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\ntiny: the embedded default (69,120 parameters, random weights), {runs} runs each, "
          f"{os.cpu_count()} cores, load average {load:.1f} at the end, {time.strftime('%Y-%m-%d')}")
    print(f"{'flow':10s} {'median wall s':>14s} {'median CPU s':>13s}")
    for flow, label in (("vedforge", "vedforge"), ("floor", "import floor (import transformers, flax)"),
                        ("help", "vedforge --help")):
        print(f"{flow:10s} {med[flow]:14.2f} {cpu[flow]:13.2f}   {label}")
    print(f"vedforge - floor: wall {med['vedforge'] - med['floor']:+.2f} s (ratio {med['vedforge'] / med['floor']:.2f}), "
          f"CPU {cpu['vedforge'] - cpu['floor']:+.2f} s (ratio {cpu['vedforge'] / cpu['floor']:.2f})\n")
    shutil.rmtree(scratch, ignore_errors=True)


def sweep_benchmark(py: str, env: dict, inputs: Path, args, med: dict) -> None:
    """A 2x2 sweep over two encoders and two decoders of this scale, in one process."""
    second = args.cache / f"{args.scale}-seed1"
    if not (second / "decoder" / "tokenizer.json").is_file():
        print(f"building a second {args.scale} pair in {second} (once)...", flush=True)
        shutil.rmtree(second, ignore_errors=True)
        run([py, "-c", BUILD, json.dumps(SCALES[args.scale]), str(second), "1", str(REPO / "vedforge" / "assets")], env)
    walls, rsss = [], []
    for i in range(args.runs):
        sweep_dir = Path(tempfile.mkdtemp(prefix="vedforge-bench-sweep-"))
        wall, rss = run([py, "-m", "vedforge", "-m",
                         f"encoder.name_or_path={inputs / 'encoder'},{second / 'encoder'}", "encoder.weights=pretrained",
                         f"decoder.name_or_path={inputs / 'decoder'},{second / 'decoder'}", "decoder.weights=pretrained",
                         f"hydra.sweep.dir={sweep_dir}", "hydra/job_logging=none", "hydra/hydra_logging=none"], env)
        summary = json.loads((sweep_dir / "summary.json").read_text())
        assert summary["forged"] == 4, summary
        loads = summary["checkpoint_loads"]
        walls.append(wall)
        rsss.append(rss)
        shutil.rmtree(sweep_dir, ignore_errors=True)
        print(f"  sweep run {i + 1}: {wall:.2f} s, {rss / 2**30:.2f} GiB, checkpoint reads {loads}", flush=True)
    sweep = statistics.median(walls)
    print(f"\n2x2 sweep ({args.scale}): median {sweep:.2f} s, peak RSS {statistics.median(rsss) / 2**30:.2f} GiB, "
          f"{loads['encoder'] + loads['decoder']} checkpoint reads for 4 writes")
    if "vedforge" in med:
        print(f"  vs 4 separate vedforge forges: {4 * med['vedforge'][0]:.2f} s (ratio {sweep / (4 * med['vedforge'][0]):.2f})")
    if "classic" in med:
        print(f"  vs 4 classic runs: {4 * med['classic'][0]:.2f} s (ratio {sweep / (4 * med['classic'][0]):.2f})")
    if "floor" in med:
        print(f"  vs 4 x the I/O floor: {4 * med['floor'][0]:.2f} s (ratio {sweep / (4 * med['floor'][0]):.2f})")


if __name__ == "__main__":
    try:
        main()
    except FlowFailed as failed:
        raise SystemExit(f"A benchmark step failed after {failed.wall:.1f} s: {failed.what}") from None
