"""A prefix forge's plan as data (``vedforge plan --json``) and as text."""

from __future__ import annotations

from typing import Any, Optional

from vedforge.architectures.part_report import part_line, part_summary
from vedforge.core.units import human_bytes


def prefix_summary(plan: Any, *, pair: Optional[str] = None, tensors: bool = True) -> dict[str, Any]:
    """The plan of a prefix forge as plain data. Without ``tensors`` only the parameter total is given."""
    from vedforge.weights.bfloat16 import dtype_name

    tokens, report = plan.tokens, plan.report
    summary: dict[str, Any] = {"output_dir": str(plan.output_dir), "outcome": "forge", "architecture": "prefix"}
    if pair is not None:
        summary["pair"] = pair
    counts = report.parameter_counts()
    if tensors:
        summary["parameters"] = counts
        summary["tensors"] = {
            "total": len(plan.specs), "new": {part: names for part, names in report.new.items() if names},
            "grown": report.grown, "unused_checkpoint_tensors": {p: len(n) for p, n in report.unused.items() if n},
        }
    else:
        summary["parameters"] = {"total": counts["total"]}
    parts = {role: {**part_summary(plan.part(role)), "built_with": "pytorch"} for role in ("encoder", "decoder")}
    summary.update(
        encoder=parts["encoder"],
        decoder=parts["decoder"],
        backend=plan.recipe.backend,
        seed=plan.recipe.seed,
        prefix={
            "projector": plan.recipe.prefix.projector, "vision_feature_layer": plan.config.vision_feature_layer,
            "vision_feature_select_strategy": plan.select_strategy, "image_seq_length": plan.image_seq_length,
            "num_additional_image_tokens": plan.leading_tokens, "chat_template": plan.chat_template_source,
            "dtype": dtype_name(plan.dtype),
        },
        token_ids={"policy": plan.recipe.token_policy.kind, "image": tokens.image, "pad": tokens.pad, "eos": tokens.eos,
                   "bos": tokens.bos, "added_tokens": list(tokens.added), "old_vocab_size": tokens.old_vocab,
                   "vocab_size": tokens.vocab_size},
        weight_layouts=[{"layout": lp.layout.name, "files": list(lp.files), "bytes": lp.bytes} for lp in plan.layouts],
        overwrite=bool(plan.recipe.output.overwrite and plan.output_dir.is_dir()),
        needs_compat=False,
        needs_torch_compat=False,
        download_bytes=plan.download_bytes,
        read_bytes=plan.encoder.read_bytes + plan.decoder.read_bytes,
        write_bytes=plan.write_bytes,
    )
    return summary


def render_prefix_text(summary: dict[str, Any]) -> str:
    """One prefix pair's plan as a few lines of text."""
    counts, ids, prefix = summary["parameters"], summary["token_ids"], summary["prefix"]
    lines = [
        f"{summary.get('pair', 'plan')}: FORGE prefix (LlavaForConditionalGeneration)"
        f"{' (replacing the artifact there)' if summary['overwrite'] else ''} -> {summary['output_dir']}",
        part_line("encoder", summary["encoder"]),
        part_line("decoder", summary["decoder"]),
        f"  projector {prefix['projector']}, vision feature layer {prefix['vision_feature_layer']}, strategy "
        f"{prefix['vision_feature_select_strategy']}: {prefix['image_seq_length']} image tokens per image; chat template: "
        f"{prefix['chat_template']}; dtype {prefix['dtype']}",
    ]
    if "tensors" in summary:
        grown = summary["tensors"]["grown"]
        lines.append(
            f"  parameters: {counts['total']:,} total, {counts['new']:,} new (encoder {counts['encoder']:,}, projector "
            f"{counts['projector']:,}, decoder {counts['decoder']:,}); grown: "
            + (", ".join(f"{n} {a:,}->{b:,}" for n, (a, b) in grown.items()) or "none"))
    else:
        lines.append(f"  parameters: {counts['total']:,} total")
    lines.append(
        f"  token ids: image {ids['image']}, pad {ids['pad']}, eos {ids['eos']}, bos {ids['bos']}, vocabulary "
        f"{ids['old_vocab_size']:,} -> {ids['vocab_size']:,}"
        + (f", adds {', '.join(map(repr, ids['added_tokens']))}" if ids["added_tokens"] else ""))
    for layout in summary["weight_layouts"]:
        lines.append(f"  writes {layout['layout']} weights: {', '.join(layout['files'])} ({human_bytes(layout['bytes'])})")
    lines.append(f"  download {human_bytes(summary['download_bytes'])}, write {human_bytes(summary['write_bytes'])}")
    return "\n".join(lines)
