"""A plan as data (``vedforge plan --json``) and as text (``vedforge plan``, and a forge's log)."""

from __future__ import annotations

import logging
from typing import Any, Optional

from vedforge.architectures import architecture, architecture_of
from vedforge.architectures.parts import SKIP
from vedforge.core.units import human_bytes

# What forges a complete artifact again: resume=false alone stops at the files already there.
FORGE_AGAIN = "output.resume=false output.overwrite=true forges it again"

log = logging.getLogger("vedforge")


def plan_summary(plan: Any, *, pair: Optional[str] = None, tensors: bool = True) -> dict[str, Any]:
    """The plan as plain data: what ``vedforge plan --json`` prints for one pair. Without
    ``tensors``, what each tensor comes from (which traces the checkpoints) is left out and
    only the total parameter count is given."""
    if plan.outcome != SKIP:
        summary = architecture_of(plan).summary(plan, pair=pair, tensors=tensors)
        if plan.recipe.choices:
            summary["choices"] = plan.recipe.choices
        return summary
    summary: dict[str, Any] = {"output_dir": str(plan.output_dir), "outcome": "skipped"}
    if pair is not None:
        summary["pair"] = pair
    previous = plan.previous
    summary.update(
        reason="the output directory already holds a complete, unaltered artifact of this recipe (output.resume)",
        inputs=previous.get("inputs"), parameters=previous.get("parameters"), token_ids=previous.get("token_ids"),
        weight_layouts=previous.get("weight_layouts"), download_bytes=0, write_bytes=0,
    )
    return summary


def refused_summary(output_dir: Optional[str], reason: str, *, pair: Optional[str] = None) -> dict[str, Any]:
    """The plan entry of a recipe the forge would refuse, and why."""
    summary: dict[str, Any] = {"output_dir": output_dir, "outcome": "refused", "reason": reason}
    if pair is not None:
        summary["pair"] = pair
    return summary


def render_text(summary: dict[str, Any]) -> str:
    """One pair's plan as a few lines of text."""
    head = f"{summary.get('pair', 'plan')}: "
    outcome = summary["outcome"]
    if outcome == "refused":
        return f"{head}REFUSED -> {summary['output_dir']}\n  {summary['reason']}"
    if outcome == "skipped":
        counts = summary.get("parameters") or {}
        return (f"{head}SKIPPED (already complete) -> {summary['output_dir']}\n  "
                f"{counts.get('total', 0):,} parameters ({counts.get('new', 0):,} new); {FORGE_AGAIN}")
    # A cross-attention summary names no architecture: its JSON is as it was before there were two.
    text = architecture(summary.get("architecture", "cross_attention")).render_text(summary)
    for setting, choice in (summary.get("choices") or {}).items():
        text += f"\n  chosen: {setting}={choice['value']} ({choice['why']})"
    return text


def render_totals(summaries: list[dict[str, Any]]) -> str:
    """The totals line of a sweep's plan."""
    t = sweep_totals(summaries)
    return (f"sweep: {t['pairs']} pairs: {t['forge']} to forge, {t['skipped']} skipped, {t['refused']} refused; "
            f"download {human_bytes(t['download_bytes'])}, disk needed {human_bytes(t['write_bytes'])}")


def sweep_totals(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The totals of a sweep's plan, as data. A sweep downloads each checkpoint once, however
    many pairs use it."""
    downloads: dict[tuple, int] = {}
    for s in summaries:
        for role in ("encoder", "decoder"):
            part = s.get(role)
            if part:
                downloads[(part["name_or_path"], part.get("revision"))] = part["download_bytes"]
    outcomes = [s["outcome"] for s in summaries]
    return {
        "pairs": len(summaries), "forge": outcomes.count("forge"), "skipped": outcomes.count("skipped"),
        "refused": outcomes.count("refused"), "download_bytes": sum(downloads.values()),
        "write_bytes": sum(s.get("write_bytes") or 0 for s in summaries),
    }


def log_plan(plan: Any) -> None:
    """Log the plan, as a forge does before it fetches anything."""
    if plan.outcome == SKIP:
        return
    # The forge's own assembly tells what each tensor came from; tracing it here would cost time.
    log.info("%s", render_text(plan_summary(plan, tensors=False)))
