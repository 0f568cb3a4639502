"""The README stays true: its commands compose (the hub ones) and plan or run (their tiny twins),
its recipe notes match recipes/, its list of top-level keys is complete, and the messages it
quotes are the ones the program prints."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Optional

import pytest

from conftest import compose_recipe
from vedforge.core.resources import group_options, recipes_dir

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
HAS_TORCH = importlib.util.find_spec("torch") is not None

# Hub-only group options whose tiny twin is not named <option>_tiny.
_TWINS = {"smollm2": "llama_tiny", "tinyllama": "llama_tiny"}
# Recipes that need no network.
_OFFLINE_RECIPES = {"tiny_smoke", "tiny_sweep_smoke", "tiny_prefix_smoke"}


# --- the commands ------------------------------------------------------------------------------


def readme_commands() -> list[tuple[int, list[str]]]:
    """Every ``vedforge ...`` line of the README's bash blocks, as (line number, arguments)."""
    commands = []
    for block in re.finditer(r"^[ \t]*```bash\n(.*?)^[ \t]*```", README, re.M | re.S):
        number = README.count("\n", 0, block.start(1)) + 1
        pending, start = "", number
        for offset, line in enumerate(block.group(1).splitlines()):
            if not pending:
                start = number + offset
            if line.rstrip().endswith("\\"):  # a continuation line
                pending += line.rstrip()[:-1] + " "
                continue
            line, pending = pending + line, ""
            for command in line.split("&&"):
                args = shlex.split(command, comments=True)
                if args[:1] == ["vedforge"]:
                    commands.append((start, args[1:]))
    return commands


COMMANDS = readme_commands()


def _placeholders(args: list[str]) -> list[str]:
    return [a.replace("<commit>", "0123456789abcdef0123456789abcdef01234567") for a in args]


def _split(args: list[str]) -> tuple[bool, list[str]]:
    """(multirun, overrides) of a forge command line; options such as --cfg are not overrides."""
    multirun = "-m" in args or "--multirun" in args
    overrides, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("--cfg", "-c", "--config-dir", "-cd"):
            skip = True
        elif not arg.startswith("-"):
            overrides.append(arg)
    return multirun, overrides


def tiny_twin(args: list[str]) -> Optional[list[str]]:
    """The same command on the embedded tiny models, or None when it has none offline (a local
    path of the reader's, a hub recipe, a launcher, a subcommand)."""
    if args[:1] in (["verify"], ["convert"], ["plan"]) or "--config-dir" in args:
        return None
    twin = []
    for arg in args:
        key, _, value = arg.partition("=")
        if key in ("encoder", "decoder"):
            options = set(group_options(key))
            names = [_TWINS.get(v, f"{v}_tiny") if not v.endswith("_tiny") else v for v in value.split(",")]
            if not all(name in options for name in names):
                return None
            twin.append(f"{key}={','.join(names)}")
        elif key.endswith(".revision"):
            continue  # the embedded models have no revisions
        elif key.endswith(".name_or_path") or key.startswith(("hydra", "hub.", "output.dir")):
            return None
        elif key == "recipe" and value not in _OFFLINE_RECIPES:
            return None
        else:
            twin.append(arg)
    return twin


def _needs_torch(args: list[str]) -> bool:
    text = " ".join(args)
    return "backend=pt" in text or "backend=flax,pt" in text or "output.pytorch=true" in text or "prefix" in text


def _job_configs(args: list[str], monkeypatch, tmp_path: Path):
    """Each job's composed task config, as ``vedforge plan`` composes them (no weights read)."""
    from vedforge.cli.plan_command import _job_configs
    from vedforge.sweeps.summary import register_resolvers

    register_resolvers()  # hydra.sweep.subdir names each pair, as the command registers it
    # Composing decides whether torch may be imported; keep that decision out of this process.
    monkeypatch.delenv("USE_TORCH", raising=False)
    multirun, overrides = _split(_placeholders(args))
    if multirun:
        overrides.append(f"hydra.sweep.dir={tmp_path / 'sweep'}")
    else:
        overrides.append(f"hydra.run.dir={tmp_path / 'run'}")
    jobs = []
    for pair, cfg, error in _job_configs(overrides, multirun, None):
        assert error is None, (pair, error)
        jobs.append((pair, cfg))
    monkeypatch.delenv("USE_TORCH", raising=False)
    return jobs


