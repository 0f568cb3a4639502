"""The ``vedforge`` command: Hydra composes the recipe, the runner forges it.

Exit codes: 0 success, 2 a problem with the recipe, inputs or environment (the message
says what to change; Hydra's composition errors too, with or without HYDRA_FULL_ERROR=1),
3 an internal error, 130 interrupted; ``vedforge verify`` exits 1 when a rebuilt file
differs. Set VEDFORGE_DEBUG=1 to see tracebacks.
"""

from __future__ import annotations

import gc
import re
import signal
import sys
from pathlib import Path

from vedforge.cli.messages import debug_enabled as _debug, report
from vedforge.cli.subcommands import NAMES as SUBCOMMANDS, run_subcommand
from vedforge.core.errors import EXIT_INTERNAL_ERROR, EXIT_INTERRUPTED, EXIT_USER_ERROR, VedforgeError
from vedforge.sweeps import interrupts
from vedforge.sweeps.summary import SweepSummary, register_resolvers, write_interrupted_summary

# At import, not in main(): launchers that run jobs in other processes (joblib, submitit)
# import this module to unpickle the task function and must resolve hydra.sweep.subdir too.
register_resolvers()

# Hydra exits with 1 on any composition error (unknown option, misspelt key, wrong type), and
# on an exception the task function lets through (VEDFORGE_DEBUG=1). With HYDRA_FULL_ERROR=1 it
# lets the exception itself through instead.
_HYDRA_ERROR_EXIT = 1
# The exit code of the error run_task let through for its traceback (VEDFORGE_DEBUG=1), so that
# Hydra reporting it does not turn it into a composition error's.
_task_exit = None
_MULTIRUN_FLAGS = {"-m", "--multirun"}


