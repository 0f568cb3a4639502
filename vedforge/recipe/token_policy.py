"""Choose the forged model's special token ids and make config, generation config and tokenizer agree.

Policies:

* ``auto``: decoder start = the decoder's ``decoder_start_token_id``, else its ``bos_token_id``
  (config, then tokenizer), else its family's conventional start (``[CLS]`` for BERT);
  pad = ``pad_token_id``, else eos; eos = ``eos_token_id``, else the family's conventional end.
* ``explicit``: all three given in the recipe, as ids or token strings.
* ``add_pad``: as ``auto``, but a tokenizer without a pad token of its own gets a new one
  and the decoder's vocabulary grows by one row, instead of padding with eos.

Any token given in the recipe wins over what ``auto`` would choose.

Whatever the policy, the saved tokenizer, ``config`` and ``generation_config`` then name the
same bos, eos and pad (and config and generation config the same decoder start): the
tokenizer's special tokens are set to the chosen ids, because training clients read them from
the tokenizer (``caption + tokenizer.eos_token``) and ``Seq2SeqTrainer`` rewrites the model's
ids, with a warning, wherever they differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from vedforge.core.errors import TokenPolicyError
from vedforge.families.registry import DecoderFamily
from vedforge.recipe.schema import option_value

DEFAULT_PAD = "<pad>"


@dataclass(frozen=True)
class TokenIds:
    """The resolved special token ids, and the vocabulary change the policy made."""

    decoder_start: int
    pad: int
    eos: Optional[int]
    bos: Optional[int]
    added_pad: Optional[str] = None
    vocab_size: int = 0


def _lookup(token: Any, field: str, tokenizer: Any, vocab_size: int) -> int:
    """An id for a recipe token given as an int id or a token string."""
    if isinstance(token, bool):
        raise TokenPolicyError(f"token_policy.{field}={token!r} is neither a token id nor a token string.")
    if isinstance(token, int) or (isinstance(token, str) and token.strip().lstrip("-").isdigit()):
        value = int(token)
        if not 0 <= value < vocab_size:
            raise TokenPolicyError(
                f"token_policy.{field}={value} is out of range: the decoder's vocabulary has ids 0 to {vocab_size - 1}."
            )
        return value
    if isinstance(token, str):
        vocab = tokenizer.get_vocab()
        if token not in vocab:
            specials = ", ".join(repr(t) for t in tokenizer.all_special_tokens) or "none"
            raise TokenPolicyError(
                f"token_policy.{field}={token!r} is not in the decoder tokenizer's vocabulary. "
                f"Its special tokens are: {specials}; or give a token id."
            )
        return int(vocab[token])
    raise TokenPolicyError(f"token_policy.{field}={token!r} is neither a token id nor a token string.")


def _first(*candidates: Optional[int]) -> Optional[int]:
    return next((c for c in candidates if c is not None), None)


def _conventional(token: Optional[str], tokenizer: Any) -> Optional[int]:
    if token is None:
        return None
    return tokenizer.get_vocab().get(token)


def resolve_token_ids(policy: Any, tokenizer: Any, decoder_config: Any, family: DecoderFamily, decoder_name: str) -> TokenIds:
    """Resolve the ids for ``policy`` (a TokenPolicyConfig node); may add a pad token to ``tokenizer``.

    Raises:
        TokenPolicyError: an id cannot be resolved, or a recipe token is not in the vocabulary.
    """
    kind = option_value(policy.kind)
    vocab_size = int(decoder_config.vocab_size)
    given = {
        name: None if getattr(policy, name) is None else _lookup(getattr(policy, name), name, tokenizer, vocab_size)
        for name in ("decoder_start_token", "pad_token", "eos_token")
    }
    if kind == "explicit":
        missing = [name for name, value in given.items() if value is None]
        if missing:
            raise TokenPolicyError(
                f"token_policy=explicit needs every special token in the recipe, but {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not set. Set "
                + " ".join(f"token_policy.{m}=<id or token>" for m in missing)
                + ", or use token_policy=auto."
            )

    bos = _first(decoder_config.bos_token_id, tokenizer.bos_token_id)
    # Last, a BERT-style tokenizer's own [CLS]/[SEP], for a decoder vedforge has no record of.
    eos = _first(given["eos_token"], decoder_config.eos_token_id, tokenizer.eos_token_id,
                 _conventional(family.conventional_end, tokenizer), getattr(tokenizer, "sep_token_id", None))
    start = _first(given["decoder_start_token"], getattr(decoder_config, "decoder_start_token_id", None), bos,
                   _conventional(family.conventional_start, tokenizer), getattr(tokenizer, "cls_token_id", None))
    if start is None:
        raise TokenPolicyError(
            f"The decoder {decoder_name} (model type '{decoder_config.model_type}') has no decoder_start_token_id, "
            "no bos token, and no conventional start token vedforge knows, so the decoder start token cannot be "
            "chosen. Set token_policy.decoder_start_token=<id or token> (for example the id of a [CLS]-like token), "
            "or use token_policy=explicit."
        )

    added_pad = None
    own_pad = _first(decoder_config.pad_token_id, tokenizer.pad_token_id)
    if kind == "add_pad" and given["pad_token"] is None and (own_pad is None or own_pad == eos):
        added_pad = DEFAULT_PAD
        if added_pad not in tokenizer.get_vocab():
            tokenizer.add_special_tokens({"pad_token": added_pad})
        pad = int(tokenizer.get_vocab()[added_pad])
    else:
        pad = _first(given["pad_token"], own_pad, eos)
    if pad is None:
        raise TokenPolicyError(
            f"The decoder {decoder_name} has neither a pad token nor an eos token to pad with. "
            "Use token_policy=add_pad to add a pad token, or set token_policy.pad_token=<id or token>."
        )
    _set_special_token(tokenizer, "pad_token", pad)
    _set_special_token(tokenizer, "eos_token", eos)
    _set_special_token(tokenizer, "bos_token", bos)
    return TokenIds(start, pad, eos, bos, added_pad, max(vocab_size, len(tokenizer)))


def _set_special_token(tokenizer: Any, name: str, token_id: Optional[int]) -> None:
    """Make the tokenizer's ``name`` (e.g. ``eos_token``) the token of ``token_id``; a None id
    leaves the tokenizer as it is (nothing names that token anywhere then)."""
    if token_id is not None and getattr(tokenizer, f"{name}_id") != token_id:
        setattr(tokenizer, name, tokenizer.convert_ids_to_tokens(token_id))


def apply_token_ids(config: Any, ids: TokenIds) -> None:
    """Write the ids into the combined model's config, where the classic script puts them, and
    the decoder's vocabulary size (which only add_pad changes)."""
    config.decoder_start_token_id = ids.decoder_start
    config.pad_token_id = ids.pad
    config.eos_token_id = ids.eos
    config.bos_token_id = ids.bos
    config.decoder.vocab_size = ids.vocab_size


def generation_config_for(config: Any, ids: TokenIds):
    """A generation config that agrees with ``config``, so ``generate()`` sees no stale defaults."""
    from transformers import GenerationConfig

    generation = GenerationConfig.from_model_config(config)
    generation.decoder_start_token_id = ids.decoder_start
    generation.pad_token_id = ids.pad
    generation.eos_token_id = ids.eos
    generation.bos_token_id = ids.bos
    return generation
