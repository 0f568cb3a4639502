"""What a bare ``vedforge`` forges where transformers has no Flax classes.

The default ``backend=auto`` chooses ``pt`` there anyway (:mod:`vedforge.pipeline.choice`); for
a command line that only forges the embedded default (a bare ``vedforge``, or with ``output.*``,
``hub.*``, ``seed``, ``token_policy`` overrides) this names ``backend=pt`` up front, so the
command line keeps torch in, and says so in one log line; so does ``vedforge plan``. An explicit
``backend=flax`` is refused at plan time with the command that installs the Flax profile.
"""

from __future__ import annotations

# What makes a command line more than "forge the embedded default": a recipe, a part, an
# architecture or backend, or a sweep.
_CHOICES = ("encoder", "decoder", "backend", "architecture", "recipe")


def default_backend_override(argv: list[str]) -> str | None:
    """``backend=pt`` when ``argv`` forges the embedded default (a bare ``vedforge``, perhaps with
    ``output.*``, ``hub.*``, ``seed`` or ``token_policy``) and this environment has no Flax classes
    (transformers 5, or the torch profile without jax): the default pair is then forged as a
    PyTorch model. Any other command line leaves ``backend=auto`` to choose, and an explicit
    ``backend=flax`` is refused at plan time with the install command of the Flax profile."""
    if any(arg in ("-m", "--multirun") or arg.startswith("-") for arg in argv):
        return None
    for arg in argv:
        key = arg.lstrip("+~").partition("=")[0].strip()
        if key.split(".")[0] in _CHOICES:
            return None
    from vedforge.core.frameworks import flax_classes_available

    return None if flax_classes_available() else "backend=pt"


def default_backend_note(doing: str) -> str:
    """The log line saying the embedded default is forged (or planned) with backend=pt, and why."""
    from vedforge.core.frameworks import FLAX_INSTALL, transformers_version

    return (f"No Flax classes here (transformers {transformers_version()}): {doing} the embedded default as a "
            f"PyTorch model (backend=pt, model.safetensors). For the Flax model: {FLAX_INSTALL}")
