"""Multirun sweeps: per-pair directory names, per-job records, and the sweep summary.

Each job writes a small JSON record into ``<sweep dir>/.vedforge_jobs/`` whether it forged,
skipped or failed, so the summary is complete even when jobs run in other processes (joblib,
submitit, ray) and even when some fail. Hydra skips ``on_multirun_end`` when a job raises,
so jobs never raise: the CLI turns recorded failures into a non-zero exit at the end.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vedforge.recipe.schema import option_value

log = logging.getLogger("vedforge")

JOBS_DIR = ".vedforge_jobs"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
PLANNED = "planned_pairs"
_COLUMNS = ("pair", "encoder", "decoder", "backend", "architecture", "token_policy", "status", "output_dir", "parameters", "new_parameters",
            "artifact_bytes", "wall_s", "error")


def job_subdir(encoder: str, decoder: str, overrides: Iterable[str] = ()) -> str:
    """``vit__gpt2``, plus the job's other recipe overrides (``vit__gpt2__seed=1``): see
    :mod:`vedforge.sweeps.pair_names` for how the name stays safe and unique."""
    from vedforge.sweeps.pair_names import pair_dirname

    return pair_dirname(encoder, decoder, overrides)


def register_resolvers() -> None:
    """Register ``${vedforge_subdir:ENCODER,DECODER,OVERRIDES}``, used by ``hydra.sweep.subdir``."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("vedforge_subdir"):
        OmegaConf.register_new_resolver(
            "vedforge_subdir", lambda e, d, o=(): job_subdir(str(e), str(d), [str(line) for line in o or ()]))


def write_job_record(sweep_dir: Path, subdir: str, record: dict[str, Any]) -> None:
    """Record one job's outcome; written atomically so a reader never sees half a record."""
    jobs = sweep_dir / JOBS_DIR
    jobs.mkdir(parents=True, exist_ok=True)
    tmp = jobs / f".{subdir}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, jobs / f"{subdir}.json")


def record_planned_pairs(config: DictConfig) -> None:
    """Write how many pairs the sweep will run, so each job can log pairs done of pairs planned
    (jobs may run in other processes)."""
    try:
        from vedforge.sweeps.job_overrides import sweep_job_overrides

        planned = len(sweep_job_overrides(config, list(config.hydra.overrides.task)))
    except Exception:  # another sweeper: its jobs log pairs done without the total
        return
    jobs = Path(config.hydra.sweep.dir) / JOBS_DIR
    jobs.mkdir(parents=True, exist_ok=True)
    (jobs / PLANNED).write_text(f"{planned}\n")


def log_pair_done(sweep_dir: Path) -> None:
    """Log how many pairs of the sweep are done, of how many planned."""
    from vedforge.weights.progress import log_sweep_progress

    rows = read_job_records(sweep_dir)
    try:
        planned: Optional[int] = int((sweep_dir / JOBS_DIR / PLANNED).read_text())
    except (OSError, ValueError):
        planned = None
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    log_sweep_progress(len(rows), planned, counts)


