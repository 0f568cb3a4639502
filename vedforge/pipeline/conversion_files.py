"""The files of a converted directory besides its weights, made from the source's own files.

``vedforge convert`` has transformers load the source's config, generation config, tokenizer and
image processor and save them again. Importing transformers and its config machinery costs about
a second of CPU, which on a few cores competes with the weights being written. For a source whose
files transformers itself wrote in the installed version, that load and save gives back the bytes
it read, except for the keys a conversion changes in ``config.json`` (the architecture, the dtype
of the weights and, on transformers 4, the untied embeddings that building the model records).
Such sources are converted here from the files, as JSON edits and copies, without importing
transformers.

The rule, checked by :func:`copyable_source`: the source is a vedforge forge whose manifest records
the installed transformers version and the sha256 of its config, generation config, tokenizer and
image processor files, every one unchanged since (and a generation config among them, which
transformers would otherwise derive); beside them it holds only files a conversion
copies or ignores (weights, its card, manifest and logs); and its config gives every size the
checkpoint is checked against under a name this module knows, holds no generation setting for
the conversion to move, and needs no mark but those :func:`converted_config_text` writes. Any
other source takes transformers' route.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from vedforge.core.frameworks import major_version

CONFIG = "config.json"
GENERATION_CONFIG = "generation_config.json"
PROCESSOR_FILES = ("preprocessor_config.json",)
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "vocab.json", "vocab.txt", "merges.txt",
                   "special_tokens_map.json", "added_tokens.json", "spiece.model", "sentencepiece.bpe.model")
_MANIFEST = "vedforge_manifest.json"
_CARD = "README.md"
_SPECIAL_TOKENS_MAP = "special_tokens_map.json"

# The generation settings transformers moves from config.json to the generation config (4.57's
# PretrainedConfig._get_global_generation_defaults and 5's GenerationConfig defaults together);
# a config holding one takes transformers' route, which moves it.
GENERATION_PARAMETERS = frozenset((
    "assistant_confidence_threshold", "assistant_lookbehind", "bad_words_ids", "begin_suppress_tokens",
    "diversity_penalty", "do_sample", "early_stopping", "encoder_no_repeat_ngram_size", "encoder_repetition_penalty",
    "epsilon_cutoff", "eta_cutoff", "exponential_decay_length_penalty", "forced_bos_token_id", "forced_eos_token_id",
    "length_penalty", "max_length", "min_length", "no_repeat_ngram_size", "num_assistant_tokens",
    "num_assistant_tokens_schedule", "num_beam_groups", "num_beams", "num_return_sequences", "output_scores",
    "remove_invalid_values", "repetition_penalty", "return_dict_in_generate", "suppress_tokens", "target_lookbehind",
    "temperature", "top_k", "top_p", "typical_p",
))

# Where each Flax family's config.json keeps the sizes the checkpoint is checked against
# (transformers' attribute_map of its config class, for the names that differ).
SIZE_NAMES: dict[str, dict[str, str]] = {
    "vit": {}, "beit": {}, "dinov2": {}, "clip_vision_model": {},
    "bert": {}, "roberta": {}, "xlm-roberta": {}, "roberta-prelayernorm": {},
    "gpt2": {"hidden_size": "n_embd", "num_hidden_layers": "n_layer"},
    "bart": {"hidden_size": "d_model"},
}
# Decoder types whose config class defaults is_encoder_decoder to True (sequence-to-sequence models):
# loaded from a config.json that leaves the key out, their decoder config says True.
SEQ2SEQ_DECODERS = frozenset({"bart"})
# The sizes a check of the checkpoint reads, by part (the decoder's layer count is added by family).
_NEEDED = {"encoder": ("hidden_size", "num_hidden_layers"), "decoder": ("hidden_size",)}


class ConfigView:
    """A config.json read as the attributes transformers' config object has, for the sizes of
    :data:`SIZE_NAMES`' families; a nested config dict is a view too. A key the file lacks is an
    AttributeError, as a missing attribute is on the config object."""

    def __init__(self, data: dict[str, Any]):
        self._data = data
        self._names = SIZE_NAMES.get(data.get("model_type"), {})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        key = self._names.get(name, name)
        if key not in self._data:
            raise AttributeError(f"{self._data.get('model_type')} config.json has no {key}")
        value = self._data[key]
        return ConfigView(value) if isinstance(value, dict) and "model_type" in value else value


@dataclass(frozen=True)
class SourceFiles:
    """What the file route needs of a source: its config, the names of its tokenizer and image
    processor files, and the text of each file it writes anew rather than copies (beside
    config.json, which :func:`converted_config_text` makes)."""

    config: dict[str, Any]
    tokenizer: tuple[str, ...]
    processor: tuple[str, ...]
    rewritten: dict[str, str]

    @property
    def view(self) -> ConfigView:
        """The config as the checkpoint check reads it."""
        return ConfigView(self.config)

    @property
    def copied(self) -> tuple[str, ...]:
        """Every file copied as it is."""
        return tuple(n for n in (GENERATION_CONFIG,) + self.tokenizer + self.processor if n not in self.rewritten)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _ignored(name: str) -> bool:
    """Files a conversion neither reads nor copies: weights (indexed separately), the card,
    the manifest and logs."""
    return (name in (_CARD, _MANIFEST) or name.endswith(".log")
            or (name.startswith("flax_model") and name.endswith((".msgpack", ".msgpack.index.json")))
            or (name.startswith("model") and name.endswith((".safetensors", ".safetensors.index.json"))))


def _sizes_known(config: dict[str, Any]) -> bool:
    """True when the config gives, under names :class:`ConfigView` maps, every size the check of
    the checkpoint reads; the decoder's layer count under its family's attribute."""
    from vedforge.families.registry import family_of

    for part, needed in _NEEDED.items():
        sub = config.get(part)
        if not isinstance(sub, dict) or sub.get("model_type") not in SIZE_NAMES:
            return False
        if part == "decoder":
            family = family_of(sub["model_type"])
            needed = needed + ((family.decoder_layer_attribute if family else "num_hidden_layers"),)
        names = SIZE_NAMES[sub["model_type"]]
        if not all(isinstance(sub.get(names.get(n, n)), int) for n in needed):
            return False
    return True


# The special-token attributes a tokenizer saves in special_tokens_map.json besides
# additional_special_tokens (transformers' SpecialTokensMixin.SPECIAL_TOKENS_ATTRIBUTES).
_SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _token_content(value: Any) -> Any:
    return value.get("content") if isinstance(value, dict) else value


def resaved_special_tokens_map(special: dict[str, Any], tokenizer_config: dict[str, Any]) -> Optional[str]:
    """``special_tokens_map.json`` as transformers 4 saves it again after loading the tokenizer, or
    None when that cannot be told from the files.

    transformers 4 loads a tokenizer's special tokens from ``tokenizer_config.json``, and one named
    there by its text becomes the added token of that content in ``added_tokens_decoder``; saved
    again, it is written in full (content, lstrip, normalized, rstrip, single_word). A forge saves
    a token the recipe set (a pad token) by its text, so that is the one change a second save
    makes. A token the config names that is no added token, a list of further special tokens
    named by text, or a map that names other tokens than the config would change more.
    """
    added = {entry.get("content"): entry for entry in (tokenizer_config.get("added_tokens_decoder") or {}).values()
             if isinstance(entry, dict)}
    named = {key: tokenizer_config.get(key) for key in _SPECIAL_TOKENS if tokenizer_config.get(key) is not None}
    if set(named) != set(special) - {"additional_special_tokens"}:
        return None
    out: dict[str, Any] = {}
    for key, value in special.items():
        if key == "additional_special_tokens":
            if not isinstance(value, list) or not all(isinstance(token, dict) for token in value):
                return None
        elif _token_content(value) != _token_content(named[key]):
            return None
        elif isinstance(value, str):
            if value not in added:
                return None
            value = {k: v for k, v in added[value].items() if k != "special"}
        out[key] = value
    return json.dumps(out, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _read_json(path: Path) -> Optional[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def copyable_source(src: Path, installed_transformers: str) -> Optional[SourceFiles]:
    """The files of ``src`` when its conversion can be made from them without transformers (the
    rule in this module's docstring), or None for transformers' route."""
    try:
        manifest = json.loads((src / _MANIFEST).read_text())
        recorded = manifest["files"]
        version = manifest["versions"]["transformers"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if version != installed_transformers or not isinstance(recorded, dict):
        return None
    names = sorted(p.name for p in src.iterdir() if p.is_file())
    known = {CONFIG, GENERATION_CONFIG, *TOKENIZER_FILES, *PROCESSOR_FILES}
    if any(name not in known and not _ignored(name) for name in names):
        return None
    read = [name for name in names if name in known]
    if GENERATION_CONFIG not in read:  # transformers derives one from the config
        return None
    try:
        if not all(isinstance(recorded.get(name), dict) and recorded[name].get("sha256") == _sha256(src / name)
                   for name in read):
            return None
    except OSError:  # transformers' route reports a file that cannot be read
        return None
    config = _read_json(src / CONFIG)
    if (config is None or config.get("transformers_version") != installed_transformers
            or GENERATION_PARAMETERS & set(config) or not _sizes_known(config)
            or (config["decoder"].get("is_encoder_decoder", False)
                and config["decoder"]["model_type"] not in SEQ2SEQ_DECODERS)):
        return None
    rewritten: dict[str, str] = {}
    if _SPECIAL_TOKENS_MAP in read and major_version(installed_transformers) < 5:
        special, tokenizer_config = _read_json(src / _SPECIAL_TOKENS_MAP), _read_json(src / "tokenizer_config.json")
        text = resaved_special_tokens_map(special, tokenizer_config) if special and tokenizer_config else None
        if text is None:
            return None
        rewritten[_SPECIAL_TOKENS_MAP] = text
    return SourceFiles(config, tuple(n for n in read if n in TOKENIZER_FILES),
                       tuple(n for n in read if n in PROCESSOR_FILES), rewritten)


def converted_config_text(config: dict[str, Any], dtype: Optional[str], transformers_major: int) -> str:
    """The ``config.json`` transformers writes for ``config`` once a conversion has set its
    architecture, the weights' dtype and (transformers 4) the marks building the PyTorch model
    leaves (untied embeddings; a sequence-to-sequence decoder declared a decoder only): each is a
    value its save keeps, so the file is the source's with these keys set, written as
    transformers writes a config (sorted keys, two-space indent)."""
    data = dict(config)
    data["architectures"] = ["VisionEncoderDecoderModel"]
    if dtype is not None:
        data["dtype"] = dtype
    if transformers_major < 5:
        data["tie_word_embeddings"] = False
        decoder = dict(data["decoder"])
        if decoder.get("is_encoder_decoder", decoder["model_type"] in SEQ2SEQ_DECODERS):
            # The causal-LM class of a sequence-to-sequence decoder declares its config a decoder only.
            decoder.update(is_decoder=True, is_encoder_decoder=False)
        data["decoder"] = decoder
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
