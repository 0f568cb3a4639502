"""The cache of derivations: computed once per inputs and library versions, rewritten when unreadable."""

from __future__ import annotations

import pytest

from vedforge.core import derived_cache


def _derive(inputs, calls: list, value="tree"):
    def compute():
        calls.append(inputs)
        return {"value": value}

    return derived_cache.derived("test-kind", 1, inputs, compute, encode=lambda v: v,
                                 decode=lambda v: v if v.get("value") else (_ for _ in ()).throw(KeyError("value")))


def test_a_derivation_runs_once_per_inputs(tmp_path, monkeypatch):
    monkeypatch.setenv("VEDFORGE_CACHE", str(tmp_path))
    calls: list = []
    assert _derive({"config": 1}, calls) == {"value": "tree"}
    assert _derive({"config": 1}, calls, value="other") == {"value": "tree"}  # read back, not recomputed
    assert _derive({"config": 2}, calls, value="other") == {"value": "other"}
    assert calls == [{"config": 1}, {"config": 2}]


def test_the_key_changes_with_the_library_versions(monkeypatch):
    first = derived_cache.derivation_key("k", 1, {"a": 1})
    monkeypatch.setattr(derived_cache, "_version", lambda name: "0.0-other")
    assert derived_cache.derivation_key("k", 1, {"a": 1}) != first
    assert derived_cache.derivation_key("k", 2, {"a": 1}) != derived_cache.derivation_key("k", 1, {"a": 1})


@pytest.mark.parametrize("content", ["", "{not json", '{"kind": "test-kind"}', '{"kind": "test-kind", "value": {}}'])
def test_an_unreadable_entry_is_derived_again_and_rewritten(tmp_path, monkeypatch, content):
    monkeypatch.setenv("VEDFORGE_CACHE", str(tmp_path))
    calls: list = []
    _derive({"config": 1}, calls)
    (entry,) = (tmp_path / "derived" / "test-kind").glob("*.json")
    entry.write_text(content)
    assert _derive({"config": 1}, calls) == {"value": "tree"}
    assert len(calls) == 2
    assert _derive({"config": 1}, calls) == {"value": "tree"} and len(calls) == 2  # rewritten whole


def test_off_derives_every_time_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("VEDFORGE_CACHE", "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls: list = []
    _derive({"config": 1}, calls)
    _derive({"config": 1}, calls)
    assert len(calls) == 2 and not any(tmp_path.iterdir())


def test_a_cache_that_cannot_be_written_costs_only_the_derivation(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("VEDFORGE_CACHE", str(blocker))
    calls: list = []
    assert _derive({"config": 1}, calls) == {"value": "tree"}
    assert _derive({"config": 1}, calls) == {"value": "tree"}
    assert len(calls) == 2