def test_the_readme_shows_commands():
    lines = {" ".join(args) for _, args in COMMANDS}
    assert "" in lines and "recipe=tiny_prefix_smoke" in lines
    assert len([args for _, args in COMMANDS if tiny_twin(args) is not None]) >= 15


@pytest.mark.parametrize("line, args", COMMANDS, ids=[f"line{n}" for n, _ in COMMANDS])
def test_every_readme_command_composes(line, args, monkeypatch, tmp_path):
    """Each command line's overrides, hub checkpoints included, compose into valid recipes."""
    from vedforge.recipe.validate import recipe_problems
    from vedforge.sweeps.launchers import missing_launcher

    if args[:1] in (["verify"], ["convert"]) or "--help" in args or "--config-dir" in args:
        pytest.skip("not a recipe")
    if args[:1] == ["plan"]:
        args = args[1:]
    if missing_launcher(args):
        pytest.skip(missing_launcher(args))
    jobs = _job_configs(args, monkeypatch, tmp_path)
    assert jobs
    for pair, cfg in jobs:
        assert recipe_problems(cfg) == [], (line, pair)


TWINS = [(n, args) for n, args in COMMANDS if tiny_twin(args) is not None]


@pytest.mark.parametrize("line, args", TWINS, ids=[f"line{n}" for n, _ in TWINS])
def test_every_readme_commands_tiny_twin_plans(line, args, monkeypatch, tmp_path):
    """What a tiny twin of each command would forge is planned without a refusal (no weights read)."""
    from vedforge.pipeline.plan import build_plan

    twin = tiny_twin(args)
    if "--help" in twin:
        pytest.skip("--help forges nothing; run in the slow test")
    if _needs_torch(twin) and not HAS_TORCH:
        pytest.skip("needs the torch extra")
    for number, (pair, cfg) in enumerate(_job_configs(twin, monkeypatch, tmp_path)):
        cfg.output.dir = str(tmp_path / f"out{number}")
        plan = build_plan(cfg)
        assert plan.outcome == "forge", (line, pair)


@pytest.mark.slow
@pytest.mark.parametrize("line, args", TWINS, ids=[f"line{n}" for n, _ in TWINS])
def test_every_readme_commands_tiny_twin_runs(line, args, tmp_path):
    from tests_support import run_cli

    twin = tiny_twin(args)
    if _needs_torch(twin) and not HAS_TORCH:
        pytest.skip("needs the torch extra")
    multirun, _ = _split(twin)
    if "--help" not in twin and "--cfg" not in twin:
        twin = [*twin, f"hydra.sweep.dir={tmp_path / 'sweep'}" if multirun else f"output.dir={tmp_path / 'out'}"]
    result = run_cli(*twin, cwd=tmp_path)
    assert result.returncode == 0, (line, twin, result.stderr[-3000:])
    if multirun:
        summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())
        assert summary["rows"] and all(row["status"] == "forged" for row in summary["rows"])
    elif "--help" not in twin and "--cfg" not in twin:
        assert (tmp_path / "out" / "vedforge_manifest.json").is_file()


# --- what the README says about the recipes and the keys ---------------------------------------


def _tracks_a_branch(group: str, option: str, revision=None) -> bool:
    """True when a hub checkpoint of a group option (at ``revision``, else the option's own) is not pinned."""
    import yaml

    from vedforge.core.resources import config_dir

    node = yaml.safe_load((config_dir() / group / f"{option}.yaml").read_text())
    if str(node.get("name_or_path", "")).startswith("builtin:"):
        return False
    return not re.fullmatch(r"[0-9a-f]{40}", str(revision or node.get("revision") or ""))


