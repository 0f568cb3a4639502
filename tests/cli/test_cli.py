"""The command line: a real forge, and every bad input ends in one clear paragraph and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests_support import run_cli
from vedforge.core.errors import EXIT_USER_ERROR


def _copy_asset(dest: Path, name: str) -> Path:
    import shutil

    from vedforge.core.resources import assets_dir

    shutil.copytree(assets_dir() / name, dest)
    return dest


def _config_only_checkpoint(path: Path, model_type: str, **fields) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": model_type, **fields}))
    return path


def test_default_forge_writes_a_complete_artifact_in_hydras_run_dir(tmp_path):
    result = run_cli(cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = list((tmp_path / "outputs").glob("*/*"))
    assert (run_dir / "flax_model.msgpack").is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / ".hydra" / "overrides.yaml").is_file()
    manifest = json.loads((run_dir / "vedforge_manifest.json").read_text())
    assert manifest["inputs"]["encoder"]["name_or_path"] == "builtin:vit_tiny"
    assert "Forged vit + gpt2" in (run_dir / "vedforge.log").read_text()
    assert not [p for p in run_dir.parent.iterdir() if p.name.startswith(".")]


def test_cfg_job_prints_the_composed_recipe(tmp_path):
    result = run_cli("encoder=beit_tiny", "decoder=bert_tiny", "--cfg", "job", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "builtin:beit_tiny" in result.stdout and "builtin:bert_tiny" in result.stdout
    assert not (tmp_path / "outputs").exists()


def test_help_lists_the_groups(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for group in ("encoder", "decoder", "token_policy"):
        assert group in result.stdout


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], list[str]]]:
    """case -> (overrides, fragments the message must contain)."""
    llama = _config_only_checkpoint(tmp / "llama", "llama")
    swin = _config_only_checkpoint(tmp / "swin", "swin")
    empty = tmp / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a checkpoint")
    a_file = tmp / "a_file"
    a_file.write_text("x")
    garbage_weights = _copy_asset(tmp / "garbage_weights", "gpt2_tiny")
    (garbage_weights / "flax_model.msgpack").write_bytes(b"\xc1 definitely not msgpack" * 40)
    bad_config = tmp / "bad_config"
    bad_config.mkdir()
    (bad_config / "config.json").write_text("{ not json")
    bad_tokenizer = _copy_asset(tmp / "bad_tokenizer", "gpt2_tiny")
    (bad_tokenizer / "tokenizer.json").write_text("{ this is not a tokenizer")
    for name in ("vocab.json", "merges.txt"):
        (bad_tokenizer / name).unlink()
    return {
        "unknown group option": (["encoder=vit_huge"], ["vit_huge"]),
        "misspelt key": (["encoder.revison=main"], ["revison"]),
        "wrong type": (["seed=abc"], ["seed", "abc"]),
        "missing path": (["encoder.name_or_path=/no/such/checkpoint"], ["/no/such/checkpoint", "does not exist"]),
        "not a checkpoint": ([f"decoder.name_or_path={empty}"], [str(empty), "config.json", "notes.txt"]),
        "hub name not cached offline": (
            ["decoder=gpt2", f"hub.cache_dir={tmp / 'cache'}", "hub.offline=true"],
            ["openai-community/gpt2", "offline"],
        ),
        "encoder not a vision model": (["encoder.name_or_path=builtin:gpt2_tiny"], ["gpt2", "not a vision model", "vit"]),
        "decoder without cross-attention": (["architecture=cross_attention", f"decoder.name_or_path={llama}",
                                             "decoder.weights=pretrained"], ["llama", "cross-attention", "gpt2"]),
        "encoder without flax port": (["backend=flax", f"encoder.name_or_path={swin}", "encoder.weights=pretrained"],
                                      ["swin", "Flax", "backend=pt"]),
        "tiny encoder without flax port": (["backend=flax", "encoder=convnext_tiny"], ["convnext", "backend=pt", "vedforge[torch]"]),
        "pytorch output over flax safetensors": (["output.pytorch=true", "output.format=safetensors"],
                                                 ["output.pytorch=true", "output.format=msgpack", "backend=pt"]),
        "unknown backend": (["backend=torch"], ["backend/torch", "flax", "pt"]),
        "number as group option": (["encoder=0"], ["encoder=0", "not a number", "vit_tiny"]),
        "empty sweep": (["-m", "seed=range(0,0)", f"hydra.sweep.dir={tmp / 'sweep'}"], ["launched no jobs", "seed=range(0,0)"]),
        "explicit policy missing id": (["token_policy=explicit", "token_policy.pad_token=0"], ["decoder_start_token", "eos_token"]),
        "override key the config lacks": (["+encoder.config_overrides.image_sise=64"], ["image_sise", "image_size"]),
        "image size not divisible by patch": (["+encoder.config_overrides.image_size=36"], ["36", "patch_size 8"]),
        "unparsable shard size": (["output.max_shard_size=lots"], ["max_shard_size", "lots"]),
        "output path is a file": ([f"output.dir={a_file}"], [str(a_file), "is a file"]),
        "hydra run dir is a file": ([f"hydra.run.dir={a_file}"], [str(a_file), "is a file", "hydra.run.dir"]),
        "token string not in vocabulary": (["decoder=bert_tiny", "token_policy.pad_token=notatoken"],
                                           ["notatoken", "not in the decoder tokenizer's vocabulary", "[PAD]"]),
        "token id out of range": (["token_policy.eos_token=99999"], ["99999", "out of range", "0 to 511"]),
        "corrupt weights file": ([f"decoder.name_or_path={garbage_weights}", "decoder.weights=pretrained"],
                                 [str(garbage_weights / "flax_model.msgpack"), "cannot be parsed"]),
        "invalid config.json": ([f"decoder.name_or_path={bad_config}"], ["config.json", str(bad_config)]),
        "tokenizer that does not parse": ([f"decoder.name_or_path={bad_tokenizer}"],
                                          ["tokenizer", str(bad_tokenizer), "cannot be loaded"]),
        "revision not in the cache offline": (
            ["decoder=gpt2", "decoder.revision=v9.9", f"hub.cache_dir={tmp / 'cache'}", "hub.offline=true"],
            ["openai-community/gpt2", "v9.9", "offline"],
        ),
        "empty name_or_path": (["encoder.name_or_path=''"], ["encoder.name_or_path is empty"]),
    }


BAD_INPUT_CASES = [
    "unknown group option", "misspelt key", "wrong type", "missing path", "not a checkpoint",
    "hub name not cached offline", "encoder not a vision model", "decoder without cross-attention",
    "encoder without flax port", "explicit policy missing id", "override key the config lacks",
    "image size not divisible by patch", "unparsable shard size", "output path is a file",
    "hydra run dir is a file",
    "token string not in vocabulary", "token id out of range", "corrupt weights file", "invalid config.json",
    "tokenizer that does not parse", "revision not in the cache offline", "empty name_or_path",
    "tiny encoder without flax port", "pytorch output over flax safetensors", "unknown backend",
    "number as group option", "empty sweep",
]


@pytest.mark.parametrize("case", BAD_INPUT_CASES)
def test_bad_input_gives_one_clear_paragraph(case, tmp_path):
    overrides, fragments = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out"
    if not any(o.startswith("output.dir=") for o in overrides):
        overrides = [*overrides, f"output.dir={out}"]
    result = run_cli(*overrides, cwd=tmp_path)
    assert result.returncode == EXIT_USER_ERROR, (case, result.stderr)
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())  # the paragraph is wrapped at 100 columns
    for fragment in fragments:
        assert fragment in message, (case, fragment, result.stderr)
    assert not out.exists()
    assert not list(tmp_path.glob(".out.partial-*"))


def test_unwritable_output_dir(tmp_path):
    target = Path("/sys/vedforge-unwritable/out")
    try:
        target.parent.mkdir()
    except OSError:
        pass
    else:  # pragma: no cover - only where /sys is writable
        target.parent.rmdir()
        pytest.skip("/sys is writable here")
    result = run_cli(f"output.dir={target}", cwd=tmp_path)
    assert result.returncode == EXIT_USER_ERROR
    message = " ".join(result.stderr.split())
    assert str(target) in message and "cannot be created" in message
    assert "Traceback" not in result.stderr


def test_debug_switch_shows_the_traceback(tmp_path):
    result = run_cli("encoder.name_or_path=/no/such/checkpoint", f"output.dir={tmp_path / 'o'}", cwd=tmp_path,
                     env={"VEDFORGE_DEBUG": "1"})
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "SourceNotFoundError" in result.stderr


COMPOSITION_ERRORS = {
    "wrong type": ["seed=abc"],
    "unknown group option": ["encoder=vit_huge"],
    "misspelt key": ["encoder.revison=main"],
    "a sweep job that does not compose": ["-m", "encoder=vit_tiny,vit_huge", "hydra.sweep.dir=sweep"],
}


@pytest.mark.parametrize("full_error", [False, True], ids=["", "HYDRA_FULL_ERROR=1"])
@pytest.mark.parametrize("case", COMPOSITION_ERRORS)
def test_a_composition_error_exits_2_with_or_without_hydra_full_error(case, full_error, tmp_path):
    env = {"HYDRA_FULL_ERROR": "1"} if full_error else {"HYDRA_FULL_ERROR": ""}
    result = run_cli(*COMPOSITION_ERRORS[case], cwd=tmp_path, env=env)
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    # HYDRA_FULL_ERROR=1 asks for Hydra's stack; without it Hydra prints its message only.
    assert ("Traceback" in result.stderr) == full_error, result.stderr


@pytest.mark.parametrize("full_error", [False, True], ids=["", "HYDRA_FULL_ERROR=1"])
def test_a_user_error_with_its_traceback_still_exits_2(full_error, tmp_path):
    env = {"VEDFORGE_DEBUG": "1", "HYDRA_FULL_ERROR": "1" if full_error else ""}
    result = run_cli("encoder.name_or_path=/no/such/checkpoint", f"output.dir={tmp_path / 'o'}", cwd=tmp_path, env=env)
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    assert "Traceback" in result.stderr and "SourceNotFoundError" in result.stderr


def _hinted_overrides(text: str) -> list[str]:
    """The overrides a skip message says forge the artifact again."""
    import re

    match = re.search(r"((?:[\w.]+=\w+ )+)forges it again", text)
    assert match, text
    return match.group(1).split()


def test_the_skip_hints_forge_the_artifact_again(tmp_path):
    out = f"output.dir={tmp_path / 'model'}"
    assert run_cli(out, cwd=tmp_path).returncode == 0
    skipped = run_cli(out, cwd=tmp_path)
    assert skipped.returncode == 0 and "Already complete, skipped" in skipped.stderr, skipped.stderr
    planned = run_cli("plan", out, cwd=tmp_path)
    assert planned.returncode == 0 and "SKIPPED" in planned.stdout, planned.stdout
    for hint in (_hinted_overrides(skipped.stderr), _hinted_overrides(planned.stdout)):
        again = run_cli(out, *hint, cwd=tmp_path)
        assert again.returncode == 0, (hint, again.stderr)
        assert "Forged vit + gpt2" in again.stderr, again.stderr


def _without_weights(tmp: Path, name: str) -> Path:
    """An embedded tiny checkpoint's config and tokenizer files, without weights."""
    return _copy_asset(tmp / f"{name}_no_weights", name)


@pytest.mark.parametrize("role, overrides", [
    ("decoder", ["decoder.name_or_path={gpt2_tiny}", "decoder.weights=pretrained"]),
    ("encoder", ["encoder.name_or_path={vit_tiny}", "encoder.weights=pretrained"]),
    ("decoder", ["architecture=prefix", "backend=pt", "decoder=llama_tiny", "decoder.name_or_path={llama_tiny}",
                 "decoder.weights=pretrained"]),
], ids=["decoder", "encoder", "prefix decoder"])
def test_a_checkpoint_without_weights_names_the_key_that_builds_it_from_its_config(role, overrides, tmp_path):
    if "backend=pt" in overrides:
        pytest.importorskip("torch")
    paths = {name: _without_weights(tmp_path, name) for name in ("gpt2_tiny", "vit_tiny", "llama_tiny")}
    result = run_cli(*[o.format(**paths) for o in overrides], f"output.dir={tmp_path / 'out'}", cwd=tmp_path)
    message = " ".join(result.stderr.split())
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    assert f"Set {role}.weights=random to use only its config" in message, message
    assert not (tmp_path / "out").exists()
