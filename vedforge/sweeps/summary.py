"""Multirun sweeps: per-pair directory names, per-job records, and the sweep summary.

Each job writes a small JSON record into ``<sweep dir>/.vedforge_jobs/`` whether it forged,
skipped or failed, so the summary is complete even when jobs run in other processes (joblib,
submitit, ray) and even when some fail. Hydra skips ``on_multirun_end`` when a job raises,
so jobs never raise: the CLI turns recorded failures into a non-zero exit at the end.

When the sweep starts, it records its pairs (each one's row, status ``not started``) and the
pairs it refuses before forging anything (an output directory an earlier pair writes to); each
job marks its pair as started (a row with status ``interrupted``) before anything else. So a
sweep interrupted at any moment (Ctrl-C) still writes a summary with a row per pair: its record
when it has one, else ``interrupted`` when it had started, else ``not started``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vedforge.recipe.schema import architecture_name, option_value

log = logging.getLogger("vedforge")

JOBS_DIR = ".vedforge_jobs"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
# The sweep's pairs, as JSON: {"count": N, "rows": [...], "refused": {pair: reason}}. Not *.json,
# which are the job records.
PLANNED = "planned_pairs"
STARTED = ".started"
NOT_STARTED = "not started"
INTERRUPTED_ERROR = ("interrupted (Ctrl-C) while in flight; run the sweep again: a pair whose artifact is complete is "
                     "skipped, the others are forged")
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


def _write_atomically(path: Path, text: str) -> None:
    """Write ``path`` so that a reader (or an interrupted writer) never leaves half a file."""
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)


def write_job_record(sweep_dir: Path, subdir: str, record: dict[str, Any]) -> None:
    """Record one job's outcome; written atomically so a reader never sees half a record."""
    jobs = sweep_dir / JOBS_DIR
    jobs.mkdir(parents=True, exist_ok=True)
    _write_atomically(jobs / f"{subdir}.json", json.dumps(record, indent=2, sort_keys=True) + "\n")


def mark_started(sweep_dir: Path, subdir: str, row: dict[str, Any]) -> None:
    """Mark a job as started, with the row the summary shows should it be interrupted before its
    record is written (``row``, status ``interrupted``)."""
    jobs = sweep_dir / JOBS_DIR
    jobs.mkdir(parents=True, exist_ok=True)
    _write_atomically(jobs / f"{subdir}{STARTED}", json.dumps(row, sort_keys=True) + "\n")


def record_planned_pairs(config: DictConfig) -> None:
    """Record the pairs the sweep will run, before any runs: how many (each job logs pairs done of
    pairs planned, and jobs may run in other processes), each one's summary row, and the pairs
    refused before anything is forged, as :func:`vedforge.sweeps.job_overrides.compose_job`
    composes them for ``vedforge plan -m`` too."""
    from vedforge.sweeps.job_overrides import sweep_job_overrides

    try:
        jobs = sweep_job_overrides(config, list(config.hydra.overrides.task))
    except Exception:  # another sweeper: its jobs log pairs done without the total
        return
    try:
        rows, refused = _planned_rows(config, jobs)
    except Exception:  # a job that does not compose: Hydra reports it when it launches the job
        rows, refused = [], {}
    for pair, reason in refused.items():
        log.error("%s will not be forged: %s", pair, reason)
    directory = Path(config.hydra.sweep.dir) / JOBS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    _write_atomically(directory / PLANNED, json.dumps({"count": len(jobs), "rows": rows, "refused": refused}) + "\n")