def read_job_records(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every job record of the sweep, ordered by pair name."""
    jobs = sweep_dir / JOBS_DIR
    if not jobs.is_dir():
        return []
    return sorted((json.loads(p.read_text()) for p in jobs.glob("*.json")), key=lambda r: r["pair"])


def _markdown(rows: list[dict[str, Any]]) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, int):
            return f"{value:,}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in _COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


class SweepSummary(Callback):
    """Writes ``summary.json`` and ``summary.md`` into the sweep directory when a sweep ends."""

    failed: list[str] = []
    # The sweep's own overrides when it launched no job at all (e.g. seed=range(0,0)).
    empty: Optional[list[str]] = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from vedforge.recipe.backends import (configure_flax_import, configure_torch_import, sweep_needs_flax,
                                              sweep_needs_torch)

        SweepSummary.failed, SweepSummary.empty = [], None
        # Before any job imports transformers: one decision for every job of this process and
        # the launcher's workers, which inherit the environment.
        sweeper_params = config.hydra.sweeper.get("params") or {}
        task_overrides = list(config.hydra.overrides.task)
        configure_torch_import(sweep_needs_torch(config, task_overrides, dict(sweeper_params)))
        configure_flax_import(sweep_needs_flax(config, task_overrides, dict(sweeper_params)))
        # Every job of this run writes its record again; records of an earlier run into
        # the same sweep directory (other pairs, other overrides) must not enter its summary.
        jobs = Path(config.hydra.sweep.dir) / JOBS_DIR
        for stale in jobs.glob("*.json") if jobs.is_dir() else ():
            stale.unlink()
        record_planned_pairs(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = read_job_records(sweep_dir)
        if not rows:
            # Nothing ran: no summary of nothing.
            SweepSummary.empty = list(config.hydra.overrides.task)
            remove_if_nothing_ran(sweep_dir)
            return
        SweepSummary.failed = write_summary(sweep_dir, rows)["failed"]


def remove_if_nothing_ran(sweep_dir: Path) -> None:
    """Remove the sweep directory when it holds only what Hydra writes before any job runs
    (multirun.yaml), so a sweep that launched nothing leaves nothing behind."""
    if sweep_dir.is_dir() and {p.name for p in sweep_dir.iterdir()} <= {"multirun.yaml", JOBS_DIR}:
        import shutil

        shutil.rmtree(sweep_dir)


def write_summary(sweep_dir: Path, rows: Optional[list[dict[str, Any]]] = None) -> dict[str, Any]:
    """Write ``summary.json`` and ``summary.md`` from the job records (``rows``, when already read),
    log them, and return the summary."""
    rows = read_job_records(sweep_dir) if rows is None else rows
    done = ("forged", "skipped")
    summary = {
        "sweep_dir": str(sweep_dir.absolute()),
        "pairs": len(rows),
        "forged": sum(r["status"] == "forged" for r in rows),
        "skipped": sum(r["status"] == "skipped" for r in rows),
        "interrupted": [r["pair"] for r in rows if r["status"] == "interrupted"],
        "failed": [r["pair"] for r in rows if r["status"] not in done],
        "checkpoint_loads": {
            role: sum(r.get("loads", {}).get(role, 0) for r in rows) for role in ("encoder", "decoder")
        },
        "rows": rows,
    }
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / SUMMARY_JSON).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    (sweep_dir / SUMMARY_MD).write_text(_markdown(rows))
    loads = summary["checkpoint_loads"]
    log.info(
        "Sweep: %d pairs, %d forged, %d skipped (already complete), %d failed; checkpoints read: %d encoder, "
        "%d decoder. Summary: %s",
        len(rows), summary["forged"], summary["skipped"], len(summary["failed"]), loads["encoder"],
        loads["decoder"], sweep_dir / SUMMARY_MD,
    )
    for row in rows:
        if row["status"] not in done:
            log.error("%s %s: %s", row["status"].upper(), row["pair"], row.get("error"))
    return summary


def _architecture(cfg: DictConfig) -> str:
    """The recipe's ``architecture.name`` (cross_attention for recipes from before the choice)."""
    node = cfg.get("architecture")
    return option_value(node.name) if node is not None else "cross_attention"


def _row(cfg: DictConfig, choices: Any, pair: str, *, status: str, output_dir: Optional[Path],
         wall_s: Optional[float], error: Optional[str], loads: Optional[dict]) -> dict[str, Any]:
    """A summary row from a job's config and Hydra's config-group ``choices`` for it."""
    return {
        "pair": pair,
        "encoder": choices.get("encoder") or cfg.encoder.name_or_path,
        "decoder": choices.get("decoder") or cfg.decoder.name_or_path,
        "backend": option_value(cfg.backend.name),
        "architecture": _architecture(cfg),
        "token_policy": choices.get("token_policy"),
        "status": status,
        "output_dir": str(output_dir) if output_dir else None,
        "wall_s": None if wall_s is None else round(wall_s, 3),
        "error": error,
        "loads": loads or {},
    }


def record_for(cfg: DictConfig, pair: str, *, status: str, output_dir: Optional[Path], manifest: Optional[dict],
               wall_s: float, error: Optional[str] = None, loads: Optional[dict] = None) -> dict[str, Any]:
    """One summary row."""
    from hydra.core.hydra_config import HydraConfig

    row = _row(cfg, HydraConfig.get().runtime.choices, pair, status=status, output_dir=output_dir, wall_s=wall_s,
               error=error, loads=loads)
    if manifest:
        row.update(
            parameters=manifest["parameters"]["total"],
            new_parameters=manifest["parameters"]["new"],
            artifact_bytes=sum(f["bytes"] for f in manifest["files"].values()),
        )
    return row


def lost_job_record(sweep_config: DictConfig, pair: str, error: str) -> dict[str, Any]:
    """The summary row of a pair whose job left no record of its own (its worker died, or wrote
    where the sweep cannot read), from the job's config as the launcher composed it."""
    return _row(sweep_config, sweep_config.hydra.runtime.choices, pair, status="failed", output_dir=None,
                wall_s=None, error=error, loads=None)
