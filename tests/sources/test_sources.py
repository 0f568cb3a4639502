"""Resolving ``name_or_path``: builtins, local paths, and hub repo ids.

Hub lookups run against the real huggingface_hub code, offline, on a cache laid out in a
temporary directory exactly as huggingface_hub writes it (blobs, snapshot symlinks, refs).
Every hub test replaces ``HfApi.repo_info`` with a stub that records the call and fails
like a dead network, so a lookup that tries to go online is visible and never hangs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

# The hub fixtures are Flax checkpoints saved by transformers' Flax classes.
pytest.importorskip("flax")

import requests  # noqa: E402
from flax.serialization import msgpack_restore  # noqa: E402
from flax.traverse_util import flatten_dict  # noqa: E402
from huggingface_hub import constants as hf_constants
from huggingface_hub import scan_cache_dir
from huggingface_hub.hf_api import HfApi

from vedforge.core.errors import NotACheckpointError, SourceNotFoundError, VedforgeError
from vedforge.core.resources import assets_dir
from vedforge.sources.resolve import hub_offline, resolve_source

from conftest import compose_recipe, save_tiny_checkpoint
from tests_support import add_to_cache


def _commit(label: str) -> str:
    return hashlib.sha1(label.encode()).hexdigest()


COMMIT_MAIN = _commit("main")
COMMIT_TAG = _commit("v1.0")
COMMIT_UNREFERENCED = _commit("unreferenced")
COMMIT_ABSENT = _commit("absent")


def resolve(name_or_path: str, *, role: str = "decoder", revision=None, subfolder: str = "",
            cache_dir=None, offline: bool = True, need_weights: bool = True):
    return resolve_source(
        role, name_or_path, revision=revision, subfolder=subfolder,
        cache_dir=None if cache_dir is None else str(cache_dir), offline=offline, token=None,
        need_weights=need_weights,
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hub_sources")
    return {
        "vit": save_tiny_checkpoint("vit", "encoder", root / "vit", seed=1),
        # Same architecture, other weights: tells two revisions of one repo apart.
        "vit_v1": save_tiny_checkpoint("vit", "encoder", root / "vit_v1", seed=2),
        "gpt2": save_tiny_checkpoint("gpt2", "decoder", root / "gpt2", seed=1),
    }


@pytest.fixture
def network_calls(monkeypatch) -> list[str]:
    """Repo ids that a lookup tried to query on the hub (the query fails as if offline)."""
    calls: list[str] = []

    def repo_info(self, repo_id, *args, **kwargs):
        calls.append(repo_id)
        raise requests.exceptions.ConnectionError("no network in tests")

    monkeypatch.setattr(HfApi, "repo_info", repo_info)
    return calls


@pytest.fixture
def cache(tmp_path, monkeypatch, network_calls) -> Path:
    """An empty hub cache; the default Hugging Face locations point into tmp_path as well."""
    home = tmp_path / "hf_home"
    default_cache = home / "hub"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(default_cache))
    # huggingface_hub reads the environment once, at import.
    monkeypatch.setattr(hf_constants, "HF_HOME", str(home))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(default_cache))
    path = tmp_path / "cache"
    path.mkdir()
    return path


@pytest.fixture
def gpt2_cache(cache, saved) -> Path:
    add_to_cache(cache, "org/tiny-gpt2", COMMIT_MAIN, saved["gpt2"])
    add_to_cache(cache, "org/tiny-gpt2", COMMIT_TAG, saved["gpt2"], refs=("v1.0",))
    add_to_cache(cache, "org/tiny-gpt2", COMMIT_UNREFERENCED, saved["gpt2"], refs=())
    return cache


def _snapshot(cache: Path, repo_id: str, commit: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--")) / "snapshots" / commit


# --- hub repo ids, found in the cache -------------------------------------------------------


@pytest.mark.parametrize("symlinks", [True, False], ids=["blob-symlinks", "plain-files"])
def test_hub_repo_resolves_from_cache_offline(cache, saved, network_calls, symlinks):
    add_to_cache(cache, "org/tiny-gpt2", COMMIT_MAIN, saved["gpt2"], symlinks=symlinks)
    if symlinks:
        # The fake cache is one huggingface_hub itself recognises, not one shaped to the code under test.
        repos = {r.repo_id: r for r in scan_cache_dir(cache).repos}
        assert {rev.commit_hash for rev in repos["org/tiny-gpt2"].revisions} == {COMMIT_MAIN}
        assert repos["org/tiny-gpt2"].refs.keys() == {"main"}

    source = resolve("org/tiny-gpt2", cache_dir=cache)

    assert source.kind == "hub"
    assert source.path == _snapshot(cache, "org/tiny-gpt2", COMMIT_MAIN)
    assert source.commit == COMMIT_MAIN
    assert source.revision == "main"
    assert json.loads((source.path / "config.json").read_text())["model_type"] == "gpt2"
    assert network_calls == []


def test_tag_revision_resolves_through_its_ref(gpt2_cache, network_calls):
    source = resolve("org/tiny-gpt2", revision="v1.0", cache_dir=gpt2_cache)

    assert source.kind == "hub"
    assert source.path == _snapshot(gpt2_cache, "org/tiny-gpt2", COMMIT_TAG)
    assert (source.revision, source.commit) == ("v1.0", COMMIT_TAG)
    assert network_calls == []


def test_full_commit_revision_resolves_without_a_ref(gpt2_cache, network_calls):
    source = resolve("org/tiny-gpt2", revision=COMMIT_UNREFERENCED, cache_dir=gpt2_cache)

    assert source.path == _snapshot(gpt2_cache, "org/tiny-gpt2", COMMIT_UNREFERENCED)
    assert (source.revision, source.commit) == (COMMIT_UNREFERENCED, COMMIT_UNREFERENCED)
    assert network_calls == []


def test_subfolder_inside_a_hub_snapshot(cache, saved, network_calls):
    snapshot = add_to_cache(cache, "org/nested", COMMIT_MAIN, saved["gpt2"], subfolder="sub")
    (snapshot / "README.md").write_text("checkpoint lives in sub/\n")

    source = resolve("org/nested", subfolder="sub", cache_dir=cache)

    assert source.kind == "hub"
    assert source.path == snapshot / "sub"
    assert source.commit == COMMIT_MAIN
    assert (source.path / "config.json").is_file()

    # Without the subfolder the snapshot root is not a checkpoint, and the message shows why.
    with pytest.raises(NotACheckpointError) as excinfo:
        resolve("org/nested", cache_dir=cache)
    assert str(snapshot) in str(excinfo.value)
    assert "sub" in str(excinfo.value) and "README.md" in str(excinfo.value)
    assert network_calls == []


# --- HF_HUB_OFFLINE -------------------------------------------------------------------------


@pytest.mark.parametrize("env_offline", [False, True])
@pytest.mark.parametrize("requested", [False, True])
def test_hub_offline_combines_recipe_and_environment(monkeypatch, requested, env_offline):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", env_offline)
    assert hub_offline(requested) is (requested or env_offline)


def test_hf_hub_offline_forces_cache_lookups_when_recipe_allows_network(gpt2_cache, monkeypatch, network_calls):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)

    source = resolve("org/tiny-gpt2", revision="v1.0", cache_dir=gpt2_cache, offline=False)
    assert (source.kind, source.commit) == ("hub", COMMIT_TAG)

    with pytest.raises(SourceNotFoundError) as excinfo:
        resolve("org/absent", cache_dir=gpt2_cache, offline=False)
    assert "offline mode is on" in str(excinfo.value)
    # local_files_only was passed down: the hub was never queried.
    assert network_calls == []


def test_without_hf_hub_offline_the_hub_is_queried(gpt2_cache, monkeypatch, network_calls):
    # The counterpart of the test above: the same lookups, online, do reach for the network.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)

    # Unreachable hub: huggingface_hub falls back to the cached snapshot.
    source = resolve("org/tiny-gpt2", cache_dir=gpt2_cache, offline=False)
    assert source.commit == COMMIT_MAIN
    # One query per file-pattern set (metadata, then weights).
    assert network_calls and set(network_calls) == {"org/tiny-gpt2"}

    with pytest.raises(SourceNotFoundError) as excinfo:
        resolve("org/absent", cache_dir=gpt2_cache, offline=False)
    message = str(excinfo.value)
    assert "'org/absent'" in message and "could not be fetched" in message
    assert "offline mode is on" not in message


# --- hub repo ids, not in the cache ---------------------------------------------------------


def test_repo_missing_from_cache_while_offline(gpt2_cache, network_calls):
    with pytest.raises(SourceNotFoundError) as excinfo:
        resolve("org/not-cached", role="encoder", cache_dir=gpt2_cache)
    message = str(excinfo.value)
    assert "'org/not-cached'" in message
    assert "offline" in message
    assert str(gpt2_cache) in message
    assert "local checkpoint directory" in message
    assert "encoder.name_or_path" in message
    assert network_calls == []


@pytest.mark.parametrize("revision", ["v9.9", COMMIT_ABSENT])
def test_revision_missing_from_cache(gpt2_cache, network_calls, revision):
    with pytest.raises(SourceNotFoundError) as excinfo:
        resolve("org/tiny-gpt2", revision=revision, cache_dir=gpt2_cache)
    message = str(excinfo.value)
    assert "'org/tiny-gpt2'" in message
    assert revision in message
    assert network_calls == []


def test_valid_looking_id_rejected_by_hub_validation(cache, network_calls):
    # Passes vedforge's own pattern but not huggingface_hub's repo id rules ("--" is reserved).
    with pytest.raises(SourceNotFoundError) as excinfo:
        resolve("org/bad--name", cache_dir=cache)
    assert "'org/bad--name'" in str(excinfo.value)
    assert "valid hub repo id" in str(excinfo.value)
    assert network_calls == []


# --- local paths ----------------------------------------------------------------------------


@pytest.fixture
def no_hub(monkeypatch, tmp_path) -> None:
    """Fail the test if the hub download code is reached at all; run from an empty directory."""
    import huggingface_hub

    def snapshot_download(*args, **kwargs):
        raise AssertionError(f"unexpected hub lookup: {args} {kwargs}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.mark.parametrize("name", ["./nope/model", "/definitely/missing", "a/b/c", "~/no-such-vedforge-dir"])
def test_missing_path_is_not_looked_up_on_the_hub(no_hub, name):
    with pytest.raises(SourceNotFoundError) as excinfo:
        resolve(name)
    message = str(excinfo.value)
    assert f"'{name}' does not exist" in message
    assert "builtin:gpt2_tiny" in message


def test_local_checkpoint_directory(no_hub, saved):
    source = resolve(str(saved["gpt2"]), revision="v1.0")

    assert source.kind == "local"
    assert source.path == saved["gpt2"].resolve()
    assert (source.revision, source.commit) == (None, None)


def test_directory_without_config_lists_its_contents(no_hub, tmp_path):
    folder = tmp_path / "not_a_checkpoint"
    folder.mkdir()
    (folder / "flax_model.msgpack").write_bytes(b"\x80")
    (folder / "notes.txt").write_text("hello")

    with pytest.raises(NotACheckpointError) as excinfo:
        resolve(str(folder))
    message = str(excinfo.value)
    assert str(folder.resolve()) in message
    assert "no config.json" in message
    assert "flax_model.msgpack" in message and "notes.txt" in message


def test_empty_directory_says_it_holds_nothing(no_hub, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(NotACheckpointError, match="holds: nothing"):
        resolve(str(folder))


def test_regular_file_is_not_a_checkpoint(no_hub, tmp_path):
    file = tmp_path / "config.json"
    file.write_text("{}")
    with pytest.raises(VedforgeError) as excinfo:
        resolve(str(file))
    assert str(file.resolve()) in str(excinfo.value)


# --- builtins -------------------------------------------------------------------------------


def test_builtin_resolves_to_embedded_assets(no_hub):
    source = resolve("builtin:gpt2_tiny")
    assert source.kind == "builtin"
    assert source.path == assets_dir() / "gpt2_tiny"
    assert (source.path / "config.json").is_file()
    assert source.commit is None


def test_unknown_builtin_lists_the_available_ones(no_hub):
    with pytest.raises(SourceNotFoundError) as excinfo:
        resolve("builtin:nope")
    message = str(excinfo.value)
    assert "'nope'" in message
    embedded = [p.name for p in assets_dir().iterdir() if (p / "config.json").is_file()]
    assert {"gpt2_tiny", "vit_tiny"} <= set(embedded)
    for name in embedded:
        assert f"builtin:{name}" in message


def test_builtin_name_cannot_escape_the_embedded_assets(no_hub, saved):
    # saved["gpt2"] is a complete checkpoint, but not an embedded one.
    with pytest.raises(SourceNotFoundError):
        resolve(f"builtin:{saved['gpt2']}")


# --- a whole forge from the hub cache -------------------------------------------------------


def _leaf(params: dict, suffix: tuple[str, ...]) -> np.ndarray:
    matches = [v for k, v in flatten_dict(params).items() if k[-len(suffix):] == suffix]
    assert len(matches) == 1, f"{suffix} found {len(matches)} times"
    return np.asarray(matches[0])


def test_forge_from_hub_cache_records_revisions_and_commits(cache, saved, tmp_path, network_calls):
    from vedforge.pipeline.runner import forge

    add_to_cache(cache, "org/tiny-vit", COMMIT_MAIN, saved["vit"])
    add_to_cache(cache, "org/tiny-vit", COMMIT_TAG, saved["vit_v1"], refs=("v1.0",))
    decoder_commit = _commit("gpt2 main")
    add_to_cache(cache, "org/tiny-gpt2", decoder_commit, saved["gpt2"])
    cfg = compose_recipe(
        [
            "encoder.name_or_path=org/tiny-vit",
            "encoder.weights=pretrained",
            "encoder.revision=v1.0",
            "decoder.name_or_path=org/tiny-gpt2",
            "decoder.weights=pretrained",
            f"hub.cache_dir={cache}",
            "hub.offline=true",
            f"output.dir={tmp_path / 'out'}",
        ]
    )

    result = forge(cfg)

    inputs = result.manifest["inputs"]
    assert inputs["encoder"] == {
        "name_or_path": "org/tiny-vit", "kind": "hub", "revision": "v1.0", "commit": COMMIT_TAG,
        "model_type": "vit", "weights": "pretrained",
    }
    assert inputs["decoder"] == {
        "name_or_path": "org/tiny-gpt2", "kind": "hub", "revision": "main", "commit": decoder_commit,
        "model_type": "gpt2", "weights": "pretrained",
    }
    on_disk = json.loads((result.output_dir / "vedforge_manifest.json").read_text())
    assert on_disk["inputs"] == inputs

    # The encoder weights are those of the tagged snapshot, not of main.
    kernel = ("embeddings", "patch_embeddings", "projection", "kernel")
    forged = msgpack_restore((result.output_dir / "flax_model.msgpack").read_bytes())
    tagged = msgpack_restore((saved["vit_v1"] / "flax_model.msgpack").read_bytes())
    main = msgpack_restore((saved["vit"] / "flax_model.msgpack").read_bytes())
    np.testing.assert_array_equal(_leaf(forged["encoder"], kernel), _leaf(tagged, kernel))
    assert not np.array_equal(_leaf(tagged, kernel), _leaf(main, kernel))
    assert network_calls == []


def test_siglip_option_forges_the_vision_tower_of_its_hub_repo(cache, tmp_path, network_calls):
    pytest.importorskip("torch")
    from safetensors.numpy import load_file

    from tests_support import save_torch_siglip_checkpoint
    from vedforge.pipeline.runner import forge

    repo = "google/siglip-base-patch16-224"
    option = compose_recipe(["encoder=siglip"]).encoder
    assert option.name_or_path == repo and option.weights.name == "pretrained" and option.revision is None
    # A two-tower SigLIP checkpoint in the cache under the option's repo id stands in for the real one.
    checkpoint = save_torch_siglip_checkpoint(tmp_path / "siglip", seed=5)
    add_to_cache(cache, repo, COMMIT_MAIN, checkpoint)
    result = forge(compose_recipe(["encoder=siglip", "decoder=gpt2_tiny", "backend=pt", f"hub.cache_dir={cache}",
                                   "hub.offline=true", f"output.dir={tmp_path / 'out'}"]))

    assert result.manifest["inputs"]["encoder"] == {
        "name_or_path": repo, "kind": "hub", "revision": "main", "commit": COMMIT_MAIN,
        "model_type": "siglip", "weights": "pretrained",
    }
    forged = load_file(result.output_dir / "model.safetensors")
    source = load_file(checkpoint / "model.safetensors")
    name = "vision_model.embeddings.patch_embedding.weight"
    np.testing.assert_array_equal(forged[f"encoder.{name}"], source[name])
    assert network_calls == []
