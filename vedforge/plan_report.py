"""A plan as data (``vedforge plan --json``) and as text (``vedforge plan``, and a forge's log)."""

from __future__ import annotations

import logging
from typing import Any, Optional

log = logging.getLogger("vedforge")


def _part_summary(part: Any) -> dict[str, Any]:
    source = part.source
    entry: dict[str, Any] = {
        "name_or_path": part.recipe.name_or_path,
        "kind": source.kind,
        "model_type": part.config.checkpoint.model_type,
        "family": part.family.label,
        "built_with": part.family.built_with,
        "weights": part.recipe.weights,
        "weight_files": [{"name": f.name, "bytes": f.bytes, "on_disk": f.on_disk} for f in part.files],
        "read_bytes": part.read_bytes,
        "download_bytes": part.download_bytes,
    }
    if source.kind == "hub":
        entry.update(revision=source.revision, commit=source.commit)
    else:
        entry["path"] = str(source.path)
    return entry


def plan_summary(plan: Any, *, pair: Optional[str] = None, tensors: bool = True) -> dict[str, Any]:
    """The plan as plain data: what ``vedforge plan --json`` prints for one pair. Without
    ``tensors``, what each tensor comes from (which traces the checkpoints) is left out and
    only the total parameter count is given."""
    from vedforge.plan import SKIP

    if getattr(plan, "architecture", None) == "prefix":
        from vedforge.prefix_report import prefix_summary

        return prefix_summary(plan, pair=pair, tensors=tensors)
    summary: dict[str, Any] = {"output_dir": str(plan.output_dir), "outcome": "skipped" if plan.outcome == SKIP else "forge"}
    if pair is not None:
        summary["pair"] = pair
    if plan.outcome == SKIP:
        previous = plan.previous
        summary.update(
            reason="the output directory already holds a complete, unaltered artifact of this recipe (output.resume)",
            inputs=previous.get("inputs"), parameters=previous.get("parameters"), token_ids=previous.get("token_ids"),
            weight_layouts=previous.get("weight_layouts"), download_bytes=0, write_bytes=0,
        )
        return summary
    ids = plan.ids
    if tensors:
        reports = plan.tensors.reports
        summary.update(
            parameters=plan.parameters,
            tensors={
                "total": len(plan.target) + (
                    sum(1 for n in plan.encoder.shapes if n not in plan.encoder.buffers) if plan.encoder.built_with_torch else 0),
                "new": {part: r.new_tensors for part, r in reports.items() if r.new_tensors},
                "resized": {part: r.resized_tensors for part, r in reports.items() if r.resized_tensors},
                "grown": {part: r.grown for part, r in reports.items() if r.grown},
                "unused_checkpoint_tensors": {part: len(r.unused_tensors) for part, r in reports.items() if r.unused_tensors},
            },
        )
    else:
        summary["parameters"] = {"total": plan.total_parameters}
    summary.update(
        encoder=_part_summary(plan.encoder),
        decoder=_part_summary(plan.decoder),
        backend=plan.recipe.backend,
        seed=plan.recipe.seed,
        token_ids={
            "policy": plan.recipe.token_policy.kind, "decoder_start": ids.decoder_start, "pad": ids.pad, "eos": ids.eos,
            "bos": ids.bos, "added_pad_token": ids.added_pad, "vocab_size": ids.vocab_size,
        },
        weight_layouts=[
            {"layout": lp.layout.name, "files": list(lp.files), "bytes": lp.bytes} for lp in plan.layouts
        ],
        overwrite=bool(plan.recipe.output.overwrite and plan.output_dir.is_dir()),
        needs_compat=plan.needs_compat,
        needs_torch_compat=plan.needs_torch_compat,
        download_bytes=plan.download_bytes,
        read_bytes=plan.encoder.read_bytes + plan.decoder.read_bytes,
        write_bytes=plan.write_bytes,
    )
    return summary


def refused_summary(output_dir: Optional[str], reason: str, *, pair: Optional[str] = None) -> dict[str, Any]:
    """The plan entry of a recipe the forge would refuse, and why."""
    summary: dict[str, Any] = {"output_dir": output_dir, "outcome": "refused", "reason": reason}
    if pair is not None:
        summary["pair"] = pair
    return summary


def human_bytes(count: Optional[int]) -> str:
    """``1.23 GB``, ``456 kB``... (decimal units, as the hub shows sizes)."""
    if count is None:
        return "unknown"
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.2f} {unit}"
    return f"{count} B"


def _part_line(role: str, part: dict[str, Any]) -> str:
    where = (f"{part['name_or_path']} @ {part.get('revision')} ({part.get('commit')})" if part["kind"] == "hub"
             else f"{part['name_or_path']} ({part['kind']}: {part['path']})")
    fetched = (f"{human_bytes(part['download_bytes'])} to download, {human_bytes(part['read_bytes'])} to read"
               if part["weights"] == "pretrained" else "no weights read")
    return f"  {role}: {where}\n    {part['model_type']} ({part['family']}, {part['built_with']}), {part['weights']} weights; {fetched}"


def render_text(summary: dict[str, Any]) -> str:
    """One pair's plan as a few lines of text."""
    head = f"{summary.get('pair', 'plan')}: "
    outcome = summary["outcome"]
    if outcome == "refused":
        return f"{head}REFUSED -> {summary['output_dir']}\n  {summary['reason']}"
    if summary.get("architecture") == "prefix" and outcome == "forge":
        from vedforge.prefix_report import render_prefix_text

        return render_prefix_text(summary)
    if outcome == "skipped":
        counts = summary.get("parameters") or {}
        return (f"{head}SKIPPED (already complete) -> {summary['output_dir']}\n  "
                f"{counts.get('total', 0):,} parameters ({counts.get('new', 0):,} new); output.resume=false forges it again")
    counts = summary["parameters"]
    ids = summary["token_ids"]
    lines = [
        f"{head}FORGE{' (replacing the artifact there)' if summary['overwrite'] else ''} -> {summary['output_dir']}",
        _part_line("encoder", summary["encoder"]),
        _part_line("decoder", summary["decoder"]),
    ]
    if "tensors" in summary:
        lines += [
            f"  parameters: {counts['total']:,} total, {counts['new']:,} new "
            f"({', '.join(f'{k} {v:,}' for k, v in counts.items() if k not in ('total', 'new'))})",
            f"  tensors: {summary['tensors']['total']:,}, new: "
            + (", ".join(f"{part} {len(names)}" for part, names in summary["tensors"]["new"].items()) or "none")
            + (f"; resized: {sum(len(v) for v in summary['tensors']['resized'].values())}"
               if summary["tensors"]["resized"] else ""),
        ]
    else:
        lines.append(f"  parameters: {counts['total']:,} total")
    lines += [
        f"  token ids ({ids['policy']}): decoder_start {ids['decoder_start']}, pad {ids['pad']}, eos {ids['eos']}, "
        f"bos {ids['bos']}, vocabulary {ids['vocab_size']:,}" + (f", adds pad {ids['added_pad_token']!r}" if ids["added_pad_token"] else ""),
    ]
    for layout in summary["weight_layouts"]:
        lines.append(f"  writes {layout['layout']} weights: {', '.join(layout['files'])} ({human_bytes(layout['bytes'])})")
    lines.append(f"  download {human_bytes(summary['download_bytes'])}, write {human_bytes(summary['write_bytes'])}")
    return "\n".join(lines)


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
    from vedforge.plan import SKIP

    if plan.outcome == SKIP:
        return
    # The forge's own assembly tells what each tensor came from; tracing it here would cost time.
    log.info("%s", render_text(plan_summary(plan, tensors=False)))
