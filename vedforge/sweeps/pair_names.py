"""Directory names for the pairs of a sweep: readable, safe in any shell, and never shared.

A name is the encoder and decoder options, then every other override of the job that changes
the recipe, joined by ``__``: ``vit__gpt2__seed=1``. Overrides are read with Hydra's own
parser, so ``+key=v`` and ``key=v`` (the same recipe) name the same pair and a value is written
in one canonical form whatever spacing the command line used.

Only letters, digits and ``. : = -`` (and ``_`` inside a part) appear as they are. A part with
anything else (``~`` for a deletion, quotes, brackets, ``/``, spaces, ``@package``) is written with
those characters replaced by ``_`` and the whole name gets ``@`` and a hash of the exact overrides,
so two override sets that read alike after the replacement still get different names. Plain names
never contain ``@``, and they split back into their parts at ``__`` (no part holds ``__`` or starts
or ends with ``_``), so a plain name cannot equal another plain name or a hashed one.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Iterable

#: A part written as it is: safe characters, single underscores only between them.
_PLAIN_PART = re.compile(r"[A-Za-z0-9.:=\-]+(?:_[A-Za-z0-9.:=\-]+)*")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9.:=\-]+")
_SEPARATOR = "__"
_HASH_MARK = "@"
_HASH_CHARS = 12
# Well under the 255 bytes a directory name may have, leaving room for Hydra's and the
# staging machinery's own suffixes.
_MAX_NAME = 200

# The recipe option and where/how the artifact is written do not name a pair.
_NOT_NAMING_GROUPS = frozenset({"encoder", "decoder", "recipe"})
_NOT_NAMING_PREFIXES = ("output.", "hub.")


def _canonical(line: str) -> tuple[str, str] | None:
    """``(identity, display)`` of one override line, or None when it does not name a pair.

    The identity is Hydra's canonical text of the override (``+`` and ``++`` dropped: they compose
    the same recipe as a plain assignment). The display is the identity with the backslash Hydra
    puts before ``:`` removed, the one escape a readable part keeps.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        override = OverridesParser.create().parse_override(line)
    except Exception:  # not an override Hydra would accept: name it by its text
        key = line.lstrip("+~").partition("=")[0]
        identity = line.lstrip("+") if not line.startswith("~") else line
    else:
        key = override.key_or_group
        if override.package is not None:
            key = f"{key}@{override.package}"
        try:
            value = None if override.value() is None and override.is_delete() else override.get_value_element_as_str()
        except Exception:  # a sweep rather than a value (only when a config is printed, not run)
            value = line.partition("=")[2]
        prefix = "~" if override.is_delete() else ""
        identity = f"{prefix}{key}" if value is None else f"{prefix}{key}={value}"
    if key in _NOT_NAMING_GROUPS or key.startswith(_NOT_NAMING_PREFIXES) or key in ("output", "hub"):
        return None
    return identity, identity.replace("\\:", ":")


def _sanitised(part: str) -> str:
    return _UNSAFE_RUN.sub("_", part).strip("_") or "_"


def pair_dirname(encoder: str, decoder: str, overrides: Iterable[str] = ()) -> str:
    """The directory name of one pair of a sweep, from its encoder and decoder options and the
    job's overrides (``hydra.overrides.task``), in any order."""
    items = sorted(c for c in (_canonical(str(line)) for line in overrides) if c is not None)
    parts = [str(encoder), str(decoder), *(display for _, display in items)]
    name = _SEPARATOR.join(parts)
    if all(_PLAIN_PART.fullmatch(part) for part in parts) and len(name.encode()) <= _MAX_NAME:
        return name
    identity = json.dumps([str(encoder), str(decoder), [ident for ident, _ in items]])
    digest = hashlib.sha256(identity.encode()).hexdigest()[:_HASH_CHARS]
    readable = _SEPARATOR.join(_sanitised(part) for part in parts)
    # The readable part is ASCII after sanitising, so characters are bytes here.
    readable = readable[: _MAX_NAME - len(_HASH_MARK) - _HASH_CHARS].rstrip("_")
    return f"{readable}{_HASH_MARK}{digest}"
