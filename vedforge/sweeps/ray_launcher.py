"""How ``hydra/launcher=ray`` runs a sweep (the launcher class: hydra_plugins/vedforge_ray_launcher).

hydra-ray-launcher 1.2.2 is used as it is, with four changes for sweeps on a cluster that
already runs (``hydra.launcher.ray.init.address=auto``, ``host:port`` or ``ray://host:port``):

- ``ray.init`` gets only what the configuration sets. 1.2.2 always adds ``object_store_memory``,
  which Ray refuses when joining a cluster; the fix made upstream after 1.2.2 drops it the same way.
- The sweep directory is made absolute where the sweep starts. Workers of a running cluster
  start in the directory ``ray start`` ran in, so a relative ``hydra.sweep.dir`` would land
  there, not where the summary is read.
- Each job runs in the directory the sweep was started from when that directory exists on the
  worker's machine, as SLURM jobs do, so relative checkpoint paths mean the same thing everywhere.
- Ray Client's head starts a server process for each session; when that process fails to
  start, joining is tried once more before the sweep gives up, with the head's log files named.
- A pair whose worker died, or whose record did not reach the sweep directory (a worker on a
  machine that does not share it), is recorded as failed with the reason; the other pairs and the
  summary are kept.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf, open_dict

from vedforge.core.errors import VedforgeError

log = logging.getLogger(__name__)


class RayClusterError(VedforgeError, CompactHydraException):
    """Ray cannot start or join the cluster the sweep names.

    Also a CompactHydraException: raised inside Hydra's launch, it is printed as its message
    alone, and the CLI turns Hydra's exit into exit 2.
    """


def init_arguments(init_cfg: Optional[DictConfig]) -> dict[str, Any]:
    """The keyword arguments for ``ray.init``: the configured ones that are set, nothing added."""
    if not init_cfg:
        return {}
    return {key: value for key, value in OmegaConf.to_container(init_cfg, resolve=True).items() if value is not None}


def start_or_join(init_cfg: Optional[DictConfig]) -> None:
    """Start a Ray cluster for the sweep, or join the one ``init.address`` names."""
    import ray

    if ray.is_initialized():
        return
    kwargs = init_arguments(init_cfg)
    address = kwargs.get("address")
    log.info("Ray: %s", f"joining the cluster at {address}" if address else "starting a cluster on this machine")
    try:
        _init_retrying_client_server(ray, kwargs)
    except ConnectionError as exc:
        named = address or os.environ.get("RAY_ADDRESS")
        if not named:
            raise
        setting = f"{'hydra.launcher.ray.init.address' if address else 'RAY_ADDRESS'}={named}"
        if _CLIENT_SERVER_FAILED in str(exc):
            raise RayClusterError(
                f"The Ray Client server at {setting} answers but could not start a server process for this "
                f"sweep, twice ({exc}). Its reason is in ray_client_server_*.err on the head (by default "
                "under /tmp/ray/session_latest/logs); join by the cluster's own address (host:6379) from a "
                "machine of the cluster to bypass Ray Client."
            ) from exc
        raise RayClusterError(
            f"No Ray cluster answers at {setting} "
            f"({exc}). Start one with `ray start --head` (or name a running head: host:6379, or "
            "ray://host:10001 for Ray Client), or leave the address unset to start a cluster on this machine "
            "for the sweep."
        ) from exc
    except ValueError as exc:
        if not address:
            raise
        raise RayClusterError(
            f"Ray refuses the settings given for the cluster at {address}: {exc} The resources of a running "
            "cluster are set by `ray start`; remove those keys from hydra.launcher.ray.init."
        ) from exc


# What Ray Client's proxy answers when the per-session server process it spawns exits at start.
_CLIENT_SERVER_FAILED = "Starting Ray client server failed"


def _init_retrying_client_server(ray: Any, kwargs: dict[str, Any]) -> None:
    """``ray.init(**kwargs)``, tried a second time when Ray Client's per-session server failed to
    start: the proxy gives the next attempt a new process and port, and a failure there is often
    passing (a slow or contended head)."""
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        if _CLIENT_SERVER_FAILED not in str(exc):
            raise
        log.warning("Ray Client: the head could not start a server process for this session; trying once more")
        ray.shutdown()
        time.sleep(2.0)
        ray.init(**kwargs)


def _run_job_from(cwd: str, *args: Any, **kwargs: Any) -> JobReturn:
    """Run one job on a worker, in ``cwd`` when this machine has it."""
    from hydra_plugins.hydra_ray_launcher._launcher_util import _run_job

    before = os.getcwd()
    if os.path.isdir(cwd):
        os.chdir(cwd)
    try:
        return _run_job(*args, **kwargs)
    finally:
        os.chdir(before)


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
    """Run the jobs of one batch on the cluster ``launcher.ray_cfg.init`` names and return their
    results; what this adds to hydra-ray-launcher's own launch is listed in the module docstring."""
    import ray

    from vedforge.sweeps.summary import lost_job_record, read_job_records, remove_if_nothing_ran, write_job_record

    setup_globals()
    assert launcher.config is not None and launcher.hydra_context is not None and launcher.task_function is not None
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir)).absolute()
    try:
        start_or_join(launcher.ray_cfg.init)
    except RayClusterError:
        remove_if_nothing_ran(sweep_dir)  # Hydra's multirun.yaml, for a sweep that never ran
        raise
    sweep_dir.mkdir(parents=True, exist_ok=True)
    log.info("Ray Launcher is launching %d jobs, sweep output dir: %s", len(job_overrides), sweep_dir)

    remote_options = OmegaConf.to_container(launcher.ray_cfg.remote, resolve=True) if launcher.ray_cfg.remote else {}
    remote = ray.remote(**remote_options)(_run_job_from) if remote_options else ray.remote(_run_job_from)
    jobs = []
    for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
        log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        sweep_config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
        with open_dict(sweep_config):
            # Set by the scheduler on other launchers; Ray has none to read it from.
            sweep_config.hydra.job.id = f"job_id_for_{idx}"
            sweep_config.hydra.job.num = idx
            sweep_config.hydra.sweep.dir = str(sweep_dir)
        pair = str(sweep_config.hydra.sweep.subdir)
        ref = remote.remote(str(sweep_config.hydra.runtime.cwd), hydra_context=launcher.hydra_context,
                            sweep_config=sweep_config, task_function=launcher.task_function,
                            singleton_state=Singleton.get_state())
        jobs.append((pair, list(overrides), sweep_config, ref))

    returns = []
    for pair, overrides, sweep_config, ref in jobs:
        try:
            returns.append(ray.get(ref))
            continue
        except ray.exceptions.RayError as exc:
            first_line = next(iter(str(exc).strip().splitlines()), "")
            error = f"the Ray worker running this pair failed: {type(exc).__name__}: {first_line}"
            write_job_record(sweep_dir, pair, lost_job_record(sweep_config, pair, error))
        # Completed, with the failure in the pair's record: a failed JobReturn would make
        # Hydra skip the summary of the whole sweep.
        returns.append(JobReturn(overrides=overrides, cfg=sweep_config, hydra_cfg=sweep_config,
                                 status=JobStatus.COMPLETED))

    recorded = {row["pair"] for row in read_job_records(sweep_dir)}
    for pair, _, sweep_config, _ in jobs:
        if pair not in recorded:
            write_job_record(sweep_dir, pair, lost_job_record(
                sweep_config, pair,
                f"the job ran on a Ray worker, but its record did not reach {sweep_dir}: the worker wrote to a "
                "directory this machine does not see. Put hydra.sweep.dir on a file system every node mounts "
                "at the same path."))
    return returns