def _planned_rows(config: DictConfig, jobs: list[list[str]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Each job's summary row (status ``not started``), and the jobs refused by
    :class:`vedforge.sweeps.job_overrides.SharedOutputs`, with the reason."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from vedforge.sweeps.job_overrides import SharedOutputs, compose_job

    hydra = GlobalHydra.instance().hydra
    assert hydra is not None
    shared = SharedOutputs()
    rows, refused = [], {}
    before = HydraConfig.instance().cfg
    try:
        for job in jobs:
            pair, job_config = compose_job(hydra.config_loader, config, job)
            rows.append(_row(job_config, job_config.hydra.runtime.choices, pair, status=NOT_STARTED, output_dir=None,
                             wall_s=None, error=None, loads=None))
            reason = shared.claim(pair, str(job_config.output.dir))
            if reason is not None:
                refused[pair] = reason
    finally:
        HydraConfig.instance().cfg = before
    return rows, refused


def _planned(sweep_dir: Path) -> dict[str, Any]:
    try:
        planned = json.loads((sweep_dir / JOBS_DIR / PLANNED).read_text())
    except (OSError, ValueError):
        return {}
    return planned if isinstance(planned, dict) else {}


def refusal_of(sweep_dir: Path, pair: str) -> Optional[str]:
    """Why the sweep refuses ``pair`` before forging anything, or None."""
    return _planned(sweep_dir).get("refused", {}).get(pair)


def log_pair_done(sweep_dir: Path) -> None:
    """Log how many pairs of the sweep are done, of how many planned."""
    from vedforge.weights.progress import log_sweep_progress

    rows = read_job_records(sweep_dir)
    planned: Optional[int] = _planned(sweep_dir).get("count")
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


def sweep_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """A row per pair of the sweep, ordered by pair name: its record when it has one; else, when
    it started, ``interrupted``; else its planned row, ``not started``."""
    rows = {row["pair"]: row for row in read_job_records(sweep_dir)}
    jobs = sweep_dir / JOBS_DIR
    for marker in sorted(jobs.glob(f"*{STARTED}")) if jobs.is_dir() else ():
        try:
            row = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue
        rows.setdefault(row["pair"], row)
    for row in _planned(sweep_dir).get("rows", []):
        rows.setdefault(row["pair"], row)
    return sorted(rows.values(), key=lambda r: r["pair"])


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
    # The directory of the sweep this process runs (None in a launcher's worker processes).
    sweep_dir: Optional[Path] = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from vedforge.recipe.backends import (configure_flax_import, configure_torch_import, sweep_needs_flax,
                                              sweep_needs_torch)
        from vedforge.sweeps.interrupts import release

        try:
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
            for stale in jobs.iterdir() if jobs.is_dir() else ():
                if stale.name.endswith((".json", STARTED)) or stale.name == PLANNED:
                    stale.unlink()
            record_planned_pairs(config)
            SweepSummary.sweep_dir = Path(config.hydra.sweep.dir)
        finally:
            # A Ctrl-C held while the sweep started (vedforge.sweeps.interrupts) takes effect now.
            release()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = sweep_rows(sweep_dir)
        if not rows:
            # Nothing ran: no summary of nothing.
            SweepSummary.empty = list(config.hydra.overrides.task)
            remove_if_nothing_ran(sweep_dir)
            return
        SweepSummary.failed = write_summary(sweep_dir, rows)["failed"]


def write_interrupted_summary() -> None:
    """After Ctrl-C: write the summary of the sweep this process runs, if it runs one, with a row
    per pair (:func:`sweep_rows`)."""
    if SweepSummary.sweep_dir is not None:
        write_summary(SweepSummary.sweep_dir)


def remove_if_nothing_ran(sweep_dir: Path) -> None:
    """Remove the sweep directory when it holds only what Hydra writes before any job runs
    (multirun.yaml), so a sweep that launched nothing leaves nothing behind."""
    if sweep_dir.is_dir() and {p.name for p in sweep_dir.iterdir()} <= {"multirun.yaml", JOBS_DIR}:
        import shutil

        shutil.rmtree(sweep_dir)


def write_summary(sweep_dir: Path, rows: Optional[list[dict[str, Any]]] = None) -> dict[str, Any]:
    """Write ``summary.json`` and ``summary.md`` from a row per pair (``rows``, when already read;
    else :func:`sweep_rows`), log them, and return the summary."""
    rows = sweep_rows(sweep_dir) if rows is None else rows
    done = ("forged", "skipped")
    summary = {
        "sweep_dir": str(sweep_dir.absolute()),
        "pairs": len(rows),
        "forged": sum(r["status"] == "forged" for r in rows),
        "skipped": sum(r["status"] == "skipped" for r in rows),
        "interrupted": [r["pair"] for r in rows if r["status"] == "interrupted"],
        "not_started": [r["pair"] for r in rows if r["status"] == NOT_STARTED],
        "failed": [r["pair"] for r in rows if r["status"] not in (*done, NOT_STARTED)],
        "checkpoint_loads": {
            role: sum(r.get("loads", {}).get(role, 0) for r in rows) for role in ("encoder", "decoder")
        },
        "rows": rows,
    }
    sweep_dir.mkdir(parents=True, exist_ok=True)
    _write_atomically(sweep_dir / SUMMARY_JSON, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    _write_atomically(sweep_dir / SUMMARY_MD, _markdown(rows))
    loads = summary["checkpoint_loads"]
    stopped = len(summary["not_started"])
    log.info(
        "Sweep: %d pairs, %d forged, %d skipped (already complete), %d failed%s; checkpoints read: %d encoder, "
        "%d decoder. Summary: %s",
        len(rows), summary["forged"], summary["skipped"], len(summary["failed"]),
        f", {stopped} not started" if stopped else "", loads["encoder"], loads["decoder"], sweep_dir / SUMMARY_MD,
    )
    for row in rows:
        if row["status"] not in (*done, NOT_STARTED):
            log.error("%s %s: %s", row["status"].upper(), row["pair"], row.get("error"))
    if stopped:
        log.error("NOT STARTED (run the sweep again to forge them): %s", ", ".join(summary["not_started"]))
    return summary


def _row(cfg: DictConfig, choices: Any, pair: str, *, status: str, output_dir: Optional[Path],
         wall_s: Optional[float], error: Optional[str], loads: Optional[dict]) -> dict[str, Any]:
    """A summary row from a job's config and Hydra's config-group ``choices`` for it."""
    return {
        "pair": pair,
        "encoder": choices.get("encoder") or cfg.encoder.name_or_path,
        "decoder": choices.get("decoder") or cfg.decoder.name_or_path,
        "backend": option_value(cfg.backend.name),
        "architecture": architecture_name(cfg),
        "token_policy": choices.get("token_policy"),
        "status": status,
        "output_dir": str(output_dir) if output_dir else None,
        "wall_s": None if wall_s is None else round(wall_s, 3),
        "error": error,
        "loads": loads or {},
    }


def record_for(cfg: DictConfig, pair: str, *, status: str, output_dir: Optional[Path], manifest: Optional[dict],
               wall_s: Optional[float], error: Optional[str] = None, loads: Optional[dict] = None) -> dict[str, Any]:
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
