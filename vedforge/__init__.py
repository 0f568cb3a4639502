"""vedforge: declarative, reproducible build recipes for vision-encoder-decoder models."""

from __future__ import annotations

__version__ = "0.1.0"

from vedforge.core.errors import VedforgeError  # noqa: E402  (cheap; no jax or transformers)


def forge(cfg, **kwargs):
    """Forge the model described by a composed recipe; see :func:`vedforge.pipeline.runner.forge`."""
    from vedforge.pipeline.runner import forge as _forge

    return _forge(cfg, **kwargs)


def plan(cfg):
    """What forging a composed recipe would do, without reading a weight; see :func:`vedforge.pipeline.plan.build_plan`."""
    from vedforge.pipeline.plan import build_plan

    return build_plan(cfg)


__all__ = ["VedforgeError", "__version__", "forge", "plan"]
