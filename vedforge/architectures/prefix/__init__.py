"""``architecture=prefix``: a LLaVA-style ``LlavaForConditionalGeneration`` (PyTorch).

A vision tower's patch features go through a new projector and replace the ``<image>`` tokens of
a decoder-only LM's input. Its modules: ``plan`` (tower and LM checks, LlavaConfig, processor),
``tokens`` (the added ``<image>`` and pad tokens, the chat template), ``weights`` (reading the
checkpoints lazily), ``tensors`` (the projector and the grown tables), ``stages``, ``report``
and ``card``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from vedforge.architectures.interface import Architecture


class Prefix(Architecture):
    name = "prefix"
    assemble_message = "Adding the projector and the image token"

    def plan(self, recipe: Any) -> Any:
        from vedforge.architectures.prefix.plan import plan_prefix

        return plan_prefix(recipe)

    def fetch(self, plan: Any) -> dict[str, Any]:
        from vedforge.architectures.prefix.plan import fetch_prefix_sources

        return fetch_prefix_sources(plan)

    def load_message(self, plan: Any) -> str:
        from vedforge.architectures.prefix.stages import load_message

        return load_message(plan)

    def part_reader(self, plan: Any, role: str, source: Any) -> tuple[str, Callable[[], Any]]:
        from vedforge.architectures.prefix.stages import part_reader

        return part_reader(plan, role, source)

    def assemble(self, plan: Any, states: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
        from vedforge.architectures.prefix.stages import assemble_prefix_weights

        return assemble_prefix_weights(plan, states)

    def weights_job(self, plan: Any) -> Optional[dict[str, Any]]:
        from vedforge.architectures.prefix.stages import weights_job

        return weights_job(plan)

    def write_weights_job(self, job: Mapping[str, Any], directory: Path, cancel: threading.Event) -> dict[Path, str]:
        from vedforge.architectures.prefix.stages import write_weights_job

        return write_weights_job(dict(job), directory, cancel)

    def saved_objects(self, plan: Any) -> tuple[str, tuple[Any, ...]]:
        # A LlavaProcessor saves its tokenizer itself.
        return ("Writing the config, processor (tokenizer, image processor, chat template) and model card",
                (plan.config, plan.generation, plan.processor))

    def extra_versions(self, plan: Any) -> dict[str, str]:
        from vedforge.architectures.prefix.stages import extra_versions

        return extra_versions(plan)

    def initialisation(self, plan: Any, role: str) -> Optional[dict[str, Any]]:
        from vedforge.architectures.prefix.stages import initialisation

        return initialisation(plan, role)

    def manifest_fields(self, plan: Any, sources: Mapping[str, Any], assembly: Any) -> dict[str, Any]:
        from vedforge.architectures.prefix.stages import manifest_fields

        return manifest_fields(plan, sources, assembly)

    def render_card(self, manifest: Mapping[str, Any], recipe_yaml: str) -> str:
        from vedforge.architectures.prefix.card import render_prefix_card

        return render_prefix_card(manifest=manifest, recipe_yaml=recipe_yaml)

    def summary(self, plan: Any, *, pair: Optional[str], tensors: bool) -> dict[str, Any]:
        from vedforge.architectures.prefix.report import prefix_summary

        return prefix_summary(plan, pair=pair, tensors=tensors)

    def render_text(self, summary: Mapping[str, Any]) -> str:
        from vedforge.architectures.prefix.report import render_prefix_text

        return render_prefix_text(summary)


ARCHITECTURE = Prefix()
