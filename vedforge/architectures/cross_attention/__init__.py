"""``architecture=cross_attention``: transformers' ``VisionEncoderDecoderModel`` (Flax or PyTorch).

The decoder gains cross-attention layers that attend to the encoder's output; the encoder and
decoder tensors are the checkpoints', the cross-attention (and an ``enc_to_dec_proj`` when the
widths differ) are new. Its modules: ``plan`` (configs, token ids, tensors to write), ``shapes``
and ``torch_encoder`` (what each checkpoint holds), ``assembly`` (copy, resize, grow, create),
``stages`` (read and assemble), ``manifest``, ``report`` and ``card``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from vedforge.architectures.interface import Architecture


class CrossAttention(Architecture):
    name = "cross_attention"
    assemble_message = "Adding cross-attention"

    def plan(self, recipe: Any) -> Any:
        from vedforge.architectures.cross_attention.plan import plan_cross_attention

        return plan_cross_attention(recipe)

    def fetch(self, plan: Any) -> dict[str, Any]:
        from vedforge.architectures.cross_attention.plan import fetch_sources

        return fetch_sources(plan)

    def load_message(self, plan: Any) -> str:
        from vedforge.architectures.cross_attention.stages import load_message

        return load_message(plan)

    def part_reader(self, plan: Any, role: str, source: Any) -> tuple[str, Callable[[], Any]]:
        from vedforge.architectures.cross_attention.stages import part_reader

        return part_reader(plan, role, source)

    def assemble(self, plan: Any, states: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
        from vedforge.architectures.cross_attention.stages import assemble_weights

        return assemble_weights(plan, states)

    def weights_job(self, plan: Any) -> Optional[dict[str, Any]]:
        from vedforge.architectures.cross_attention.stages import weights_job

        return weights_job(plan)

    def write_weights_job(self, job: Mapping[str, Any], directory: Path, cancel: threading.Event) -> dict[Path, str]:
        from vedforge.architectures.cross_attention.stages import write_weights_job

        return write_weights_job(job, directory, cancel)

    def saved_objects(self, plan: Any) -> tuple[str, tuple[Any, ...]]:
        return ("Writing configs, processor, tokenizer and model card",
                (plan.config, plan.generation, plan.processor, plan.tokenizer))

    def extra_versions(self, plan: Any) -> dict[str, str]:
        """torch checks the PyTorch names (and builds the PyTorch-only encoders) when the forge writes
        PyTorch weights, so its version is recorded then, as a conversion records it."""
        if not plan.recipe.writes_pytorch:
            return {}
        import torch

        return {"torch": torch.__version__}

    def initialisation(self, plan: Any, role: str) -> Optional[dict[str, Any]]:
        from vedforge.architectures.cross_attention.manifest import initialisation

        return initialisation(plan, role)

    def manifest_fields(self, plan: Any, sources: Mapping[str, Any], assembly: Any) -> dict[str, Any]:
        from vedforge.architectures.cross_attention.manifest import manifest_fields

        return manifest_fields(plan, sources, assembly)

    def render_card(self, manifest: Mapping[str, Any], recipe_yaml: str) -> str:
        from vedforge.architectures.cross_attention.card import render_model_card

        return render_model_card(manifest=manifest, recipe_yaml=recipe_yaml)

    def summary(self, plan: Any, *, pair: Optional[str], tensors: bool) -> dict[str, Any]:
        from vedforge.architectures.cross_attention.report import summary

        return summary(plan, pair=pair, tensors=tensors)

    def render_text(self, summary: Mapping[str, Any]) -> str:
        from vedforge.architectures.cross_attention.report import render_text

        return render_text(summary)


ARCHITECTURE = CrossAttention()
