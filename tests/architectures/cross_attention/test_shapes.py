"""A checkpoint's tensors, from its config alone, are the ones its weights file holds."""

from __future__ import annotations

import pytest

from conftest import FLAX, FLAX_ONLY_REASON

# Flax-only: checkpoints saved by transformers' Flax classes, or the Flax model itself.
if not FLAX:
    pytest.skip(FLAX_ONLY_REASON, allow_module_level=True)


from conftest import DECODERS, ENCODERS
from vedforge.weights.checkpoint import read_state
from vedforge.architectures.cross_attention.shapes import checkpoint_shapes, layered_shapes


@pytest.mark.parametrize("name", ENCODERS + DECODERS)
def test_traced_shapes_are_what_the_checkpoint_file_holds(tiny_checkpoints, name):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_checkpoints[name])
    traced = checkpoint_shapes(config, "encoder" if name in ENCODERS else "decoder")
    state = read_state(tiny_checkpoints[name], pt_converter=None)
    assert {path: (tuple(t.shape), str(t.dtype)) for path, t in state.items()} == \
        {path: (tuple(s.shape), str(s.dtype)) for path, s in traced.items()}


@pytest.mark.parametrize("name,role,depths", [
    ("gpt2", "decoder", {"n_layer": 5}),
    ("bart", "decoder", {"encoder_layers": 3, "decoder_layers": 4}),
    ("vit", "encoder", {"num_hidden_layers": 4}),
])
def test_shapes_traced_from_one_and_two_layers_equal_the_full_trace(tiny_checkpoints, name, role, depths):
    from flax.traverse_util import flatten_dict
    from transformers import AutoConfig

    from vedforge.families.registry import layer_attributes
    from vedforge.sources.loading import checkpoint_class

    config = AutoConfig.from_pretrained(tiny_checkpoints[name])
    for key, value in depths.items():
        setattr(config, key, value)
    cls = checkpoint_class(config, role)
    traces = []

    def trace(c):
        traces.append(c)
        return flatten_dict(cls(c, _do_init=False).params_shape_tree)

    layered = layered_shapes(trace, config, layer_attributes(config))
    assert len(traces) == 1 + len(layer_attributes(config))  # shallow copies only, never the full depth
    full = flatten_dict(cls(config, _do_init=False).params_shape_tree)
    assert {p: tuple(s.shape) for p, s in layered.items()} == {p: tuple(s.shape) for p, s in full.items()}


def test_torch_compat_fixes_the_families_that_say_they_need_it():
    pytest.importorskip("torch")
    from vedforge import torch_compat
    from vedforge.families.registry import FAMILIES

    # torch_compat must import without vedforge's other modules, so it keeps its own list.
    assert set(torch_compat._COMPAT_MODEL_TYPES) == {t for t, f in FAMILIES.items() if f.torch_compat_fix}