def run_task(cfg) -> None:
    """Hydra's task function: forge one recipe and translate failures into exit codes."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from vedforge.recipe.backends import (configure_flax_import, configure_torch_import, needs_flax, needs_torch,
                                          torch_only_in_worker)
    from vedforge.pipeline.runner import forge
    from vedforge.core.secrets import guard_console, redact, register

    global _task_exit
    # A token from a recipe file is not on the command line; and a launcher's worker process
    # (joblib, submitit, Ray) did not start in main().
    register(cfg.hub.token)
    guard_console()
    hydra_cfg = HydraConfig.get()
    if _default_backend_note is not None:
        import logging

        logging.getLogger("vedforge").info(_default_backend_note)
    if hydra_cfg.mode != RunMode.MULTIRUN:
        # A sweep decided this for all of its jobs when it started (SweepSummary).
        configure_torch_import(needs_torch(cfg) and not torch_only_in_worker(cfg))
        configure_flax_import(needs_flax(cfg))
    run_dir = Path(hydra_cfg.runtime.output_dir)
    records = run_dir / hydra_cfg.output_subdir if hydra_cfg.output_subdir else None
    sweep_dir = Path(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else None
    # Hydra wrote the command line, token included, before this job started.
    redact([run_dir, sweep_dir], cfg.hub.token)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        try:
            run_sweep_job(cfg, hydra_cfg, records)
        finally:
            redact([run_dir, sweep_dir], cfg.hub.token)
        return
    try:
        result = forge(cfg, hydra_records=records)
        if _private_run_dir is not None:
            from vedforge.cli.run_records import append_log

            append_log(_private_run_dir, result.output_dir)
        redact([result.output_dir, run_dir], cfg.hub.token)
    except VedforgeError as exc:
        if _debug():
            _task_exit = EXIT_USER_ERROR
            raise
        report(str(exc))
        sys.exit(EXIT_USER_ERROR)
    except Exception as exc:
        if _debug():
            _task_exit = EXIT_INTERNAL_ERROR
            raise
        report(
            f"{type(exc).__name__}: {exc}. This is a bug in vedforge or a library below it; "
            "rerun with VEDFORGE_DEBUG=1 for the traceback and report it.",
            internal=True,
        )
        sys.exit(EXIT_INTERNAL_ERROR)


def run_sweep_job(cfg, hydra_cfg, records) -> None:
    """Forge one pair of a sweep and record its outcome; never raise, so the sweep goes on."""
    import logging
    import time
    import traceback

    from vedforge.pipeline.runner import forge
    from vedforge.sweeps.summary import (INTERRUPTED_ERROR, log_pair_done, mark_started, record_for, refusal_of,
                                         write_job_record, write_summary)

    pair = str(hydra_cfg.sweep.subdir)
    sweep_dir = Path(hydra_cfg.sweep.dir)
    started = time.perf_counter()

    def unpublished(status: str, error: str) -> dict:
        return record_for(cfg, pair, status=status, output_dir=None, manifest=None,
                          wall_s=time.perf_counter() - started, error=error)

    interrupts.check()  # a Ctrl-C swallowed since the last job (vedforge.sweeps.interrupts) stops the sweep here
    # Should Ctrl-C come before this job records its outcome, the summary shows the pair as interrupted.
    mark_started(sweep_dir, pair, record_for(cfg, pair, status="interrupted", output_dir=None, manifest=None,
                                             wall_s=None, error=INTERRUPTED_ERROR))
    refusal = None
    try:
        refusal = refusal_of(sweep_dir, pair)
        if refusal is not None:
            row = unpublished("failed", refusal)
        else:
            result = forge(cfg, hydra_records=records, cache=_shared_cache())
            row = record_for(cfg, pair, status="skipped" if result.skipped else "forged",
                             output_dir=result.output_dir, manifest=result.manifest,
                             wall_s=time.perf_counter() - started, loads=result.loads)
    except VedforgeError as exc:
        row = unpublished("failed", str(exc))
    except KeyboardInterrupt:
        # Ctrl-C stops the sweep here: record the pair and let the interrupt end the run. The process
        # that runs the sweep then writes the summary (Hydra will not call on_multirun_end); a
        # launcher's worker process writes it too, in case that process was not interrupted.
        write_job_record(sweep_dir, pair, unpublished("interrupted", INTERRUPTED_ERROR))
        if SweepSummary.sweep_dir is None:
            write_summary(sweep_dir)
        raise
    except Exception as exc:
        if _debug():
            traceback.print_exc()
        row = unpublished("failed", f"internal error: {type(exc).__name__}: {exc}")
    if row["status"] == "failed" and refusal is None and interrupts.requested():
        # A library turned the KeyboardInterrupt into an error of its own: the pair was interrupted.
        row = unpublished("interrupted", INTERRUPTED_ERROR)
    if row["status"] == "failed":
        logging.getLogger("vedforge").error("%s failed: %s", pair, row["error"])
    write_job_record(sweep_dir, pair, row)
    log_pair_done(sweep_dir)
    interrupts.check()  # one swallowed during this job: the pair is recorded, the sweep stops


_sweep_cache = None
# Set when a bare `vedforge` forges the embedded default with backend=pt (no Flax here).
_default_backend_note = None
# Hydra's run directory when it is a private temporary one (vedforge.cli.run_records).
_private_run_dir = None


def _shared_cache():
    """The checkpoint cache shared by the sweep jobs of this process, created on first use
    (importing the runner at start-up would slow down --help)."""
    global _sweep_cache
    if _sweep_cache is None:
        from vedforge.pipeline.runner import PartCache

        _sweep_cache = PartCache()
    return _sweep_cache


_GROUPS = ("encoder", "decoder", "token_policy", "backend", "architecture", "recipe")

# What Hydra's override grammar reads as a number or a boolean; as a group option Hydra
# rejects it with a bare traceback, so it is caught before Hydra sees it.
_NOT_A_NAME = re.compile(r"[+-]?(\d[\d_]*(\.\d*)?([eE][+-]?\d+)?|\.\d+|inf|nan)|true|false", re.IGNORECASE)


def _bad_group_override(argv: list[str]) -> str | None:
    """The message for a group override whose option Hydra would read as a number or boolean."""
    from vedforge.core.resources import group_options

    for arg in argv:
        group, _, value = arg.lstrip("+~").partition("=")
        if group in _GROUPS and any(_NOT_A_NAME.fullmatch(v.strip()) for v in value.split(",")):
            options = group_options(group)
            listed = f"Options: {', '.join(options)}." if options else "See vedforge --help for the options."
            return f"The override '{arg}' is not one of the {group} options: an option is a name, not a number or a boolean. {listed}"
    return None


def entry() -> None:
    """The ``vedforge`` command and ``python -m vedforge``: :func:`main`, then a quick exit."""
    main()
    # Interpreter teardown would walk every object JAX and transformers created, a fifth of a
    # second spent after the artifact is complete; the collector skips frozen objects.
    gc.freeze()


def main() -> None:
    """Run the command line in ``sys.argv``: a forge, a sweep, ``plan``, ``verify`` or ``convert``."""
    from vedforge.core.secrets import guard_console, register, tokens_in_overrides

    # Before anything prints: Hydra logs a sweep's command lines, prints --cfg, and quotes
    # overrides in its errors.
    for token in tokens_in_overrides(sys.argv[1:]):
        register(token)
    guard_console()
    if sys.argv[1:2] in ([name] for name in SUBCOMMANDS):
        sys.exit(run_subcommand(sys.argv[1], sys.argv[2:]))
    if sys.argv[1:2] == ["plan"]:
        from vedforge.cli.plan_command import main as plan_main

        sys.exit(plan_main(sys.argv[2:]))
    from vedforge.sweeps.launchers import missing_launcher

    bad = _bad_group_override(sys.argv[1:]) or missing_launcher(sys.argv[1:])
    if bad:
        report(bad)
        sys.exit(EXIT_USER_ERROR)
    import hydra

    from vedforge.core.resources import config_dir
    from vedforge.core.secrets import redact_registered
    from vedforge.cli.run_dir import RunDirCheck
    from vedforge.cli.run_records import private_run_dir, remove_run_dir, run_dir_override
    from vedforge.recipe.schema import register_schema

    global _private_run_dir, _default_backend_note
    register_schema()
    SweepSummary.sweep_dir = None
    from vedforge.cli.default_backend import default_backend_override, default_backend_note

    if default_backend_override(sys.argv[1:]) is not None:
        sys.argv.append("backend=pt")
        _default_backend_note = default_backend_note("forging")
    # With output.dir given, the artifact is the only place a forge writes (vedforge.cli.run_records).
    _private_run_dir = private_run_dir(sys.argv[1:])
    if _private_run_dir is not None:
        sys.argv.append(run_dir_override(_private_run_dir))
    app = hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")(run_task)
    if _MULTIRUN_FLAGS & set(sys.argv[1:]):
        # Until the sweep knows its pairs, so that an interrupted sweep's summary lists them all.
        interrupts.hold()
    try:
        app()
        interrupts.release()  # a Ctrl-C held while no sweep started (e.g. --cfg job)
        interrupts.check()  # one swallowed after the last job
    except SystemExit as exc:
        if exc.code == _HYDRA_ERROR_EXIT:
            sys.exit(_task_exit or EXIT_USER_ERROR)
        raise
    except KeyboardInterrupt:
        # The summary of an interrupted sweep, with a row per pair; a second Ctrl-C must not cut it short.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            write_interrupted_summary()
        finally:
            signal.signal(signal.SIGINT, previous)
        report("interrupted. Nothing partial was published; completed artifacts are complete. Run the same "
               "command again to resume.")
        sys.exit(EXIT_INTERRUPTED)
    except Exception:
        # HYDRA_FULL_ERROR=1: Hydra let its error through for the full stack, which it asked for.
        import traceback

        traceback.print_exc()
        sys.exit(_task_exit or EXIT_USER_ERROR)
    finally:
        if _private_run_dir is not None:
            remove_run_dir(_private_run_dir)
        # Hydra wrote the command line (multirun.yaml, .hydra/) also where no job ran to redact it.
        redact_registered(RunDirCheck.directories)
    if SweepSummary.empty is not None:
        swept = ", ".join(SweepSummary.empty) or "none"
        report(f"The sweep launched no jobs: its overrides ({swept}) expand to no combination. Give every swept key "
               "at least one value, e.g. seed=range(0,3) or encoder=vit_tiny,beit_tiny.")
        sys.exit(EXIT_USER_ERROR)
    if SweepSummary.failed:
        report(f"{len(SweepSummary.failed)} pair(s) of the sweep failed: {', '.join(SweepSummary.failed)}. "
               "The others are complete; see the sweep's summary.md for each error.")
        sys.exit(EXIT_USER_ERROR)
