"""The tokens of a prefix (LLaVA-style) pairing: the ``<image>`` token, a pad token, the chat template.

The language model's tokenizer gains ``<image>`` (a special token: it never splits and
``skip_special_tokens`` drops it), and a ``<pad>`` where the LM has no pad token of its own or pads
with its eos (label masking by pad id would then mask every eos too). The vocabulary grows to hold
the added tokens; tokens the LM's padded vocabulary already has rows for take those rows.

The chat template is the LM's own, wrapped so that messages whose content is a list of
``{"type": "image"}`` / ``{"type": "text", "text": ...}`` items (what ``LlavaProcessor`` and the
``image-text-to-text`` pipeline pass) reach it as plain strings with ``<image>`` where the image
goes. A base LM without a chat template gets :data:`DEFAULT_CHAT_TEMPLATE`, LLaVA-1.5's
``USER: <image>\\n... ASSISTANT:`` layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

from vedforge.core.errors import TokenPolicyError

IMAGE_TOKEN = "<image>"
PAD_TOKEN = "<pad>"

# Messages whose content is a list of items become plain-string messages, images as "<image>\n".
_FLATTEN_CONTENT = (
    "{%- set vedforge_ns = namespace(messages=[]) -%}"
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}"
    "{%- set vedforge_ns.messages = vedforge_ns.messages + [message] -%}"
    "{%- else -%}"
    "{%- set vedforge_text = namespace(value='') -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{%- set vedforge_text.value = vedforge_text.value + '" + IMAGE_TOKEN + "\\n' -%}"
    "{%- elif item['type'] == 'text' -%}{%- set vedforge_text.value = vedforge_text.value + item['text'] -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- set vedforge_ns.messages = vedforge_ns.messages + [{'role': message['role'], 'content': vedforge_text.value}] -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- set messages = vedforge_ns.messages -%}"
)

# For base LMs without a template: LLaVA-1.5's conversation layout. An assistant turn ends with eos.
DEFAULT_CHAT_TEMPLATE = _FLATTEN_CONTENT + (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ message['content'] + '\\n' }}"
    "{%- elif message['role'] == 'user' -%}{{ 'USER: ' + message['content'] + '\\n' }}"
    "{%- else -%}{{ 'ASSISTANT: ' + message['content'] + eos_token + '\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}ASSISTANT:{%- endif -%}"
)


@dataclass(frozen=True)
class PrefixTokens:
    """The token ids of a prefix forge, and how the vocabulary changed."""

    image: int
    pad: int
    eos: Optional[int]
    bos: Optional[int]
    added: tuple[str, ...]  # tokens added to the tokenizer, in id order
    old_vocab: int  # rows of the LM's embedding table before
    vocab_size: int  # rows after


def image_chat_template(lm_template: Union[str, dict, None]) -> tuple[str, str]:
    """The processor's chat template and where it came from (for the manifest and model card)."""
    if isinstance(lm_template, dict):  # several named templates: the default one serves chats
        lm_template = lm_template.get("default")
    if not lm_template:
        return DEFAULT_CHAT_TEMPLATE, "default"
    return _FLATTEN_CONTENT + lm_template, "language model's own, extended for image content"


def _token_id(token: Any, field: str, tokenizer: Any) -> int:
    if isinstance(token, int) and not isinstance(token, bool):
        if not 0 <= token < len(tokenizer):
            raise TokenPolicyError(f"token_policy.{field}={token} is out of range: the tokenizer has ids 0 to {len(tokenizer) - 1}.")
        return token
    vocab = tokenizer.get_vocab()
    if not isinstance(token, str) or token not in vocab:
        raise TokenPolicyError(
            f"token_policy.{field}={token!r} is not in the language model's tokenizer; give a token id or a token "
            f"string it has (its special tokens: {', '.join(map(repr, tokenizer.all_special_tokens)) or 'none'})."
        )
    return int(vocab[token])


def add_prefix_tokens(tokenizer: Any, lm_config: Any, policy: Any, lm_name: str) -> PrefixTokens:
    """Add ``<image>`` (and a pad token where needed) to ``tokenizer``; return the ids.

    ``policy`` is the recipe's token policy: its ``pad_token`` and ``eos_token``, when set, name
    existing tokens to use instead (``decoder_start_token`` has no meaning for a decoder-only LM).

    Raises:
        TokenPolicyError: a token the recipe names is not in the tokenizer, or the LM has no eos.
    """
    from tokenizers import AddedToken

    old_vocab = int(lm_config.vocab_size)
    added = []
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
        added.append(IMAGE_TOKEN)
    eos = (_token_id(policy.eos_token, "eos_token", tokenizer) if policy.eos_token is not None
           else _first(lm_config.eos_token_id, tokenizer.eos_token_id))
    if eos is None:
        raise TokenPolicyError(
            f"The language model {lm_name} names no eos token (config or tokenizer), so generation could never end. "
            "Set token_policy.eos_token=<id or token>."
        )
    bos = _first(lm_config.bos_token_id, tokenizer.bos_token_id)
    if policy.pad_token is not None:
        pad = _token_id(policy.pad_token, "pad_token", tokenizer)
    else:
        own = _first(tokenizer.pad_token_id, getattr(lm_config, "pad_token_id", None))
        if own is None or own == eos:
            if PAD_TOKEN not in tokenizer.get_vocab():
                tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
                added.append(PAD_TOKEN)
            own = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
        pad = int(own)
    for name, token_id in (("pad_token", pad), ("eos_token", eos), ("bos_token", bos)):
        if token_id is not None and getattr(tokenizer, f"{name}_id") != token_id:
            setattr(tokenizer, name, tokenizer.convert_ids_to_tokens(token_id))
    image = int(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    return PrefixTokens(image=image, pad=pad, eos=int(eos), bos=None if bos is None else int(bos), added=tuple(added),
                        old_vocab=old_vocab, vocab_size=max(old_vocab, len(tokenizer)))


def _first(*values: Optional[int]) -> Optional[int]:
    for value in values:
        if isinstance(value, list):  # some configs list several eos ids; the first is the tokenizer's
            value = value[0] if value else None
        if value is not None:
            return int(value)
    return None
