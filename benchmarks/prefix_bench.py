"""Prefix (LLaVA) forge at scale: a CLIP-L/336-sized vision tower and a 1.1B language model.

Builds, once, into --work-dir two random local checkpoints in bfloat16 safetensors, written
tensor by tensor (the builder never holds more than one tensor):

  tower  a CLIPVisionModel of CLIP ViT-L/14-336's shape (1024 wide, 24 layers, 336 px, patch 14;
         0.30B parameters) with its CLIPImageProcessor;
  lm     a LlamaForCausalLM of TinyLlama-1.1B's shape (hidden 2048, 22 layers, 32 heads, 4 kv
         heads, intermediate 5632, vocabulary 32000, untied head), with a byte-level BPE
         tokenizer trained here and padded to exactly 32000 ids, and a chat template.

Then it runs, alternating, --runs times each, in processes of their own:

  vedforge  python -m vedforge architecture=prefix backend=pt encoder.name_or_path=TOWER
            decoder.name_or_path=LM output.dir=OUT (both weights=pretrained)
  floor     read every input weights file and write the same bytes into one file (a kernel copy,
            as vedforge copies unchanged tensors), padded to the forge's output weight bytes, fsync

and prints the median wall time of each, their ratio, the forge's median peak RSS against the
LM's size on disk, and the dtypes of the forged tensors (they must all stay bfloat16).
Peak RSS is ``ru_maxrss`` from ``wait4``: the largest of the forge process and any child it waited for.

    python benchmarks/prefix_bench.py --work-dir /tmp/prefix-bench            # 3 runs each
    python benchmarks/prefix_bench.py --work-dir /tmp/prefix-bench --runs 5 --override prefix.projector=linear
    python benchmarks/prefix_bench.py --work-dir /tmp/prefix-bench --build-only
    python benchmarks/prefix_bench.py --work-dir /tmp/prefix-bench --runs 1 --load-output   # also load the result
    python benchmarks/prefix_bench.py --work-dir /tmp/prefix-bench-small --scale small   # a quick check of the script

Wall time includes interpreter start-up and imports. Nothing is fetched from the network.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from forge_bench import FLOOR, FlowFailed, run  # noqa: E402

SCALES = {
    # openai/clip-vit-large-patch14-336's vision tower and TinyLlama/TinyLlama-1.1B-Chat-v1.0.
    "full": dict(
        tower=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                   image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu"),
        lm=dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048, rms_norm_eps=1e-5,
                rope_theta=10000.0, tie_word_embeddings=False),
    ),
    # The same families, a few MB: checks the script itself in seconds.
    "small": dict(
        tower=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   image_size=56, patch_size=14, projection_dim=32, hidden_act="quick_gelu"),
        lm=dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=32000, max_position_embeddings=256, rms_norm_eps=1e-5,
                rope_theta=10000.0, tie_word_embeddings=False),
    ),
}
# TinyLlama-1.1B-Chat-v1.0's template (Zephyr's), so the forge finds the LM's own chat template.
CHAT_TEMPLATE = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n"
    "{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n"
    "{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n"
    "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)
CORPUS = [f"{a} {b} {c}" for a in ("a dog", "two cats", "a man", "a red car", "the children", "a bird")
          for b in ("running on", "sitting near", "looking at", "parked by", "flying over")
          for c in ("the beach", "a green field", "the city street", "a wooden table", "the lake at sunset")]
STD = 0.02
_DONE = ".complete"


# --- streamed random checkpoints --------------------------------------------------------------


def _fill(name: str, shape: tuple[int, ...]):
    """The tensor ``name`` in bfloat16: ones for norm scales, zeros for biases, else normal(0, 0.02),
    from a generator seeded by the name (the same bytes on every build)."""
    import torch

    leaf = name.rsplit(".", 2)
    if name.endswith(".bias"):
        return torch.zeros(shape, dtype=torch.bfloat16)
    if name.endswith(".weight") and "norm" in leaf[-2]:
        return torch.ones(shape, dtype=torch.bfloat16)
    generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    return torch.randn(shape, generator=generator).mul_(STD).to(torch.bfloat16)


def write_streamed_safetensors(path: Path, specs: dict[str, tuple[int, ...]]) -> int:
    """Write ``model.safetensors`` holding a bfloat16 tensor per ``specs`` entry, one tensor at a
    time: the header is computed from the shapes, then each tensor is made, written and dropped.
    Returns the file's size."""
    import torch

    header, offset = {}, 0
    for name in sorted(specs):
        size = 2 * _numel(specs[name])
        header[name] = {"dtype": "BF16", "shape": list(specs[name]), "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {"format": "pt"}
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for name in sorted(specs):
            tensor = _fill(name, specs[name])
            f.write(tensor.view(-1).view(torch.int16).numpy().data)
            del tensor
        f.flush()
        os.fsync(f.fileno())
    partial.rename(path)
    return path.stat().st_size


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _state_specs(model_class, config) -> dict[str, tuple[int, ...]]:
    """Names and shapes of ``model_class(config)``'s saved tensors, from a model on the meta device."""
    import torch

    with torch.device("meta"):
        model = model_class(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def build_tower(out: Path, dims: dict) -> None:
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    out.mkdir(parents=True, exist_ok=True)
    config = CLIPVisionConfig(**dims, architectures=["CLIPVisionModel"], torch_dtype="bfloat16")
    write_streamed_safetensors(out / "model.safetensors", _state_specs(CLIPVisionModel, config))
    config.save_pretrained(out)
    size = dims["image_size"]
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(out)


def build_tokenizer(vocab_size: int):
    """A byte-level BPE tokenizer with Llama's special tokens (<unk> 0, <s> 1, </s> 2), trained on a
    small corpus and padded with unused entries to exactly ``vocab_size`` ids, as the LM's rows."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer=trainer)
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    for i in range(len(vocab), vocab_size):
        vocab[f"<unused_{i}>"] = i
    tok = Tokenizer.from_str(json.dumps(data))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    wrapped = LlamaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                 add_bos_token=True, add_eos_token=False, legacy=False, model_max_length=2048,
                                 clean_up_tokenization_spaces=False)
    wrapped.chat_template = CHAT_TEMPLATE
    assert len(wrapped) == vocab_size, (len(wrapped), vocab_size)
    return wrapped


def build_lm(out: Path, dims: dict) -> None:
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    config = LlamaConfig(**dims, bos_token_id=1, eos_token_id=2, architectures=["LlamaForCausalLM"],
                         torch_dtype="bfloat16")
    write_streamed_safetensors(out / "model.safetensors", _state_specs(LlamaForCausalLM, config))
    config.save_pretrained(out)
    GenerationConfig(bos_token_id=1, eos_token_id=2, max_length=2048, pad_token_id=0).save_pretrained(out)
    build_tokenizer(dims["vocab_size"]).save_pretrained(out)


def check_checkpoint(path: Path, model_class_name: str) -> int:
    """Check that ``path``'s weights are exactly the tensors ``model_class_name(config)`` saves,
    each readable; return the parameter count. Loads one tensor at a time."""
    import transformers
    from safetensors import safe_open
    from transformers import AutoConfig

    specs = _state_specs(getattr(transformers, model_class_name), AutoConfig.from_pretrained(path))
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        names = set(f.keys())
        assert names == set(specs), (sorted(names ^ set(specs))[:5])
        for name in sorted(names):
            tensor = f.get_slice(name)
            assert tuple(tensor.get_shape()) == specs[name] and tensor.get_dtype() == "BF16", name
        probe = f.get_tensor(sorted(names)[-1])
        assert probe.dtype.is_floating_point and bool(probe.float().abs().sum() > 0), name
    return sum(_numel(s) for s in specs.values())


def build_inputs(work: Path, scale: str) -> tuple[Path, Path]:
    """The tower and LM checkpoints of ``scale`` under ``work``, built once (a finished build leaves a
    marker; an interrupted one is rebuilt)."""
    tower, lm = work / scale / "clip-vit-l-336-tower", work / scale / "tinyllama-1.1b"
    dims = SCALES[scale]
    for path, build, cls in ((tower, build_tower, "CLIPVisionModel"), (lm, build_lm, "LlamaForCausalLM")):
        if (path / _DONE).is_file():
            continue
        print(f"building {path} (once)...", flush=True)
        shutil.rmtree(path, ignore_errors=True)
        start = time.perf_counter()
        build(path, dims["tower" if path == tower else "lm"])
        count = check_checkpoint(path, cls)
        (path / _DONE).write_text(json.dumps({"parameters": count}))
        print(f"  {cls}: {count / 1e6:,.1f}M parameters, {_weights_bytes(path) / 2**30:.2f} GiB, "
              f"{time.perf_counter() - start:.1f} s", flush=True)
    return tower, lm


# --- the runs ---------------------------------------------------------------------------------


def _weights(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.suffix == ".safetensors")


def _weights_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in _weights(path))


def output_dtypes(out: Path) -> dict[str, int]:
    """Tensor count per dtype over every safetensors file of ``out``, from the headers alone."""
    counts: dict[str, int] = {}
    for path in _weights(out):
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for name, entry in header.items():
            if name != "__metadata__":
                counts[entry["dtype"]] = counts.get(entry["dtype"], 0) + 1
    return counts


LOAD_OUTPUT = r'''
import sys, torch
from transformers import AutoProcessor, LlavaForConditionalGeneration
model, info = LlavaForConditionalGeneration.from_pretrained(sys.argv[1], dtype="auto", output_loading_info=True)
problems = {kind: names for kind, names in info.items() if names}
assert not problems, problems
dtypes = sorted({str(p.dtype) for p in model.parameters()})
assert dtypes == ["torch.bfloat16"], dtypes
processor = AutoProcessor.from_pretrained(sys.argv[1])
print(f"{type(model).__name__}: {sum(p.numel() for p in model.parameters()):,} parameters, {dtypes[0]}, "
      f"no missing or unexpected keys; {type(processor).__name__}, image token {processor.image_token!r}")
'''


def forge_command(py: str, tower: Path, lm: Path, out: Path, overrides: list[str]) -> list[str]:
    return [py, "-m", "vedforge", "architecture=prefix", "backend=pt",
            f"encoder.name_or_path={tower}", "encoder.weights=pretrained",
            f"decoder.name_or_path={lm}", "decoder.weights=pretrained", f"output.dir={out}",
            "hydra.output_subdir=null", "hydra/job_logging=none", "hydra/hydra_logging=none", *overrides]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "vedforge-bench" / "prefix",
                        help="where the input checkpoints are built once and kept")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="another recipe override for the forge (repeatable)")
    parser.add_argument("--flows", default="vedforge,floor", help="comma-separated: vedforge, floor")
    parser.add_argument("--build-only", action="store_true", help="build and check the inputs, then stop")
    parser.add_argument("--load-output", action="store_true",
                        help="afterwards, load the last forge with LlavaForConditionalGeneration.from_pretrained "
                             "(about 3 GiB of memory) and check its keys and dtype")
    args = parser.parse_args()
    py = sys.executable
    env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "JAX_PLATFORMS": "cpu"}
    tower, lm = build_inputs(args.work_dir, args.scale)
    inputs = _weights(tower) + _weights(lm)
    lm_bytes = _weights_bytes(lm)
    if args.build_only:
        return

    flows = [f.strip() for f in args.flows.split(",") if f.strip()]
    unknown = sorted(set(flows) - {"vedforge", "floor"})
    if unknown or not flows:
        parser.error(f"--flows takes vedforge and/or floor, not {','.join(unknown) or 'nothing'}")
    results: dict[str, list[tuple[float, int]]] = {flow: [] for flow in flows}
    out_weight_bytes = None
    dtypes: dict[str, int] = {}
    scratch = Path(tempfile.mkdtemp(prefix="vedforge-prefix-bench-", dir=args.work_dir))
    try:
        for i in range(args.runs):
            for flow in results:
                out = scratch / f"{flow}-{i}"
                if flow == "vedforge":
                    wall, rss = run(forge_command(py, tower, lm, out, args.override), env)
                    out_weight_bytes = _weights_bytes(out)
                    dtypes = output_dtypes(out)
                else:
                    out.mkdir(parents=True)
                    nbytes = out_weight_bytes or sum(p.stat().st_size for p in inputs)
                    wall, rss = run([py, "-c", FLOOR, *map(str, inputs), str(out / "w"), str(nbytes)], env)
                results[flow].append((wall, rss))
                if not (args.load_output and flow == "vedforge" and i == args.runs - 1):
                    shutil.rmtree(out, ignore_errors=True)
                print(f"  run {i + 1} {flow:9s} {wall:7.2f} s  {rss / 2**30:5.2f} GiB", flush=True)
        if args.load_output and "vedforge" in results:
            loaded = subprocess.run([py, "-c", LOAD_OUTPUT, str(scratch / f"vedforge-{args.runs - 1}")],
                                    env={**os.environ, **env}, capture_output=True, text=True)
            if loaded.returncode != 0:
                raise SystemExit(f"the forged checkpoint does not load as expected:\n{loaded.stderr[-3000:]}")
            print(f"  loaded: {loaded.stdout.strip()}", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    input_bytes = sum(p.stat().st_size for p in inputs)
    load = os.getloadavg()[0]
    print(f"\nprefix {args.scale}: tower {_weights_bytes(tower) / 2**30:.2f} GiB + LM {lm_bytes / 2**30:.2f} GiB in "
          f"(bf16 safetensors), {args.runs} runs each, "
          f"{os.cpu_count()} cores, load average {load:.1f} at the end, {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"{'flow':10s} {'median wall s':>14s} {'median peak RSS GiB':>20s} {'RSS / LM on disk':>17s}")
    med = {flow: (statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows))
           for flow, rows in results.items()}
    for flow, (wall, rss) in med.items():
        print(f"{flow:10s} {wall:14.2f} {rss / 2**30:20.2f} {rss / lm_bytes:17.2f}")
    print(f"inputs {input_bytes:,} bytes")
    if "vedforge" not in med:
        return
    if "floor" in med:
        print(f"vedforge/floor: wall {med['vedforge'][0] / med['floor'][0]:.2f}")
    print(f"forged weights {out_weight_bytes:,} bytes")
    print(f"vedforge peak RSS {med['vedforge'][1] / 2**30:.2f} GiB = {med['vedforge'][1] / lm_bytes:.2f} x the LM's "
          f"{lm_bytes / 2**30:.2f} GiB on disk")
    kept = set(dtypes) == {"BF16"}
    print(f"output tensor dtypes: {dtypes} -> {'all bfloat16, as the inputs' if kept else 'NOT all bfloat16'}")
    if not kept:
        raise SystemExit("the forged checkpoint did not keep the inputs' dtype (bfloat16)")


if __name__ == "__main__":
    try:
        main()
    except FlowFailed as failed:
        raise SystemExit(f"A benchmark step failed after {failed.wall:.1f} s: {failed.what}") from None