def _unpinned(name: str) -> list[str]:
    """The parts of a checked-in recipe whose hub checkpoint tracks a branch, not a commit."""
    import yaml

    recipe = yaml.safe_load((recipes_dir() / f"{name}.yaml").read_text())
    swept = (recipe.get("hydra") or {}).get("sweeper", {}).get("params", {})
    cfg = compose_recipe([f"recipe={name}"])
    unpinned = []
    for role in ("encoder", "decoder"):
        if role in swept:  # each job's option, with that option's own revision
            options = str(swept[role]).split(",")
            if any(_tracks_a_branch(role, option.strip()) for option in options):
                unpinned.append(role)
        elif not cfg[role].name_or_path.startswith("builtin:") and not re.fullmatch(
                r"[0-9a-f]{40}", str(cfg[role].revision or "")):
            unpinned.append(role)
    return unpinned


def test_the_readme_names_every_recipe_that_tracks_a_branch():
    paragraph = re.search(r"- \*\*Recipes\.\*\* A checked-in recipe.*?(?=\n- |\n\n)", README, re.S).group(0)
    for name in group_options("recipe"):
        if _unpinned(name):
            assert f"`{name}`" in paragraph, f"{name} tracks a branch but the Recipes paragraph does not say so"
        elif name not in _OFFLINE_RECIPES:
            assert f"`{name}`" not in paragraph.split("The others")[1], f"{name} is pinned"


def test_the_readme_lists_every_top_level_key():
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(compose_recipe(), resolve=False)
    groups = ("encoder", "decoder", "token_policy", "backend", "architecture")
    keys = [f"{top}.{key}" if key is not None else top
            for top, node in cfg.items() if top not in groups
            for key in (node if isinstance(node, dict) else [None])]
    listed = README.split("Top-level keys:", 1)[1].split("\n\n", 1)[0]
    # prefix.* have their own table, in the LLaVA section.
    missing = [key for key in keys if f"`{key}`" not in (README if key.startswith("prefix.") else listed)]
    assert missing == []


def test_every_path_the_readme_names_exists():
    named = set(re.findall(r"`((?:tests|vedforge|benchmarks|scripts|recipes|conf|hydra_plugins)/[^`\s]*)`", README))
    missing = [path for path in sorted(named) if not list(ROOT.glob(path.replace("<name>", "*").rstrip("/")))]
    assert missing == []


# --- the messages ------------------------------------------------------------------------------


def troubleshooting_rows() -> list[tuple[str, str, str]]:
    """(case, command-line overrides, message) of the README's troubleshooting table."""
    table = README.split("| case | command-line overrides | message | exit |", 1)[1].split("\n\n", 1)[0]
    rows = []
    for line in table.strip().splitlines()[1:]:
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        assert len(cells) == 4, line
        rows.append((cells[0], cells[1], cells[2]))
    return rows


ROWS = troubleshooting_rows()


def _normal(text: str) -> str:
    return " ".join(text.split())


def _segments(message: str) -> list[str]:
    """The parts of a quoted message between the README's '…' (a shortened path or an omitted
    end); a part that starts inside a shortened path starts after it."""
    segments = []
    for part in message.split("…"):
        part = re.sub(r"^/[^\s')]*", "", part).strip()
        if part:
            segments.append(_normal(part))
    return segments


def _assert_quoted(message: str, printed: str, case: str) -> None:
    printed = _normal(printed)
    position = 0
    for segment in _segments(message):
        found = printed.find(segment, position)
        assert found >= 0, f"{case}: the README quotes {segment!r}, the program prints {printed!r}"
        position = found + len(segment)


_HOLE = None


def _source_templates() -> list[list[Optional[str]]]:
    """Every string the package can print, as literal text and holes (f-string fields, joined values)."""
    templates = []

    def pieces(node) -> Optional[list]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return [node.value]
        if isinstance(node, ast.JoinedStr):
            return [v.value if isinstance(v, ast.Constant) else _HOLE for v in node.values]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = pieces(node.left), pieces(node.right)
            if left is None and right is None:
                return None
            return (left or [_HOLE]) + (right or [_HOLE])
        return None

    for path in [*(ROOT / "vedforge").rglob("*.py"), *(ROOT / "hydra_plugins").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Constant, ast.JoinedStr, ast.BinOp)):
                found = pieces(node)
                if found and any(p for p in found if p):
                    templates.append(found)
    return templates


