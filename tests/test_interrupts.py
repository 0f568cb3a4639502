"""A forge killed with SIGKILL mid-write leaves no artifact (or the previous one), never a partial one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Runs the real CLI, with the writer made to announce and then stall half-way through the
# weights, so the test can kill it at a known moment.
_STALLING_FORGE = textwrap.dedent(
    """
    import sys, time
    import vedforge.checkpoint_writer as writer
    real = writer._leaf_chunks
    count = 0
    def stalling(packer, leaf):
        global count
        count += 1
        yield from real(packer, leaf)
        if count == 20:
            time.sleep(1)  # let the writing thread put what it has on disk
            print("MID-WRITE", flush=True)
            time.sleep(600)
    writer._leaf_chunks = stalling
    sys.argv = ["vedforge", *sys.argv[1:]]
    from vedforge.cli import main
    main()
    """
)


def _kill_mid_write(tmp_path: Path, *overrides: str) -> None:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _STALLING_FORGE, *overrides], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if "MID-WRITE" in line:
                break
        else:
            pytest.fail("the forge ended before reaching the weights: " + proc.stderr.read())
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigkill_mid_write_leaves_no_artifact(tmp_path):
    out = tmp_path / "model"
    _kill_mid_write(tmp_path, f"output.dir={out}")
    assert not out.exists()
    partial = list(tmp_path.glob(".model.partial-*"))
    # The interrupted write is there, hidden and named as partial, with its truncated weights.
    assert len(partial) == 1 and (partial[0] / "flax_model.msgpack").is_file()
    assert not (partial[0] / "vedforge_manifest.json").exists()


def test_sigkill_during_overwrite_keeps_the_previous_artifact(tmp_path):
    out = tmp_path / "model"
    first = subprocess.run([sys.executable, "-m", "vedforge", f"output.dir={out}", "seed=1"], cwd=tmp_path,
                           env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    _kill_mid_write(tmp_path, f"output.dir={out}", "seed=2", "output.overwrite=true")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_help_and_cfg_job_import_neither_jax_nor_transformers(tmp_path):
    for args in (["--help"], ["--cfg", "job"]):
        probe = ("import sys, runpy; sys.argv = ['vedforge', *%r]\n"
                 "try:\n    runpy.run_module('vedforge', run_name='__main__')\nexcept SystemExit:\n    pass\n"
                 "print('LOADED', sorted(m for m in ('jax', 'transformers', 'flax', 'torch') if m in sys.modules))") % (args,)
        result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True)
        assert "LOADED []" in result.stdout, (args, result.stdout[-500:], result.stderr[-2000:])
