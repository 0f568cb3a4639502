"""``vedforge plan [-m] [--json] OVERRIDES...``: print what a forge (or a sweep) would do.

The recipe is composed exactly as ``vedforge OVERRIDES...`` composes it (with ``-m``, each
job of the sweep as Hydra's basic sweeper expands it), but no Hydra run starts: nothing is
written, no directory is left behind (only a probe, removed at once, shows that the output can be
created), and no weights are fetched or read. With ``-m``, a pair whose output directory an earlier
pair names is refused, as the sweep refuses it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Optional

from vedforge.cli.messages import report
from vedforge.core.errors import EXIT_USER_ERROR, VedforgeError
from vedforge.sweeps.job_overrides import SharedOutputs, compose_job, sweep_job_overrides

USAGE = """vedforge plan [-m|--multirun] [--json] [--config-dir DIR] OVERRIDES...

Print the plan of the forge `vedforge OVERRIDES...` would run (with -m, of every pair of the
sweep): per pair the encoder and decoder and their resolved revisions, parameters in total and
new, bytes to download and to write, token ids, weight layouts and files, the output directory
and whether it would be forged, skipped (already complete) or refused and why. Nothing is
written and no weights are fetched or read. Exits 2 when any pair would be refused."""


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="vedforge plan", usage=USAGE, add_help=True)
    parser.add_argument("-m", "--multirun", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--config-dir", "-cd", default=None)
    return parser.parse_known_args(argv)


def _job_configs(overrides: list[str], multirun: bool, config_dir: Optional[str]):
    """Yield ``(pair name or None, task config or None, error or None)`` per job, composed as the CLI would."""
    import os

    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import HydraException
    from hydra.types import RunMode
    from omegaconf import OmegaConf, open_dict, read_write

    from vedforge.core.resources import config_dir as default_config_dir
    from vedforge.core.secrets import register
    from vedforge.recipe.schema import register_schema

    register_schema()
    if config_dir:
        overrides = [f"hydra.searchpath=[file://{os.path.abspath(config_dir)}]", *overrides]
    with initialize_config_dir(config_dir=str(default_config_dir()), version_base="1.3", job_name="vedforge"):
        hydra = GlobalHydra.instance().hydra
        assert hydra is not None
        mode = RunMode.MULTIRUN if multirun else RunMode.RUN
        try:
            master = hydra.compose_config("config", overrides, run_mode=mode, with_log_configuration=False)
        except (HydraException, ValueError) as exc:
            raise VedforgeError(f"The overrides do not compose: {exc}") from None
        from vedforge.recipe.backends import (configure_flax_import, configure_torch_import, needs_flax, needs_torch,
                                              sweep_needs_flax, sweep_needs_torch)

        if multirun:
            job_overrides = sweep_job_overrides(master, overrides)
            params = dict(master.hydra.sweeper.get("params") or {})
            # Planning a PyTorch forge builds torch's meta-device model; a Flax one never imports torch.
            configure_torch_import(sweep_needs_torch(master, overrides, params))
            configure_flax_import(sweep_needs_flax(master, overrides, params))
        else:
            job_overrides = [None]
            configure_torch_import(needs_torch(master))
            configure_flax_import(needs_flax(master))
        for job in job_overrides:
            if job is None:
                config = master
                output_dir = os.path.abspath(OmegaConf.select(config, "hydra.run.dir"))
                with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
                    config.hydra.runtime.output_dir = output_dir
                HydraConfig.instance().set_config(config)
                pair = None
            else:
                try:
                    pair, config = compose_job(hydra.config_loader, master, job)
                except (HydraException, ValueError) as exc:
                    yield " ".join(job), None, f"The overrides do not compose: {exc}"
                    continue
            # A recipe file's token is printed nowhere either (vedforge.core.secrets).
            register(OmegaConf.select(config, "hub.token"))
            # The task config resolves ${hydra:...} against the HydraConfig set above.
            yield pair, _task_config(config), None


def _task_config(config: Any) -> Any:
    """The job's config without its ``hydra`` node, as the CLI's task function receives it."""
    import copy

    from omegaconf import open_dict, read_write

    typed = copy.deepcopy(config)
    with read_write(typed), open_dict(typed):
        del typed["hydra"]
    return typed


def main(argv: list[str]) -> int:
    """Run ``vedforge plan``; return the exit code."""
    args, overrides = _parse(argv)
    unknown = [o for o in overrides if o.startswith("-")]
    if unknown:
        report(f"vedforge plan does not know the option {unknown[0]}. Usage: {USAGE.splitlines()[0]}")
        return EXIT_USER_ERROR
    from vedforge.cli.default_backend import default_backend_note, default_backend_override

    if not args.multirun and default_backend_override(overrides) is not None:
        overrides = [*overrides, "backend=pt"]
        print(f"vedforge: {default_backend_note('planning')}", file=sys.stderr)
    summaries = []
    # A sweep refuses a pair whose output directory an earlier pair writes to; so does its plan.
    shared = SharedOutputs()
    try:
        for pair, cfg, error in _job_configs(overrides, args.multirun, args.config_dir):
            summaries.append(_plan_one(pair, cfg, error, shared))
    except VedforgeError as exc:
        report(str(exc))
        return EXIT_USER_ERROR
    if args.json:
        data: Any = summaries[0] if not args.multirun else {"pairs": summaries, "totals": _totals(summaries)}
        text = json.dumps(data, indent=2, sort_keys=True)
    else:
        from vedforge.pipeline.plan_report import render_text, render_totals

        text = "\n".join([render_text(s) for s in summaries] + ([render_totals(summaries)] if args.multirun else []))
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # `vedforge plan ... | head`: the reader has all it wanted.
        sys.stdout = None
    return EXIT_USER_ERROR if any(s["outcome"] == "refused" for s in summaries) else 0


def _totals(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    from vedforge.pipeline.plan_report import sweep_totals

    return sweep_totals(summaries)


def _plan_one(pair: Optional[str], cfg: Any, error: Optional[str], shared: SharedOutputs) -> dict[str, Any]:
    from vedforge.pipeline.plan_report import plan_summary, refused_summary

    if error is not None:
        return refused_summary(None, error, pair=pair)
    try:
        output_dir = str(cfg.output.dir)
    except Exception:  # an unresolvable interpolation: the plan below reports it
        output_dir = None
    if pair is not None and output_dir is not None:
        refusal = shared.claim(pair, output_dir)
        if refusal is not None:
            return refused_summary(output_dir, refusal, pair=pair)
    try:
        from vedforge.pipeline.plan import build_plan

        return plan_summary(build_plan(cfg), pair=pair)
    except VedforgeError as exc:
        return refused_summary(output_dir, str(exc), pair=pair)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
