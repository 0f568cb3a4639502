"""Sweeps on Ray (hydra/launcher=ray): on a cluster the launcher starts, and on a running head.

Ray binds to the machine's network interfaces, so every Ray process of these tests runs in
network, PID and mount namespaces of its own (``unshare``, as root) in which the only interface
is loopback: nothing they send can leave the machine, ``ray stop`` sees only their processes,
and the kernel ends them all when the namespace's first process exits, whatever happens. HOME
and Ray's temp directory are the test's own too, so no state from or for another Ray run is
shared. Each test writes one shell script and runs it in one namespace, so a head the test
starts and the sweeps that join it share the network.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from vedforge.core.errors import EXIT_USER_ERROR
from vedforge.core.resources import assets_dir

_NAMESPACE = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child", "--"]
# Ray's defaults would look for a dashboard, report usage, and pick the machine's address.
_RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0"}
_HEAD = ("--head --node-ip-address=127.0.0.1 --port=6379 --ray-client-server-port=10001 --num-cpus=2 "
         "--include-dashboard=false --disable-usage-stats")
# A cluster the launcher starts: on loopback, without the dashboard.
_LOCAL_INIT = ("hydra.launcher.ray.init.num_cpus=2", "+hydra.launcher.ray.init._node_ip_address=127.0.0.1",
               "+hydra.launcher.ray.init.include_dashboard=false")


@functools.cache
def _why_no_namespace() -> str | None:
    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None:
        return "Ray is not installed: pip install 'vedforge[ray]'"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs unshare and ip (util-linux, iproute2) to give Ray a loopback-only network namespace"
    if os.geteuid() != 0:
        return "needs root to make a loopback-only network namespace for Ray (unshare --net)"
    probe = subprocess.run([*_NAMESPACE, "sh", "-c", "ip link set lo up"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        return f"cannot make a network namespace here: {probe.stderr.strip() or probe.returncode}"
    return None


@pytest.fixture
def namespace():
    reason = _why_no_namespace()
    if reason:
        pytest.skip(reason)


@dataclass
class Step:
    """One command line run in the namespace, and the sweep as it left it."""

    result: subprocess.CompletedProcess
    summary: dict | None
    mtimes: dict[str, int]  # pair -> mtime of its weights file, in ns
    ray_log: str = ""  # the head's Ray Client server logs, for failure messages

    def failure(self) -> str:
        return self.result.stderr[-3000:] + self.ray_log[-3000:]


def _run_in_namespace(tmp_path: Path, steps: list[list[str]], *, head: bool = False,
                      head_has_own_disk: bool = False) -> list[Step]:
    """Run each ``vedforge`` command line of ``steps`` in turn (cwd ``tmp_path``, sweeping into
    ``tmp_path/sweep``) in one fresh loopback-only namespace, after starting a Ray head there
    when ``head``; after each, keep the summary and the weights files' times.

    ``head_has_own_disk``: the head and its workers see a disk of their own at ``tmp_path/sweep``
    (a tmpfs in a mount namespace of theirs), as a node that does not share the sweep directory."""
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    # Ray's socket paths must stay under the 107-byte limit: a short directory of its own.
    ray_tmp = Path(tempfile.mkdtemp(prefix="vfray-", dir="/tmp"))
    home = tmp_path / "home"
    home.mkdir()
    lines = ["set -u", "ip link set lo up || exit 97",
             f"trap '{shlex.quote(ray_cli)} stop --force >/dev/null 2>&1' EXIT"]
    if head:
        # Started from a directory of its own: its workers start there, not where the sweep runs.
        (tmp_path / "head").mkdir()
        start = f"cd head && {shlex.quote(ray_cli)} start {_HEAD}"
        if head_has_own_disk:
            (tmp_path / "sweep").mkdir()
            start = f"unshare --mount sh -c {shlex.quote('mount -t tmpfs vedforge-node-disk sweep && ' + start)}"
        lines.append(f"({start}) > head.out 2>&1 || exit 98")
    for i, args in enumerate(steps):
        command = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "vedforge", *args])
        lines.append(f"{command} > step{i}.out 2> step{i}.err; echo $? > step{i}.rc")
        lines.append(f"cp sweep/summary.json step{i}.summary.json 2>/dev/null")
        lines.append(f"find sweep -name flax_model.msgpack -printf '%h %T@\\n' > step{i}.mtimes")
    # Ray's own logs (the Ray Client server's above all) explain a failed step; keep them.
    lines.append(f"cp -r {shlex.quote(str(ray_tmp))}/ray/session_latest/logs ray_logs 2>/dev/null")
    script = tmp_path / "ray_steps.sh"
    script.write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("VEDFORGE_DEBUG", "RAY_ADDRESS")}
    env.update(_RAY_ENV, HOME=str(home), RAY_TMPDIR=str(ray_tmp), HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
    try:
        done = subprocess.run([*_NAMESPACE, "bash", str(script)], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=900)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    if done.returncode in (97, 98):
        head_log = (tmp_path / "head.out").read_text() if (tmp_path / "head.out").exists() else ""
        pytest.fail(f"the namespace or the Ray head did not come up: {done.stderr}{head_log}")
    def read(name: str) -> str:
        return (tmp_path / name).read_text()

    ray_log = "".join(f"\n--- {log.name}\n{log.read_text(errors='replace')}"
                      for log in sorted((tmp_path / "ray_logs").glob("ray_client_server*"))
                      if log.suffix in (".err", ".out"))
    results = []
    for i, args in enumerate(steps):
        summary = tmp_path / f"step{i}.summary.json"
        mtimes = {}
        for line in read(f"step{i}.mtimes").splitlines():
            directory, _, seconds = line.rpartition(" ")
            mtimes[Path(directory).name] = round(float(seconds) * 1e9)
        results.append(Step(subprocess.CompletedProcess(args, int(read(f"step{i}.rc")), read(f"step{i}.out"),
                                                        read(f"step{i}.err")),
                            json.loads(summary.read_text()) if summary.exists() else None, mtimes, ray_log))
    return results


def _check_forged(sweep: Path, step: Step, expected_pairs: set[str]) -> None:
    assert step.result.returncode == 0, step.failure()
    rows = {row["pair"]: row for row in step.summary["rows"]}
    assert set(rows) == expected_pairs
    assert step.summary["forged"] == len(expected_pairs) and not step.summary["failed"]
    for pair in expected_pairs:
        assert (sweep / pair / "vedforge_manifest.json").is_file() and (sweep / pair / "flax_model.msgpack").is_file()
        assert rows[pair]["output_dir"] == str(sweep / pair)
    assert set(step.mtimes) == expected_pairs
    assert set((sweep / "summary.md").read_text().split()) >= expected_pairs


def _check_skipped(step: Step, first: Step) -> None:
    assert step.result.returncode == 0, step.failure()
    assert {row["pair"] for row in step.summary["rows"]} == set(first.mtimes)
    assert step.summary["skipped"] == len(first.mtimes) and step.summary["forged"] == 0
    assert step.mtimes == first.mtimes


def test_hydra_launcher_ray_is_vedforges_launcher_and_passes_only_what_is_set():
    if importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None:
        pytest.skip("Ray is not installed: pip install 'vedforge[ray]'")
    from hydra import compose, initialize_config_dir

    from vedforge.sweeps.ray_launcher import init_arguments
    from vedforge.core.resources import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=ray", "hydra.launcher.ray.init.address=auto"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.vedforge_ray_launcher.ray_launcher.RayLauncher"
    # hydra-ray-launcher 1.2.2 would add object_store_memory here, which Ray refuses on a running cluster.
    assert init_arguments(launcher.ray.init) == {"address": "auto"}


@pytest.mark.slow
def test_sweep_on_a_cluster_the_launcher_starts(namespace, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "encoder=vit_tiny,beit_tiny", "decoder=gpt2_tiny", "+encoder.config_overrides.image_size=32",
            "hydra/launcher=ray", *_LOCAL_INIT, f"hydra.sweep.dir={sweep}"]
    first, again = _run_in_namespace(tmp_path, [args, args])
    _check_forged(sweep, first, {"vit_tiny__gpt2_tiny__encoder.config_overrides.image_size=32",
                                 "beit_tiny__gpt2_tiny__encoder.config_overrides.image_size=32"})
    _check_skipped(again, first)


@pytest.mark.slow
def test_sweep_on_a_running_head_by_auto_by_address_and_by_ray_client(namespace, tmp_path):
    # A relative sweep directory and a relative checkpoint path: the head's workers start in
    # head/, so both only work when jobs run where the sweep was started.
    shutil.copytree(assets_dir() / "gpt2_tiny", tmp_path / "ckpt")
    common = ["-m", "encoder=vit_tiny,beit_tiny", "decoder.name_or_path=ckpt", "hydra/launcher=ray",
              "hydra.sweep.dir=sweep"]
    first, by_address, by_client = _run_in_namespace(tmp_path, [
        [*common, "hydra.launcher.ray.init.address=auto"],
        [*common, "hydra.launcher.ray.init.address=127.0.0.1:6379"],
        [*common, "hydra.launcher.ray.init.address=ray://127.0.0.1:10001"],
    ], head=True)
    assert "object_store_memory" not in first.result.stderr
    _check_forged(tmp_path / "sweep", first, {"vit_tiny__gpt2_tiny__decoder.name_or_path=ckpt",
                                              "beit_tiny__gpt2_tiny__decoder.name_or_path=ckpt"})
    assert not any((tmp_path / "head").iterdir()), "a job wrote into the head's directory"
    _check_skipped(by_address, first)
    _check_skipped(by_client, first)


@pytest.mark.slow
def test_pairs_written_where_the_sweep_cannot_see_are_failed_not_lost(namespace, tmp_path):
    (step,) = _run_in_namespace(tmp_path, [["-m", "encoder=vit_tiny,beit_tiny", "hydra/launcher=ray",
                                            "hydra.launcher.ray.init.address=auto", "hydra.sweep.dir=sweep"]],
                                head=True, head_has_own_disk=True)
    assert step.result.returncode == EXIT_USER_ERROR, step.result.stderr[-3000:]
    assert {row["pair"] for row in step.summary["rows"]} == {"vit_tiny__gpt2_tiny", "beit_tiny__gpt2_tiny"}
    assert sorted(step.summary["failed"]) == ["beit_tiny__gpt2_tiny", "vit_tiny__gpt2_tiny"]
    for row in step.summary["rows"]:
        assert row["status"] == "failed" and "did not reach" in row["error"] and "every node mounts" in row["error"]
    assert not step.mtimes  # the artifacts are on the node's own disk, not here


def test_no_running_cluster_is_one_clear_error(namespace, tmp_path):
    (step,) = _run_in_namespace(tmp_path, [["-m", "encoder=vit_tiny", "hydra/launcher=ray",
                                              "hydra.launcher.ray.init.address=auto", "hydra.sweep.dir=sweep"]])
    result = step.result
    assert result.returncode == EXIT_USER_ERROR
    message = " ".join(result.stderr.split())
    assert "No Ray cluster answers at hydra.launcher.ray.init.address=auto" in message and "ray start --head" in message
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "sweep").exists()  # nothing ran, nothing is left behind


class _FlakyClientServer:
    """``ray.init`` as a Ray Client head answers whose per-session server fails ``failures`` times."""

    def __init__(self, failures: int):
        self.failures, self.calls, self.shutdowns = failures, [], 0

    def init(self, **kwargs):
        self.calls.append(kwargs)
        if len(self.calls) <= self.failures:
            raise ConnectionError("Initialization failure from server:\nRuntimeError: Starting Ray client server "
                                  "failed. See ray_client_server_23000.err for detailed logs.")

    def shutdown(self):
        self.shutdowns += 1


@pytest.mark.parametrize("failures", [1, 2])
def test_a_ray_client_server_that_fails_to_start_is_tried_once_more(monkeypatch, failures):
    ray = pytest.importorskip("ray")
    from vedforge.sweeps import ray_launcher
    from vedforge.sweeps.ray_launcher import RayClusterError, start_or_join

    fake = _FlakyClientServer(failures)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake.init)
    monkeypatch.setattr(ray, "shutdown", fake.shutdown)
    monkeypatch.setattr(ray_launcher.time, "sleep", lambda seconds: None)
    init = OmegaConf.create({"address": "ray://head:10001"})
    if failures == 1:
        start_or_join(init)
    else:
        with pytest.raises(RayClusterError) as raised:
            start_or_join(init)
        message = " ".join(str(raised.value).split())
        assert "hydra.launcher.ray.init.address=ray://head:10001 answers but could not start" in message
        assert "ray_client_server_*.err" in message and "host:6379" in message
    assert fake.calls == [{"address": "ray://head:10001"}] * 2 and fake.shutdowns == 1


def test_other_connection_failures_are_not_retried(monkeypatch):
    ray = pytest.importorskip("ray")
    from vedforge.sweeps.ray_launcher import RayClusterError, start_or_join

    calls = []

    def refuse(**kwargs):
        calls.append(kwargs)
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(RayClusterError, match="No Ray cluster answers at hydra.launcher.ray.init.address=auto"):
        start_or_join(OmegaConf.create({"address": "auto"}))
    assert len(calls) == 1
