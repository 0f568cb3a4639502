"""Builders for test checkpoints that need more than the embedded tiny configs."""

from __future__ import annotations

import shutil
from pathlib import Path


def resized_checkpoint(checkpoints: dict[str, Path], name: str, dest: Path, **config_changes) -> Path:
    """A copy of tiny checkpoint ``name`` whose config is changed and whose weights are re-initialised to fit."""
    from transformers import AutoConfig

    from vedforge.loading import checkpoint_class

    config = AutoConfig.from_pretrained(checkpoints[name])
    for key, value in config_changes.items():
        setattr(config, key, value)
    model = checkpoint_class(config, "decoder" if name in ("gpt2", "bert", "roberta", "bart") else "encoder")(config, seed=3)
    model.save_pretrained(dest)
    for item in checkpoints[name].iterdir():
        if item.name not in ("config.json", "flax_model.msgpack", "generation_config.json"):
            shutil.copy(item, dest / item.name)
    return dest
