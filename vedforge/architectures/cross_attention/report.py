"""A cross-attention forge's plan as data (``vedforge plan --json``) and as text."""

from __future__ import annotations

from typing import Any, Optional

from vedforge.architectures.part_report import part_line, part_summary
from vedforge.core.units import human_bytes


def summary(plan: Any, *, pair: Optional[str] = None, tensors: bool = True) -> dict[str, Any]:
    """A cross-attention plan as plain data. Without ``tensors``, what each tensor comes from
    (which traces the checkpoints) is left out and only the total parameter count is given."""
    summary: dict[str, Any] = {"output_dir": str(plan.output_dir), "outcome": "forge"}
    if pair is not None:
        summary["pair"] = pair
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
        encoder=part_summary(plan.encoder),
        decoder=part_summary(plan.decoder),
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


def render_text(summary: dict[str, Any]) -> str:
    """One cross-attention pair's planned forge as a few lines of text."""
    head = f"{summary.get('pair', 'plan')}: "
    counts = summary["parameters"]
    ids = summary["token_ids"]
    lines = [
        f"{head}FORGE{' (replacing the artifact there)' if summary['overwrite'] else ''} -> {summary['output_dir']}",
        part_line("encoder", summary["encoder"]),
        part_line("decoder", summary["decoder"]),
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
