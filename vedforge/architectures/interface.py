"""The one interface the forge pipeline uses: what differs between architectures.

The pipeline (:mod:`vedforge.pipeline`) plans, fetches, loads, assembles, writes and publishes
every forge the same way; an :class:`Architecture` supplies the parts that differ: its plan, how a
part's tensors are read, how new and grown tensors are assembled, which config objects are saved,
the manifest's architecture fields, the model card, and its section of ``vedforge plan``.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from vedforge.recipe.typed import Recipe


class Architecture(ABC):
    """One way of joining a vision encoder and a text decoder (one folder under ``architectures/``)."""

    #: the ``architecture`` config option that selects it
    name: str

    @abstractmethod
    def plan(self, recipe: Recipe) -> Any:
        """Everything a forge of ``recipe`` decides without reading a weight. The plan has at least
        ``recipe``, ``output_dir``, ``outcome``, ``part(role)`` (:class:`~vedforge.architectures.parts.PartPlan`),
        ``layouts``, ``write_bytes`` and ``download_bytes``.

        Raises:
            VedforgeError: every problem that needs no weights to be found.
        """

    @abstractmethod
    def fetch(self, plan: Any) -> dict[str, Any]:
        """The plan's sources (by role) with the weights this architecture reads on disk."""

    @abstractmethod
    def load_message(self, plan: Any) -> str:
        """What the load stage does, for the log."""

    @abstractmethod
    def part_reader(self, plan: Any, role: str, source: Any) -> tuple[str, Callable[[], Any]]:
        """The form of the state a part's reader returns (states of different forms never share a
        cache entry) and the function that reads, or draws, the part's tensors. The pipeline keys
        a sweep's shared states by that form and by the part's checkpoint and recipe."""

    #: what the assemble stage does, for the log
    assemble_message: str

    @abstractmethod
    def assemble(self, plan: Any, states: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
        """The combined model's tensors: a report of where each came from, and per weight layout
        (``layout.tensors``) the tensors it writes."""

    def weights_job(self, plan: Any) -> Optional[dict[str, Any]]:
        """The weights ``plan`` writes as plain JSON data, from which :meth:`write_weights_job`
        writes the same bytes without the plan; None when this plan's weights need the plan
        itself. A forge keeps the job so the next forge of the same inputs can start writing
        while it plans (:mod:`vedforge.pipeline.early_weights`)."""
        return None

    def write_weights_job(self, job: Mapping[str, Any], directory: Path, cancel: threading.Event) -> dict[Path, str]:
        """Write the weights files of a :meth:`weights_job` into ``directory``; ``{path: sha256}``.

        Raises:
            WriteCancelled: ``cancel`` was set.
            VedforgeError: the checkpoints no longer fit the job.
        """
        raise NotImplementedError(f"architecture={self.name} keeps no weights jobs")

    @abstractmethod
    def saved_objects(self, plan: Any) -> tuple[str, tuple[Any, ...]]:
        """What to log, and the objects whose ``save_pretrained`` writes the configs, processor
        and tokenizer."""

    @abstractmethod
    def extra_versions(self, plan: Any) -> dict[str, str]:
        """Versions of packages beyond the common set that decide this forge's output."""

    @abstractmethod
    def initialisation(self, plan: Any, role: str) -> Optional[dict[str, Any]]:
        """How a random-weight part is drawn, for the manifest; None for pretrained weights."""

    @abstractmethod
    def manifest_fields(self, plan: Any, sources: Mapping[str, Any], assembly: Any) -> dict[str, Any]:
        """The manifest's fields after the common head (:func:`vedforge.pipeline.manifest.manifest_head`);
        the pipeline adds the file table."""

    @abstractmethod
    def render_card(self, manifest: Mapping[str, Any], recipe_yaml: str) -> str:
        """The model card (README.md) of the artifact."""

    @abstractmethod
    def summary(self, plan: Any, *, pair: Optional[str], tensors: bool) -> dict[str, Any]:
        """The plan as plain data (``vedforge plan --json``); without ``tensors``, only the total
        parameter count, so nothing is traced."""

    @abstractmethod
    def render_text(self, summary: Mapping[str, Any]) -> str:
        """One pair's planned forge (a :meth:`summary`) as a few lines of text."""
