"""Fixes that let stock transformers 4.x run and train every pairing vedforge forges.

Gaps in transformers' Flax vision-encoder-decoder support:

* ``FlaxVisionEncoderDecoderModel.decode`` calls the decoder with positional arguments,
  and the fourth positional parameter of BERT/RoBERTa-family causal LMs is
  ``token_type_ids``, not ``encoder_hidden_states``: ``generate()`` then fails with
  "cannot reshape array". :class:`FlaxVisionEncoderDecoderModule` calls it by keyword.
* CLIP's vision tower (``CLIPVisionConfig``) is not registered with ``FlaxAutoModel``,
  so a model whose encoder is a CLIP vision tower cannot be built or reloaded.
* RoBERTa-family decoders number their positions from ``pad_token_id + 1`` (PyTorch's
  ``create_position_ids_from_input_ids``, and how they were pretrained), but the Flax
  wrapper numbers them from 0, so the stock Flax model computes something other than the
  same weights in PyTorch. :class:`FlaxVisionEncoderDecoderModule` shifts them.
* BEiT's stochastic depth (``drop_path_rate > 0``, 0.1 in the released BEiT configs) asks
  for a PRNG stream named "droppath" in training, but the vision-encoder-decoder model
  (``model(..., dropout_rng=rng, train=True)``) and most training loops supply only
  "dropout", so the first training step fails with ``InvalidRngError``. With the fix, the
  drop path draws from "dropout" when no "droppath" stream is given.

Use :class:`FlaxVisionEncoderDecoderModel` from this module in place of transformers'
class, or call :func:`install` once to fix transformers' own class in this process, or run
an unchanged script with every fix installed: ``python -m vedforge.compat SCRIPT [ARGS...]``.

It needs vedforge's Flax profile (transformers 4.57 with jax and flax): under transformers 5, which
has no Flax classes, importing it raises :class:`vedforge.core.errors.FlaxUnavailableError` (an
``ImportError``) whose message says how to install that profile.
"""

from __future__ import annotations

from vedforge.core.frameworks import flax_classes_available, flax_missing_reason

if not flax_classes_available():
    from vedforge.core.errors import FlaxUnavailableError

    raise FlaxUnavailableError(flax_missing_reason("vedforge.compat (and python -m vedforge.compat)"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import flax.linen as nn  # noqa: E402
from transformers import CLIPVisionConfig, FlaxAutoModel, FlaxCLIPVisionModel  # noqa: E402
from transformers import FlaxVisionEncoderDecoderModel as _StockModel  # noqa: E402
from transformers.models.auto.modeling_flax_auto import FLAX_MODEL_MAPPING  # noqa: E402
from transformers.models.beit import modeling_flax_beit  # noqa: E402
from transformers.models.vision_encoder_decoder.modeling_flax_vision_encoder_decoder import (
    FlaxVisionEncoderDecoderModule as _StockModule,
)

from vedforge.families.registry import FAMILIES  # noqa: E402

# Decoders whose position embeddings start after the padding index.
_PADDING_OFFSET_TYPES = tuple(t for t, f in FAMILIES.items() if f.position_offset)


class FlaxVisionEncoderDecoderModule(_StockModule):
    """The stock module, with the decoder always called by keyword and RoBERTa-family positions
    numbered as in PyTorch."""

    def _position_offset(self) -> int:
        decoder = self.config.decoder
        return int(decoder.pad_token_id) + 1 if decoder.model_type in _PADDING_OFFSET_TYPES else 0

    def __call__(self, pixel_values, decoder_input_ids, decoder_attention_mask, decoder_position_ids, *args, **kwargs):
        return super().__call__(pixel_values, decoder_input_ids, decoder_attention_mask,
                                decoder_position_ids + self._position_offset(), *args, **kwargs)

    def _get_decoder_module(self):
        decoder = self.decoder
        offset = self._position_offset()

        def call_by_keyword(input_ids, attention_mask=None, position_ids=None, encoder_hidden_states=None, **kwargs):
            return decoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids + offset if position_ids is not None else None,
                encoder_hidden_states=encoder_hidden_states,
                **kwargs,
            )

        return call_by_keyword


class FlaxVisionEncoderDecoderModel(_StockModel):
    """transformers' ``FlaxVisionEncoderDecoderModel`` with the fixed module; a drop-in replacement."""

    module_class = FlaxVisionEncoderDecoderModule

    def __init__(self, config, *args, **kwargs):
        register_clip_vision()
        fix_beit_drop_path()
        super().__init__(config, *args, **kwargs)


class FlaxBeitDropPath(modeling_flax_beit.FlaxBeitDropPath):
    """BEiT's drop path, drawing from the "dropout" stream when no "droppath" stream is given.

    ``make_rng`` folds in the module's path, so the key differs from every dropout layer's.
    When a "droppath" stream is given (``FlaxBeitModel`` itself passes one), nothing changes.
    """

    @nn.compact
    def __call__(self, inputs, deterministic=True):
        if self.rate == 0.0 or deterministic:
            return inputs
        keep_prob = 1.0 - self.rate
        shape = (inputs.shape[0],) + (1,) * (inputs.ndim - 1)
        rng = self.make_rng("droppath" if self.has_rng("droppath") else "dropout")
        binary = jnp.floor(keep_prob + jax.random.uniform(rng, shape=shape, dtype=inputs.dtype))
        return inputs / keep_prob * binary


def fix_beit_drop_path() -> None:
    """Make BEiT layers built from now on use :class:`FlaxBeitDropPath` (they look the class up
    by name in transformers' module when they are set up)."""
    modeling_flax_beit.FlaxBeitDropPath = FlaxBeitDropPath


def register_clip_vision() -> None:
    """Let ``FlaxAutoModel`` build CLIP's vision tower from a ``CLIPVisionConfig``."""
    if CLIPVisionConfig not in FLAX_MODEL_MAPPING:
        FlaxAutoModel.register(CLIPVisionConfig, FlaxCLIPVisionModel)


def install() -> None:
    """Apply these fixes to transformers' own classes for the rest of this process."""
    register_clip_vision()
    fix_beit_drop_path()
    _StockModel.module_class = FlaxVisionEncoderDecoderModule
