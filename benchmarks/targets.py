"""Every performance target of vedforge, measured side by side in one run.

Each flow runs in a process of its own, the flows of a target alternating, --runs times each;
the figures are medians, and each target prints its ratio beside the bound it must meet:

  base      the base pair (ViT-base/16 + GPT-2 small, local Flax checkpoints) forged by vedforge,
            against the PyTorch-by-hand flow (VisionEncoderDecoderModel.from_encoder_decoder_pretrained
            + save_pretrained, safetensors inputs): wall <= 0.3x
  prefix    a prefix (LLaVA) forge of pretrained tiny parts (ViT + Llama, PyTorch safetensors), against
            importing transformers' LLaVA class with torch: wall and peak RSS <= 0.5x
  prefix1b  the 1.1B prefix pair of benchmarks/prefix_bench.py against its I/O floor: wall <= 2x,
            peak RSS well under the LM's size on disk
  convert   `vedforge convert` of the base pair's forged Flax checkpoint against its I/O floor: wall <= 2x
  start     the embedded default (`vedforge`) and `vedforge --help`, against the same commands of the
            code at --baseline (a checkout of an earlier commit): no slower

A forge of a configuration derives what it reads off transformers' classes once and keeps it
(vedforge.core.derived_cache), and a forge of inputs forged before is replayed from its record
(vedforge.pipeline.replay): each target's vedforge flow is run once, untimed, before its timed
runs, so the timed runs are what every forge of those inputs after the first costs. The base and
1.1B prefix targets also time `planned`, the same forge with VEDFORGE_REPLAY=off: planned again
(derivations kept, the weights written while it plans), as a forge of a new recipe of known
configurations is. The embedded default is also timed with an empty cache each run (`cold`), as a new user's first
command runs. --only picks targets. Inputs are built once under --work-dir.

    python benchmarks/targets.py --runs 3 --baseline /path/to/old/checkout
    python benchmarks/targets.py --only base,prefix --runs 5
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
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from convert_bench import build_source, flax_weights  # noqa: E402
from forge_bench import BUILD, CONVERT_TO_PT, FLOOR, PYTORCH, REPO, SCALES, dir_bytes, run, run_with_cpu, weight_files  # noqa: E402
import prefix_bench  # noqa: E402

TARGETS = ("base", "prefix", "prefix1b", "convert", "start")

TINY_PREFIX_BUILD = r'''
import shutil, sys, torch
from pathlib import Path
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
assets, out = Path(sys.argv[1]), Path(sys.argv[2])
for name, cls in (("vit_tiny", AutoModel), ("llama_tiny", AutoModelForCausalLM)):
    torch.manual_seed(0)
    cls.from_config(AutoConfig.from_pretrained(assets / name)).save_pretrained(out / name)
    for item in (assets / name).iterdir():
        if item.name != "config.json" and item.suffix in (".json", ".txt", ".model", ".jinja"):
            shutil.copy(item, out / name / item.name)
'''
LLAVA_IMPORT = "import torch, transformers; from transformers import LlavaForConditionalGeneration"


def timed(flows: dict[str, Callable[[int], tuple[list[str], dict]]], runs: int, label: str,
          scratch: Path) -> dict[str, tuple]:
    """Run each flow ``runs`` times, alternating; return flow -> (median wall, median peak RSS, median CPU).
    What a run wrote under ``scratch`` is removed after it (the untimed first forges' ``warm-*`` stay)."""
    rows: dict[str, list[tuple[float, int, float]]] = {name: [] for name in flows}
    for i in range(runs):
        for name, make in flows.items():
            command, env = make(i)
            wall, rss, cpu = run_with_cpu(command, env)
            rows[name].append((wall, rss, cpu))
            for written in scratch.iterdir():
                if not written.name.startswith("warm"):
                    shutil.rmtree(written) if written.is_dir() else written.unlink()
            print(f"  {label} run {i + 1} {name:14s} {wall:7.2f} s {rss / 2**30:6.2f} GiB {cpu:6.2f} s CPU", flush=True)
    return {name: tuple(statistics.median(r[k] for r in values) for k in range(3)) for name, values in rows.items()}


def report(title: str, med: dict[str, tuple], lines: list[str]) -> None:
    print(f"\n{title}")
    print(f"  {'flow':14s} {'median wall s':>14s} {'median peak RSS GiB':>20s} {'median CPU s':>13s}")
    for name, (wall, rss, cpu) in med.items():
        print(f"  {name:14s} {wall:14.2f} {rss / 2**30:20.2f} {cpu:13.2f}")
    for line in lines:
        print(f"  {line}")
    print(flush=True)


def verdict(ratio: float, bound: float) -> str:
    return f"{ratio:.2f} (target <= {bound}: {'met' if ratio <= bound else 'NOT met'})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default=",".join(TARGETS), help=f"comma-separated, of: {', '.join(TARGETS)}")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "vedforge-bench")
    parser.add_argument("--baseline", type=Path, help="a checkout of earlier code, for the start target")
    args = parser.parse_args()
    only = [t.strip() for t in args.only.split(",") if t.strip()]
    py = sys.executable
    work = args.work_dir
    cache = Path(tempfile.mkdtemp(prefix="vedforge-bench-cache-"))
    env = {"JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "VEDFORGE_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    quiet = ["hydra.output_subdir=null", "hydra/job_logging=none", "hydra/hydra_logging=none"]
    scratch = Path(tempfile.mkdtemp(prefix="vedforge-bench-out-"))
    load = os.getloadavg()[0]
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, load average {load:.1f} at the start, "
          f"{args.runs} runs each", flush=True)

    def out(name: str, i: int) -> Path:
        path = scratch / f"{name}-{i}"
        shutil.rmtree(path, ignore_errors=True)
        return path

    if "base" in only:
        inputs = work / "base"
        if not (inputs / "decoder" / "tokenizer.json").is_file():
            run([py, "-c", BUILD, json.dumps(SCALES["base"]), str(inputs), "0", str(REPO / "vedforge" / "assets")], env)
        if not (inputs / "pt" / "decoder" / "model.safetensors").is_file():
            run([py, "-c", CONVERT_TO_PT, str(inputs), str(inputs / "pt")], env)
        enc, dec = inputs / "encoder", inputs / "decoder"
        forge = [py, "-m", "vedforge", f"encoder.name_or_path={enc}", "encoder.weights=pretrained",
                 f"decoder.name_or_path={dec}", "decoder.weights=pretrained", *quiet]
        run([*forge, f"output.dir={out('warm', 0)}"], env)  # derives the tree once
        nbytes = dir_bytes(scratch / "warm-0")
        med = timed({
            "vedforge": lambda i: ([*forge, f"output.dir={out('base-vedforge', i)}"], env),
            "planned": lambda i: ([*forge, f"output.dir={out('base-planned', i)}"], {**env, "VEDFORGE_REPLAY": "off"}),
            "pytorch": lambda i: ([py, "-c", PYTORCH, str(inputs / "pt" / "encoder"), str(inputs / "pt" / "decoder"),
                                   str(out("base-pytorch", i))], env),
            "floor": lambda i: ([py, "-c", FLOOR, *map(str, weight_files(enc) + weight_files(dec)),
                                 str(scratch / f"base-floor-{i}.bin"), str(nbytes)], env),
        }, args.runs, "base", scratch)
        report("base pair (ViT-base/16 + GPT-2 small, 957 MB written)", med, [
            f"vedforge/pytorch wall: {verdict(med['vedforge'][0] / med['pytorch'][0], 0.3)}; "
            f"peak RSS {med['vedforge'][1] / med['pytorch'][1]:.2f}",
            f"planned/pytorch wall: {med['planned'][0] / med['pytorch'][0]:.2f}",
            f"vedforge/floor wall: {med['vedforge'][0] / med['floor'][0]:.2f}"])

    if "prefix" in only:
        tiny = work / "prefix-tiny"
        if not (tiny / "llama_tiny" / "model.safetensors").is_file():
            run([py, "-c", TINY_PREFIX_BUILD, str(REPO / "vedforge" / "assets"), str(tiny)], env)
        forge = [py, "-m", "vedforge", "architecture=prefix", "backend=pt",
                 f"encoder.name_or_path={tiny / 'vit_tiny'}", "encoder.weights=pretrained",
                 f"decoder.name_or_path={tiny / 'llama_tiny'}", "decoder.weights=pretrained", *quiet]
        run([*forge, f"output.dir={out('warm', 1)}"], env)
        med = timed({
            "vedforge": lambda i: ([*forge, f"output.dir={out('prefix-vedforge', i)}"], env),
            "llava_import": lambda i: ([py, "-c", LLAVA_IMPORT], env),
        }, args.runs, "prefix", scratch)
        report("prefix forge of pretrained tiny parts (ViT + Llama)", med, [
            f"vedforge/llava_import wall: {verdict(med['vedforge'][0] / med['llava_import'][0], 0.5)}",
            f"vedforge/llava_import peak RSS: {verdict(med['vedforge'][1] / med['llava_import'][1], 0.5)}"])

    if "prefix1b" in only:
        tower, lm = prefix_bench.build_inputs(work / "prefix", "full")
        weights = prefix_bench._weights(tower) + prefix_bench._weights(lm)
        forge = prefix_bench.forge_command(py, tower, lm, out("warm", 2), [])
        run(forge, env)
        nbytes = sum(p.stat().st_size for p in prefix_bench._weights(scratch / "warm-2"))
        lm_bytes = prefix_bench._weights_bytes(lm)
        med = timed({
            "vedforge": lambda i: (prefix_bench.forge_command(py, tower, lm, out("p1b-vedforge", i), []), env),
            "planned": lambda i: (prefix_bench.forge_command(py, tower, lm, out("p1b-planned", i), []),
                                  {**env, "VEDFORGE_REPLAY": "off"}),
            "floor": lambda i: ([py, "-c", FLOOR, *map(str, weights), str(scratch / f"p1b-floor-{i}.bin"), str(nbytes)],
                                env),
        }, args.runs, "prefix1b", scratch)
        report("1.1B prefix pair (CLIP ViT-L/14-336 tower + TinyLlama-1.1B-shaped LM, bf16)", med, [
            f"vedforge/floor wall: {verdict(med['vedforge'][0] / med['floor'][0], 2.0)}",
            f"planned/floor wall: {med['planned'][0] / med['floor'][0]:.2f}",
            f"vedforge peak RSS / LM on disk: {med['vedforge'][1] / lm_bytes:.2f} ({lm_bytes / 2**30:.2f} GiB)"])

    if "convert" in only:
        source = build_source(py, env, work, "base", "10GB")
        weights = flax_weights(source)
        convert = lambda i: [py, "-m", "vedforge", "convert", str(source), str(out("convert-vedforge", i))]  # noqa: E731
        run(convert(0), env)
        nbytes = sum(p.stat().st_size for p in weights)
        med = timed({
            "vedforge": lambda i: (convert(i), env),
            "floor": lambda i: ([py, "-c", FLOOR, *map(str, weights), str(scratch / f"convert-floor-{i}.bin"),
                                 str(nbytes)], env),
        }, args.runs, "convert", scratch)
        report("vedforge convert of the base pair (0.89 GiB flax_model.msgpack)", med, [
            f"vedforge/floor wall: {verdict(med['vedforge'][0] / med['floor'][0], 2.0)}"])

    if "start" in only:
        flows: dict[str, Callable[[int], tuple[list[str], dict]]] = {}

        def default(code: Path, name: str, cold: bool) -> Callable[[int], tuple[list[str], dict]]:
            def make(i: int) -> tuple[list[str], dict]:
                folder = Path(tempfile.mkdtemp(prefix="vedforge-bench-cold-")) if cold else cache
                return ([py, "-m", "vedforge", f"output.dir={out(name, i)}", *quiet],
                        {**env, "PYTHONPATH": str(code), "VEDFORGE_CACHE": str(folder)})
            return make

        run([py, "-m", "vedforge", f"output.dir={out('warm', 3)}", *quiet], env)
        flows["default"] = default(REPO, "default", cold=False)
        flows["default_cold"] = default(REPO, "default-cold", cold=True)
        flows["help"] = lambda i: ([py, "-m", "vedforge", "--help"], env)
        if args.baseline is not None:
            flows["default_before"] = default(args.baseline, "default-before", cold=True)
            flows["help_before"] = lambda i: ([py, "-m", "vedforge", "--help"], {**env, "PYTHONPATH": str(args.baseline)})
        med = timed(flows, args.runs, "start", scratch)
        lines = []
        if args.baseline is not None:
            lines += [f"default (kept derivations) / before: {med['default'][0] / med['default_before'][0]:.2f}",
                      f"default (empty cache) / before: {verdict(med['default_cold'][0] / med['default_before'][0], 1.0)}",
                      f"--help / before: {verdict(med['help'][0] / med['help_before'][0], 1.0)}"]
        report("the embedded default and --help", med, lines)
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