def _literal_coverage(segment: str, template: list[Optional[str]]) -> int:
    """The most characters of ``segment`` that ``template``'s literal text can account for, when
    its holes take any text and the segment may start and end anywhere in a printed message."""
    tokens: list[Optional[str]] = [_HOLE]
    for piece in template:
        if piece is _HOLE:
            tokens.append(_HOLE)
        else:
            tokens.extend(_normal(f"\0{piece}\0").replace("\0", ""))
    tokens.append(_HOLE)
    states = {p: 0 for p in range(len(tokens) + 1)}
    for char in segment:
        following: dict[int, int] = {}
        for position, count in states.items():
            if position == len(tokens):
                continue
            token = tokens[position]
            if token is _HOLE:
                for target in (position, position + 1):  # the hole takes this character
                    following[target] = max(following.get(target, -1), count)
            elif token == char:
                following[position + 1] = max(following.get(position + 1, -1), count + 1)
            # A hole may also be empty: from it, the next literal can take the character.
            if token is _HOLE and position + 1 < len(tokens) and tokens[position + 1] == char:
                following[position + 2] = max(following.get(position + 2, -1), count + 1)
        states = following
        if not states:
            return 0
    return max(states.values())


def _assert_in_source(message: str, case: str, templates) -> None:
    texts = [_normal("\0".join(p or "" for p in t)) for t in templates]
    for segment in _segments(message):
        if len(segment) < 25:
            continue  # too short to tell a value from the text around it
        grams = {segment[i:i + 16] for i in range(0, len(segment) - 15, 8)}
        candidates = [t for t, text in zip(templates, texts) if any(g in text for g in grams)]
        best = max((_literal_coverage(segment, t) for t in candidates), default=0)
        assert best >= 0.5 * len(segment), f"{case}: no message in the source reads {segment!r}"


def _fixture(tmp: Path, name: str) -> Path:
    """The input a row's ``…/NAME`` stands for, as the README's cases make it."""
    import shutil

    from vedforge.core.resources import assets_dir

    path = tmp / name
    if path.exists():
        return path
    if name in ("llama", "swin"):
        path.mkdir()
        (path / "config.json").write_text(json.dumps({"model_type": name}))
    elif name == "empty":
        path.mkdir()
        (path / "notes.txt").write_text("not a checkpoint")
    elif name == "a_file":
        path.write_text("x")
    elif name == "garbage_weights":
        shutil.copytree(assets_dir() / "gpt2_tiny", path)
        (path / "flax_model.msgpack").write_bytes(b"\xc1 definitely not msgpack" * 40)
    elif name == "bad_config":
        path.mkdir()
        (path / "config.json").write_text("{ not json")
    elif name == "bad_tokenizer":
        shutil.copytree(assets_dir() / "gpt2_tiny", path)
        (path / "tokenizer.json").write_text("{ this is not a tokenizer")
        for vocab in ("vocab.json", "merges.txt"):
            (path / vocab).unlink()
    return path


def _ray_refusal(address: str, monkeypatch) -> str:
    """What a sweep says when no Ray cluster answers at ``address`` (Ray's own words included)."""
    import types

    from omegaconf import OmegaConf

    from vedforge.sweeps.ray_launcher import start_or_join

    def init(**kwargs):
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to by "
                              "setting `--address` flag or `RAY_ADDRESS` environment variable.")

    fake = types.SimpleNamespace(is_initialized=lambda: False, init=init, shutdown=lambda: None)
    monkeypatch.setitem(sys.modules, "ray", fake)
    with pytest.raises(Exception) as refused:
        start_or_join(OmegaConf.create({"address": address}))
    return str(refused.value)


def _verify_report(tmp_path: Path, shard: str, capsys) -> str:
    """What ``vedforge verify`` prints for a forge whose ``shard`` changed on disk."""
    from vedforge.cli.verify_command import main as verify_main
    from vedforge.pipeline.runner import forge

    out = forge(compose_recipe(["encoder=dinov2_tiny", "decoder=roberta_tiny", "seed=11",
                                "output.max_shard_size=100KB", f"output.dir={tmp_path / 'model'}"])).output_dir
    data = bytearray((out / shard).read_bytes())
    data[-10] ^= 0xFF
    (out / shard).write_bytes(bytes(data))
    capsys.readouterr()
    assert verify_main([str(out)]) == 1
    return capsys.readouterr().out


