"""The tensors a checkpoint holds, from its config alone.

A checkpoint written by ``save_pretrained`` holds exactly the parameter tree its class builds
from its config, so the plan learns every checkpoint tensor's name, shape and dtype by tracing
that class with ``jax.eval_shape`` instead of opening the weights file. Tracing costs time in
proportion to depth and every layer has the same parameters, so the class is traced with one
layer and with two, and layer 0 is repeated for the real depth.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

from vedforge.families.registry import layer_attributes

Path_ = tuple[str, ...]
Shapes = dict[Path_, Any]


def _get(config: Any, slot: tuple[str, ...]) -> Any:
    for name in slot[:-1]:
        config = getattr(config, name)
    return getattr(config, slot[-1])


def _set(config: Any, slot: tuple[str, ...], value: int) -> None:
    for name in slot[:-1]:
        config = getattr(config, name)
    setattr(config, slot[-1], value)


def layered_shapes(trace: Callable[[Any], Shapes], config: Any, slots: list[tuple[str, ...]]) -> Shapes:
    """``trace(config)``, computed from traces of shallow copies of ``config``.

    ``slots`` are the attribute paths of the config's layer counts (``("n_layer",)``,
    ``("vision_config", "num_hidden_layers")``). With every slot at one layer, and then each
    slot in turn at two, the paths the second layer adds show where that slot keeps its layers.
    """
    depths = {slot: _get(config, slot) for slot in slots}
    if not slots or any(not isinstance(d, int) or d < 2 for d in depths.values()):
        return trace(config)
    shallow_config = copy.deepcopy(config)
    for slot in slots:
        _set(shallow_config, slot, 1)
    shallow = trace(shallow_config)
    layer_paths: dict[Path_, tuple[int, int]] = {}  # layer-0 path -> (index of the layer number, depth)
    for slot in slots:
        deeper_config = copy.deepcopy(shallow_config)
        _set(deeper_config, slot, 2)
        deeper = trace(deeper_config)
        added = deeper.keys() - shallow.keys()
        for path in added:
            at = [i for i, key in enumerate(path) if key == "1" and path[:i] + ("0",) + path[i + 1:] in shallow]
            if len(at) != 1:
                return trace(config)
            layer_paths[path[: at[0]] + ("0",) + path[at[0] + 1:]] = (at[0], depths[slot])
        if len(added) != len(deeper) - len(shallow):
            return trace(config)
    full: Shapes = {}
    for path, spec in shallow.items():
        if path not in layer_paths:
            full[path] = spec
            continue
        at, depth = layer_paths[path]
        for layer in range(depth):
            full[path[:at] + (str(layer),) + path[at + 1:]] = spec
    return full


def checkpoint_shapes(checkpoint_config: Any, role: str) -> Shapes:
    """Every tensor a Flax checkpoint saved from ``checkpoint_config``'s class holds (as
    :func:`vedforge.sources.loading.load_part_state` reads it), without reading it."""
    from flax.traverse_util import flatten_dict

    from vedforge.compat import register_clip_vision
    from vedforge.sources.loading import checkpoint_class

    register_clip_vision()
    cls = checkpoint_class(checkpoint_config, role)

    def trace(config: Any) -> Shapes:
        return flatten_dict(cls(config, _do_init=False).params_shape_tree)

    return layered_shapes(trace, checkpoint_config, layer_attributes(checkpoint_config))
