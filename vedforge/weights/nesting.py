"""Where a model's tensors sit inside a checkpoint that holds more than that model.

A vision tower is stored bare (``embeddings...``), under its task head's base model
(``vit.embeddings...`` in a ViTForImageClassification checkpoint), or inside a larger model
(``vision_tower.`` in a LLaVA checkpoint, ``encoder.`` in a VisionEncoderDecoderModel one); a
language model likewise (``language_model.model.`` in a LLaVA checkpoint). Rather than a table of
such places, the place is found from the names themselves: the prefix under which most of the
model's own tensor names appear whole.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Mapping, Sequence, TypeVar

T = TypeVar("T")


def nesting_prefix(own: Iterable[Sequence[str]], stored: Iterable[str]) -> tuple[int, str]:
    """The form and prefix under which a model's tensors sit in ``stored``.

    Args:
        own: for each of the model's tensors, the names it may have relative to its place, in
            order of preference (``model.layers.0.x`` then ``layers.0.x``); every tensor lists
            the same number of forms.
        stored: the checkpoint's tensor names.

    Returns:
        ``(form, prefix)``: stored names are ``prefix + own[form]``. ``(0, "")`` when nothing matches.
    """
    placed: dict[str, list[str]] = {}
    for name in stored:
        pieces = name.split(".")
        for cut in range(len(pieces)):
            placed.setdefault(".".join(pieces[cut:]), []).append(".".join(pieces[:cut]) + ("." if cut else ""))
    votes: Counter[tuple[int, str]] = Counter()
    for forms in own:
        for form, name in enumerate(forms):
            for prefix in placed.get(name, ()):
                votes[(form, prefix)] += 1
    if not votes:
        return 0, ""
    # Most names matched wins; ties go to the preferred form and then the shortest prefix.
    return min(votes, key=lambda key: (-votes[key], key[0], len(key[1])))


def own_tensors(own: Iterable[str], stored: Mapping[str, T]) -> tuple[str, dict[str, T]]:
    """A model's tensors in a checkpoint that may hold more (``own``: the model's own names), by
    those names: ``(prefix, tensors)``, the tensors under any other prefix left out."""
    _, prefix = nesting_prefix([(name,) for name in own], stored)
    return prefix, {name[len(prefix):]: t for name, t in stored.items() if name.startswith(prefix)}