def _printed_in_process(overrides: str, message: str, tmp_path: Path, monkeypatch, capsys) -> Optional[str]:
    """What the command prints for a row, found the way the CLI finds it but in this process
    (its checks before Hydra, composition, planning), or None when that needs a real run."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from vedforge.cli.main import _bad_group_override
    from vedforge.core.errors import VedforgeError
    from vedforge.pipeline.plan import build_plan
    from vedforge.sweeps import launchers

    args = shlex.split(overrides)
    if args[:1] == ["USE_TORCH=0"]:
        monkeypatch.setenv("USE_TORCH", "0")
        args = args[1:]
    if args[:2] == ["vedforge", "verify"] and re.search(r"\d+ of \d+ files differ", message):
        return _verify_report(tmp_path, re.search(r"flax_model-\d+-of-\d+\.msgpack", message).group(0), capsys)
    if args[:2] == ["vedforge", "verify"]:
        from vedforge.pipeline.verify import recorded_recipe

        monkeypatch.chdir(tmp_path)
        if "does not exist" not in message:
            (tmp_path / args[2]).mkdir(exist_ok=True)  # a directory, but not one vedforge wrote
        with pytest.raises(VedforgeError) as refused:
            recorded_recipe(Path(args[2]))
        return str(refused.value)
    args = [a for a in args if a != "vedforge"]
    address = re.search(r"hydra\.launcher\.ray\.init\.address=(\S+)", overrides)
    if address:
        return _ray_refusal(address.group(1), monkeypatch)
    if any(a.startswith("hydra/launcher=") for a in args):
        monkeypatch.setattr(launchers, "_installed", lambda module: False)  # "without the ray extra"
        return launchers.missing_launcher(args)
    bad = _bad_group_override(args)
    if bad:
        return bad
    if "-m" in args or any(a.startswith(("output.dir=<", "hydra")) for a in args):
        return None
    args = [re.sub(r"…/(\w+)", lambda m: str(_fixture(tmp_path, m.group(1))), a) for a in args]
    if not any(a.startswith("output.dir=") for a in args):
        args.append(f"output.dir={tmp_path / 'out'}")
    try:
        cfg = compose_recipe(args)
    except (HydraException, OmegaConfBaseException) as exc:
        # The command prints Hydra's message and the cause it gives.
        chain, cause = [], exc
        while cause is not None:
            chain.append(str(cause))
            cause = cause.__cause__
        return " ".join(chain)
    try:
        build_plan(cfg)
    except VedforgeError as exc:
        return str(exc).replace(str(tmp_path), "…")
    return None


def _quoted_message(cell: str) -> str:
    """The message of a row's message cell: the quoted part when the cell describes it in words."""
    described = re.fullmatch(r"[a-z][^`]*; `([^`]+)`", cell)
    return described.group(1) if described else cell


def _quoted_overrides(cell: str) -> str:
    return re.findall(r"`([^`]+)`", cell)[0]


@pytest.fixture(scope="module")
def source_templates():
    return _source_templates()


@pytest.mark.parametrize("case, overrides, message", ROWS, ids=[row[0] for row in ROWS])
def test_every_quoted_message_is_what_the_program_prints(case, overrides, message, tmp_path, monkeypatch, capsys,
                                                         source_templates):
    message = _quoted_message(message)
    overrides = _quoted_overrides(overrides)
    if "which is not installed" in message:
        monkeypatch.delenv("USE_TORCH", raising=False)
        monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` fails as where it is not installed
    printed = _printed_in_process(overrides, message, tmp_path, monkeypatch, capsys)
    if printed is not None:
        _assert_quoted(message, printed, case)
    else:
        _assert_in_source(message, case, source_templates)


def test_the_quoted_convert_refusal_is_the_programs(source_templates):
    errors = README.split("- **Errors** (exit 2, one paragraph", 1)[1].split("\n\n", 1)[0]
    quoted = re.findall(r'"([^"]+)"', errors)
    assert quoted
    for phrase in quoted:
        assert any(phrase in "".join(p for p in t if p) for t in source_templates), phrase
