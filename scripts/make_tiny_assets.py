"""Regenerate the embedded tiny checkpoints under ``vedforge/assets/``.

Each directory holds only a config plus tokenizer or image-processor files;
weights are created randomly from the config at run time, so the assets stay
a few kilobytes and tests never need network access.

Usage:
    python scripts/make_tiny_assets.py            # write and verify
    python scripts/make_tiny_assets.py --check    # verify existing assets only

Writing needs no torch. Verifying the encoders that only have a PyTorch port in
transformers (swin, deit, convnext, detr, siglip) builds them with torch; without it their
processors are still checked but the model forward is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

# Offline and quiet: the assets must be buildable without any hub access, and
# the tokenizers fork warning would otherwise drown the verification output.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BartConfig,
    BartTokenizerFast,
    BeitConfig,
    BeitImageProcessor,
    BertConfig,
    BertTokenizerFast,
    BitImageProcessor,
    CLIPConfig,
    CLIPImageProcessor,
    ConvNextConfig,
    ConvNextImageProcessor,
    DeiTConfig,
    DeiTImageProcessor,
    DetrConfig,
    DetrImageProcessor,
    Dinov2Config,
    GPT2Config,
    GemmaConfig,
    GemmaTokenizerFast,
    GPT2TokenizerFast,
    LlamaConfig,
    LlamaTokenizerFast,
    Qwen2Config,
    Qwen2TokenizerFast,
    ResNetConfig,
    SiglipConfig,
    SiglipImageProcessor,
    RobertaConfig,
    RobertaTokenizerFast,
    SwinConfig,
    ViTConfig,
    ViTImageProcessor,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
ASSETS = REPO_ROOT / "vedforge" / "assets"

ENCODERS = ("vit_tiny", "beit_tiny", "dinov2_tiny", "clip_tiny")
# No Flax port in transformers: verified with PyTorch models instead.
PT_ENCODERS = ("swin_tiny", "deit_tiny", "convnext_tiny", "detr_tiny", "siglip_tiny")
DECODERS = ("gpt2_tiny", "bert_tiny", "roberta_tiny", "bart_tiny")
# Decoder-only chat LMs without cross-attention, for architecture=prefix (no Flax port checked).
PREFIX_LMS = ("llama_tiny", "qwen2_tiny", "gemma_tiny")
# Longer than the captioning decoders': a prompt holds an image's tokens too.
PREFIX_MAX_POSITIONS = 256

IMAGE_SIZE = 32
PATCH_SIZE = 8
HIDDEN = 32
LAYERS = 2
HEADS = 4
FFN = 64
MAX_POSITIONS = 64

# Requested sizes; the trainers stop early if the corpus runs out of merges,
# so the real size is always read back from the tokenizer.
BPE_VOCAB = 512
WORDPIECE_VOCAB = 400

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


# --------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------

SUBJECTS = [
    "a dog", "a brown dog", "two dogs", "a black cat", "a cat", "a man", "a woman",
    "a young boy", "a little girl", "two people", "three children", "a group of kids",
    "an old man", "a surfer", "a skier", "a horse", "a bird", "two birds",
    "a family", "a couple", "a baby", "a player", "a team", "a puppy",
]
ACTIONS = [
    "running on", "sitting on", "walking along", "playing in", "standing near",
    "jumping over", "riding bikes on", "lying on", "looking at", "eating lunch at",
    "swimming in", "climbing", "resting under", "waiting at", "dancing on",
    "reading a book in", "holding a ball near", "flying over",
]
PLACES = [
    "the beach", "the grass", "a busy street", "the snow", "a wooden bench",
    "the river", "a green field", "the kitchen table", "a small boat", "the park",
    "a red car", "the mountain", "a city bridge", "the water", "a sandy road",
    "the garden", "a tall tree", "the playground", "a stone wall", "the lake",
]
EXTRAS = [
    "", "", "", " at sunset", " in the rain", " on a sunny day", " with a frisbee",
    " while people watch", " next to a fence", " in the morning", " at night",
    " with friends", " during the summer", " under a blue sky",
]
# A few fixed lines so punctuation, digits and capitals reach the vocab too.
FIXED_LINES = [
    "A photo of a dog.",
    "An image of two people riding bikes, taken outside.",
    "There are 2 cats and 3 dogs in the picture!",
    "Is this a beach? Yes, it is a beach.",
    "The man's hat is red; the woman's coat is blue.",
    "Close-up of a pizza with cheese (and tomatoes).",
    "Street sign: STOP - 50 km/h.",
    "\"A cat on a mat\" said the caption.",
]


def build_corpus() -> list[str]:
    """Deterministic caption-like sentences; index arithmetic, no RNG, so the
    corpus cannot drift between Python versions."""
    lines = list(FIXED_LINES)
    n = 600
    for i in range(n):
        subject = SUBJECTS[i % len(SUBJECTS)]
        action = ACTIONS[(i * 7 + i // len(SUBJECTS)) % len(ACTIONS)]
        place = PLACES[(i * 11 + i // 3) % len(PLACES)]
        extra = EXTRAS[(i * 5 + i // 7) % len(EXTRAS)]
        lines.append(f"{subject} {action} {place}{extra}")
    return lines


# --------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------


def _with_tokens_appended(tok: Tokenizer, specials: list[AddedToken]) -> Tokenizer:
    """Put special tokens at the *end* of the model vocab (not only in the
    added-tokens table), mirroring GPT-2's ``<|endoftext|>`` and RoBERTa's
    ``<mask>`` which sit in vocab.json with the highest ids."""
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    for special in specials:
        vocab[special.content] = len(vocab)
    rebuilt = Tokenizer.from_str(json.dumps(data))
    rebuilt.add_special_tokens(specials)
    return rebuilt


def _byte_level_bpe(corpus: list[str], leading_specials: list[str], vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=leading_specials,
        # Full byte alphabet so any input string is encodable, as in GPT-2. It
        # also means every symbol has a sorted, fixed id before training, which
        # is what keeps merge tie-breaking (and so the output) reproducible.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def make_gpt2_tokenizer(corpus: list[str]) -> GPT2TokenizerFast:
    eot = "<|endoftext|>"
    tok = _byte_level_bpe(corpus, [], BPE_VOCAB - 1)
    tok = _with_tokens_appended(tok, [AddedToken(eot, special=True, normalized=False)])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return GPT2TokenizerFast(
        tokenizer_object=tok,
        bos_token=eot,
        eos_token=eot,
        unk_token=eot,
        add_prefix_space=False,
        model_max_length=MAX_POSITIONS,
        clean_up_tokenization_spaces=False,
    )


def _roberta_style_tokenizer(corpus: list[str]) -> Tokenizer:
    # <s>=0, <pad>=1, </s>=2, <unk>=3 up front and <mask> last, as in roberta-base
    # and bart-base, so hard-coded ids in downstream code stay valid.
    leading = ["<s>", "<pad>", "</s>", "<unk>"]
    tok = _byte_level_bpe(corpus, leading, BPE_VOCAB - 1)
    tok = _with_tokens_appended(tok, [AddedToken("<mask>", lstrip=True, special=True, normalized=False)])
    tok.post_processor = processors.RobertaProcessing(
        sep=("</s>", tok.token_to_id("</s>")),
        cls=("<s>", tok.token_to_id("<s>")),
        trim_offsets=True,
        add_prefix_space=False,
    )
    return tok


def make_roberta_tokenizer(corpus: list[str]) -> RobertaTokenizerFast:
    return RobertaTokenizerFast(
        tokenizer_object=_roberta_style_tokenizer(corpus),
        add_prefix_space=False,
        model_max_length=MAX_POSITIONS,
        clean_up_tokenization_spaces=False,
    )


def make_bart_tokenizer(corpus: list[str]) -> BartTokenizerFast:
    return BartTokenizerFast(
        tokenizer_object=_roberta_style_tokenizer(corpus),
        # BartTokenizerFast would otherwise re-add <mask> as normalized=True,
        # diverging from the otherwise identical roberta_tiny tokenizer.json.
        mask_token=AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False, special=True),
        add_prefix_space=False,
        model_max_length=MAX_POSITIONS,
        clean_up_tokenization_spaces=False,
    )


def _bert_pipeline(model: models.WordPiece) -> Tokenizer:
    tok = Tokenizer(model)
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def make_bert_tokenizer(corpus: list[str]) -> BertTokenizerFast:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wordpiece = dict(unk_token="[UNK]", continuing_subword_prefix="##", max_input_chars_per_word=100)
    tok = _bert_pipeline(models.WordPiece(**wordpiece))

    # The trainer creates each "##c" token the first time it meets c inside a
    # word while walking a Rust HashMap, so their ids (which break ties between
    # equally frequent merges) change from process to process and so does the
    # learned vocab. Registering every "##c" up front, in sorted order, pins
    # those ids and makes training reproducible.
    chars = sorted({c for line in corpus for c in tok.normalizer.normalize_str(line) if not c.isspace()})
    pinned = [f"##{c}" for c in chars]
    trainer = trainers.WordPieceTrainer(
        vocab_size=WORDPIECE_VOCAB,
        min_frequency=2,
        special_tokens=specials + pinned,
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)

    # Rebuild so only the real specials are added tokens (the pinned pieces must
    # stay ordinary vocab entries). WordPiece matching ignores ids, so lay the
    # vocab out like BERT's: specials, characters, "##" characters, learned pieces.
    learned = sorted(tok.get_vocab(with_added_tokens=False).items(), key=lambda kv: kv[1])
    head = specials + chars + pinned
    seen = set(head)
    order = head + [t for t, _ in learned if t not in seen]
    tok = _bert_pipeline(models.WordPiece(vocab={t: i for i, t in enumerate(order)}, **wordpiece))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])

    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return BertTokenizerFast(
        tokenizer_object=tok,
        do_lower_case=True,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        tokenize_chinese_chars=True,
        strip_accents=None,
        model_max_length=MAX_POSITIONS,
        # bert-base-uncased decodes "dog ." as "dog."; the new library default is off.
        clean_up_tokenization_spaces=True,
    )


# --------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------

VISION_DIMS = dict(
    image_size=IMAGE_SIZE,
    patch_size=PATCH_SIZE,
    num_channels=3,
    hidden_size=HIDDEN,
    num_hidden_layers=LAYERS,
    num_attention_heads=HEADS,
)


def vit_assets():
    # encoder_stride must match the patch size for the masked-image-modeling head.
    config = ViTConfig(**VISION_DIMS, intermediate_size=FFN, encoder_stride=PATCH_SIZE, architectures=["ViTModel"])
    processor = ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return config, processor


def beit_assets():
    config = BeitConfig(**VISION_DIMS, intermediate_size=FFN, vocab_size=64, architectures=["BeitModel"])
    processor = BeitImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_center_crop=False,
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    return config, processor


def dinov2_assets():
    # Dinov2 has no intermediate_size; its MLP width is hidden_size * mlp_ratio.
    config = Dinov2Config(**VISION_DIMS, mlp_ratio=FFN // HIDDEN, architectures=["Dinov2Model"])
    processor = BitImageProcessor(
        do_resize=True,
        size={"shortest_edge": IMAGE_SIZE},
        resample=3,
        do_center_crop=True,
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_rescale=True,
        do_normalize=True,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        do_convert_rgb=True,
    )
    return config, processor


def clip_assets():
    text_vocab = 300
    text_config = dict(
        vocab_size=text_vocab,
        hidden_size=HIDDEN,
        intermediate_size=FFN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        max_position_embeddings=16,
        projection_dim=16,
        # The stock defaults (49406/49407) point past a tiny vocab; keep the
        # real-CLIP layout of bos/eos being the last two ids.
        pad_token_id=1,
        bos_token_id=text_vocab - 2,
        eos_token_id=text_vocab - 1,
    )
    vision_config = dict(**VISION_DIMS, intermediate_size=FFN, projection_dim=16)
    config = CLIPConfig(
        text_config=text_config,
        vision_config=vision_config,
        projection_dim=16,
        architectures=["CLIPModel"],
    )
    processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    return config, processor


def swin_assets():
    # 8x8 patches in 4x4 windows, merged once into a 4x4 grid of 2 * embed_dim = 32
    # channels: SwinConfig derives hidden_size from embed_dim and the stage count.
    config = SwinConfig(
        image_size=IMAGE_SIZE,
        patch_size=4,
        embed_dim=HIDDEN // 2,
        depths=[1, 1],
        num_heads=[2, 2],
        window_size=4,
        encoder_stride=8,
        # Stochastic depth would make training-mode features differ run to run.
        drop_path_rate=0.0,
        architectures=["SwinModel"],
    )
    # microsoft/swin-tiny-patch4-window7-224 ships a plain ViT processor with ImageNet statistics.
    processor = ViTImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        resample=3,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )
    return config, processor


def deit_assets():
    # model_type "deit" is the distilled variant: a distillation token follows the class token.
    config = DeiTConfig(**VISION_DIMS, intermediate_size=FFN, encoder_stride=PATCH_SIZE, architectures=["DeiTModel"])
    processor = DeiTImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )
    return config, processor


def convnext_assets():
    # A 4x stem then one 2x downsampling stage: a 4x4 map of hidden_sizes[-1] channels.
    config = ConvNextConfig(
        image_size=IMAGE_SIZE,
        num_stages=2,
        hidden_sizes=[HIDDEN // 2, HIDDEN],
        depths=[1, 1],
        architectures=["ConvNextModel"],
    )
    # Below 384 pixels the processor resizes the short side to shortest_edge / crop_pct and
    # centre-crops back to shortest_edge, as facebook/convnext-tiny-224 does at 224.
    processor = ConvNextImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_pct=0.875,
        resample=3,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )
    return config, processor


def detr_assets():
    # transformers' own ResNet as the backbone: timm is not needed, and nothing pretrained
    # is fetched. Its last stage (stride 8) feeds the transformer, like stage4 of resnet-50.
    backbone = ResNetConfig(
        embedding_size=8,
        hidden_sizes=[8, 16],
        depths=[1, 1],
        layer_type="basic",
        out_features=["stage2"],
    )
    config = DetrConfig(
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        backbone=None,
        backbone_config=backbone,
        d_model=HIDDEN,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=HEADS,
        decoder_attention_heads=HEADS,
        encoder_ffn_dim=FFN,
        decoder_ffn_dim=FFN,
        num_queries=10,
        architectures=["DetrModel"],
    )
    # Aspect-preserving resize as in facebook/detr-resnet-50, but padded to a fixed square
    # instead of to the largest image in the batch, so every image gives the same shape;
    # pixel_mask marks the padding.
    processor = DetrImageProcessor(
        size={"shortest_edge": IMAGE_SIZE, "longest_edge": IMAGE_SIZE},
        pad_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )
    return config, processor


def siglip_assets():
    # A full two-tower checkpoint config, as google/siglip-base-patch16-224 ships; vedforge
    # takes its vision tower. SigLIP's vision tower has no class token.
    text_vocab = 300
    text_config = dict(
        vocab_size=text_vocab,
        hidden_size=HIDDEN,
        intermediate_size=FFN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        max_position_embeddings=16,
        # The stock bos/eos (49406/49407) point past a tiny vocab.
        pad_token_id=1,
        bos_token_id=text_vocab - 2,
        eos_token_id=1,
    )
    vision_config = dict(**VISION_DIMS, intermediate_size=FFN)
    config = SiglipConfig(text_config=text_config, vision_config=vision_config, architectures=["SiglipModel"])
    # As the released SigLIP processors: a plain resize to the square input, mean and std 0.5.
    processor = SiglipImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        resample=3,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return config, processor


def gpt2_config(tok: GPT2TokenizerFast) -> GPT2Config:
    return GPT2Config(
        vocab_size=len(tok),
        n_positions=MAX_POSITIONS,
        n_embd=HIDDEN,
        n_layer=LAYERS,
        n_head=HEADS,
        n_inner=FFN,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        architectures=["GPT2LMHeadModel"],
    )


def bert_config(tok: BertTokenizerFast) -> BertConfig:
    return BertConfig(
        vocab_size=len(tok),
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=FFN,
        max_position_embeddings=MAX_POSITIONS,
        type_vocab_size=2,
        pad_token_id=tok.pad_token_id,
        architectures=["BertForMaskedLM"],
    )


def roberta_config(tok: RobertaTokenizerFast) -> RobertaConfig:
    return RobertaConfig(
        vocab_size=len(tok),
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=FFN,
        # RoBERTa position ids start at pad_token_id + 1, hence the +2.
        max_position_embeddings=MAX_POSITIONS + 2,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        bos_token_id=tok.bos_token_id,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        architectures=["RobertaForMaskedLM"],
    )


def bart_config(tok: BartTokenizerFast) -> BartConfig:
    return BartConfig(
        vocab_size=len(tok),
        d_model=HIDDEN,
        encoder_layers=LAYERS,
        decoder_layers=LAYERS,
        encoder_attention_heads=HEADS,
        decoder_attention_heads=HEADS,
        encoder_ffn_dim=FFN,
        decoder_ffn_dim=FFN,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=tok.bos_token_id,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.eos_token_id,
        forced_bos_token_id=tok.bos_token_id,
        forced_eos_token_id=tok.eos_token_id,
        is_encoder_decoder=True,
        architectures=["BartModel"],
    )


# --------------------------------------------------------------------------
# Decoder-only chat LMs (architecture=prefix)
# --------------------------------------------------------------------------

# The chat templates of the models each tiny LM stands in for, in the same layout: TinyLlama-Chat
# (Zephyr style), Qwen2.5-Instruct (ChatML, without its tool-calling branches) and Gemma.
LLAMA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + eos_token }}"
    "{% elif message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + eos_token }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\n' + message['content'] + eos_token }}{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}{% endfor %}"
)
QWEN2_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}{{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{%- endif %}{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% set role = 'model' if message['role'] == 'assistant' "
    "else message['role'] %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

LM_DIMS = dict(hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
               num_key_value_heads=HEADS // 2, max_position_embeddings=PREFIX_MAX_POSITIONS)


def _chat_bpe(corpus: list[str], leading: list[str], trailing: list[str]) -> Tokenizer:
    tok = _byte_level_bpe(corpus, leading, BPE_VOCAB - len(trailing))
    tok = _with_tokens_appended(tok, [AddedToken(t, special=True, normalized=False) for t in trailing])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def make_llama_tokenizer(corpus: list[str]) -> LlamaTokenizerFast:
    # <unk>, <s>, </s> first, as in Llama's vocabulary; no pad token (TinyLlama has none of its own).
    tok = _chat_bpe(corpus, ["<unk>", "<s>", "</s>"], [])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    return LlamaTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", add_bos_token=True,
        add_eos_token=False, model_max_length=PREFIX_MAX_POSITIONS, clean_up_tokenization_spaces=False,
        chat_template=LLAMA_CHAT_TEMPLATE,
    )


def make_qwen2_tokenizer(corpus: list[str]) -> Qwen2TokenizerFast:
    # Qwen2.5-Instruct: no bos, pad <|endoftext|>, eos <|im_end|>; the specials last.
    tok = _chat_bpe(corpus, [], ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    return Qwen2TokenizerFast(
        tokenizer_object=tok, bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
        model_max_length=PREFIX_MAX_POSITIONS, clean_up_tokenization_spaces=False, chat_template=QWEN2_CHAT_TEMPLATE,
    )


def make_gemma_tokenizer(corpus: list[str]) -> GemmaTokenizerFast:
    # Gemma's layout: <pad>=0, <eos>=1, <bos>=2, <unk>=3, then the turn markers.
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    tok = _chat_bpe(corpus, specials, [])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return GemmaTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        add_bos_token=True, add_eos_token=False, model_max_length=PREFIX_MAX_POSITIONS,
        clean_up_tokenization_spaces=False, chat_template=GEMMA_CHAT_TEMPLATE,
    )


def llama_config(tok) -> LlamaConfig:
    # Untied output head, as TinyLlama: the forge grows the embeddings and the head separately.
    return LlamaConfig(**LM_DIMS, vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       tie_word_embeddings=False, architectures=["LlamaForCausalLM"])


def qwen2_config(tok) -> Qwen2Config:
    # A vocabulary padded past the tokenizer, as Qwen2.5's (151936 rows for 151665 tokens), and tied
    # embeddings, as Qwen2.5-0.5B: added tokens take existing rows.
    return Qwen2Config(**LM_DIMS, vocab_size=len(tok) + 32, bos_token_id=None,
                       eos_token_id=tok.eos_token_id, tie_word_embeddings=True, architectures=["Qwen2ForCausalLM"])


def gemma_config(tok) -> GemmaConfig:
    return GemmaConfig(**LM_DIMS, head_dim=HIDDEN // HEADS, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True,
                       architectures=["GemmaForCausalLM"])


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------


def _fresh_dir(name: str) -> Path:
    # Start empty so files from an older layout never linger.
    path = ASSETS / name
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def write_encoder(name: str, config, processor) -> None:
    out = _fresh_dir(name)
    # to_json_file rather than save_pretrained: no generation_config.json side file.
    config.to_json_file(out / "config.json", use_diff=True)
    processor.save_pretrained(out)


def write_decoder(name: str, config, tokenizer) -> None:
    assert config.vocab_size == len(tokenizer) or name == "qwen2_tiny", (name, config.vocab_size, len(tokenizer))
    out = _fresh_dir(name)
    config.to_json_file(out / "config.json", use_diff=True)
    tokenizer.save_pretrained(out)


def generate() -> None:
    ASSETS.mkdir(parents=True, exist_ok=True)
    corpus = build_corpus()

    for name, factory in (
        ("vit_tiny", vit_assets),
        ("beit_tiny", beit_assets),
        ("dinov2_tiny", dinov2_assets),
        ("clip_tiny", clip_assets),
        ("swin_tiny", swin_assets),
        ("deit_tiny", deit_assets),
        ("convnext_tiny", convnext_assets),
        ("detr_tiny", detr_assets),
        ("siglip_tiny", siglip_assets),
    ):
        write_encoder(name, *factory())

    for name, make_tok, make_cfg in (
        ("gpt2_tiny", make_gpt2_tokenizer, gpt2_config),
        ("bert_tiny", make_bert_tokenizer, bert_config),
        ("roberta_tiny", make_roberta_tokenizer, roberta_config),
        ("bart_tiny", make_bart_tokenizer, bart_config),
    ):
        tok = make_tok(corpus)
        write_decoder(name, make_cfg(tok), tok)

    for name, make_tok, make_cfg in (
        ("llama_tiny", make_llama_tokenizer, llama_config),
        ("qwen2_tiny", make_qwen2_tokenizer, qwen2_config),
        ("gemma_tiny", make_gemma_tokenizer, gemma_config),
    ):
        tok = make_tok(corpus)
        write_decoder(name, make_cfg(tok), tok)


# --------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------

MAX_FILE_BYTES = 80_000
ROUND_TRIP = "a dog on the beach"
FORBIDDEN_SUFFIXES = (".bin", ".safetensors", ".msgpack", ".h5", ".pt", ".ckpt")


def _check_files(path: Path) -> None:
    for f in path.iterdir():
        assert f.is_file(), f"unexpected sub-directory {f}"
        assert not f.name.endswith(FORBIDDEN_SUFFIXES), f"weight file {f}"
        assert f.name != "generation_config.json", f"unexpected {f}"
        assert f.stat().st_size < MAX_FILE_BYTES, f"{f} is {f.stat().st_size} bytes"


# Encoder output of each PyTorch-only asset for one image: ConvNeXt gives a feature map
# and DETR the states of its object queries.
PT_ENCODER_OUTPUT = {
    "swin_tiny": (1, (IMAGE_SIZE // 8) ** 2, HIDDEN),
    "deit_tiny": (1, (IMAGE_SIZE // PATCH_SIZE) ** 2 + 2, HIDDEN),
    "convnext_tiny": (1, HIDDEN, IMAGE_SIZE // 8, IMAGE_SIZE // 8),
    "detr_tiny": (1, 10, HIDDEN),
    "siglip_tiny": (1, (IMAGE_SIZE // PATCH_SIZE) ** 2, HIDDEN),
}


def verify_pt_encoders(image) -> None:
    from transformers import AutoConfig, AutoImageProcessor

    try:
        import torch
        from transformers import AutoModel
    except ImportError:
        torch = None

    for name in PT_ENCODERS:
        path = ASSETS / name
        _check_files(path)
        assert sorted(p.name for p in path.iterdir()) == ["config.json", "preprocessor_config.json"], name
        cfg = AutoConfig.from_pretrained(path)
        proc = AutoImageProcessor.from_pretrained(path)
        inputs = proc(images=image, return_tensors="np")
        assert inputs["pixel_values"].shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE), (name, inputs["pixel_values"].shape)
        extra = sorted(set(inputs) - {"pixel_values"})
        if name == "detr_tiny":
            # The 48x40 image is resized to 32x27 and padded at the bottom.
            assert extra == ["pixel_mask"], (name, extra)
            assert inputs["pixel_mask"].shape == (1, IMAGE_SIZE, IMAGE_SIZE), (name, inputs["pixel_mask"].shape)
            assert inputs["pixel_mask"].sum() == 27 * IMAGE_SIZE, (name, inputs["pixel_mask"].sum())
        else:
            assert extra == [], (name, extra)
        if torch is None:
            print(f"ok {name}: {type(proc).__name__}, {sorted(inputs)} (no torch: model not built)")
            continue
        torch.manual_seed(0)
        # A two-tower checkpoint (SigLIP) is verified through the tower vedforge takes.
        model = AutoModel.from_config(getattr(cfg, "vision_config", cfg)).eval()
        with torch.no_grad():
            hidden = model(**proc(images=image, return_tensors="pt")).last_hidden_state
        assert tuple(hidden.shape) == PT_ENCODER_OUTPUT[name], (name, tuple(hidden.shape))
        size = sum(p.numel() for p in model.parameters())
        print(f"ok {name}: {type(proc).__name__}, {type(model).__name__} ({size} params), hidden {tuple(hidden.shape)}")


def verify() -> None:
    import numpy as np
    from PIL import Image
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoTokenizer,
        FlaxAutoModel,
        FlaxAutoModelForCausalLM,
        FlaxCLIPVisionModel,
    )

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(40, 48, 3), dtype=np.uint8), "RGB")
    assert image.size == (48, 40)

    for name in ENCODERS:
        path = ASSETS / name
        _check_files(path)
        assert sorted(p.name for p in path.iterdir()) == ["config.json", "preprocessor_config.json"], name
        cfg = AutoConfig.from_pretrained(path)
        proc = AutoImageProcessor.from_pretrained(path)
        pixels = proc(images=image, return_tensors="np")["pixel_values"]
        assert pixels.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE), (name, pixels.shape)
        if name == "clip_tiny":
            assert cfg.model_type == "clip"
            model = FlaxCLIPVisionModel(cfg.vision_config, seed=0)
        else:
            model = FlaxAutoModel.from_config(cfg, seed=0)
        hidden = model(pixels).last_hidden_state
        tokens = (IMAGE_SIZE // PATCH_SIZE) ** 2 + 1
        assert hidden.shape == (1, tokens, HIDDEN), (name, hidden.shape)
        print(f"ok {name}: {type(proc).__name__}, {type(model).__name__}, hidden {hidden.shape}")

    verify_pt_encoders(image)

    for name in DECODERS:
        path = ASSETS / name
        _check_files(path)
        cfg = AutoConfig.from_pretrained(path)
        tok = AutoTokenizer.from_pretrained(path)
        assert tok.is_fast, name
        assert len(tok) == cfg.vocab_size, (name, len(tok), cfg.vocab_size)
        ids = tok(ROUND_TRIP)["input_ids"]
        decoded = tok.decode(ids, skip_special_tokens=True)
        assert decoded == ROUND_TRIP, (name, decoded)
        for attr in ("bos_token_id", "eos_token_id", "pad_token_id"):
            expected = getattr(cfg, attr)
            if expected is not None:
                assert getattr(tok, attr) == expected, (name, attr, getattr(tok, attr), expected)

        dec_cfg = AutoConfig.from_pretrained(path, is_decoder=True, add_cross_attention=True)
        model = FlaxAutoModelForCausalLM.from_config(dec_cfg, seed=0)
        input_ids = np.asarray([ids], dtype="i4")
        # Feed fake image features so the cross-attention path is exercised too.
        logits = model(
            input_ids,
            encoder_hidden_states=np.zeros((1, 5, HIDDEN), dtype="f4"),
            encoder_attention_mask=np.ones((1, 5), dtype="i4"),
        ).logits
        assert logits.shape == (1, len(ids), cfg.vocab_size), (name, logits.shape)
        print(f"ok {name}: {type(tok).__name__} len={len(tok)}, {type(model).__name__}, logits {logits.shape}")


def verify_prefix_lms() -> None:
    """Each chat LM's tokenizer round-trips, has its chat template and the ids its config names; its
    PyTorch causal LM runs (without torch, only the tokenizer is checked)."""
    from transformers import AutoConfig, AutoTokenizer

    try:
        import torch
        from transformers import AutoModelForCausalLM
    except ImportError:
        torch = None
    for name in PREFIX_LMS:
        path = ASSETS / name
        _check_files(path)
        cfg = AutoConfig.from_pretrained(path)
        tok = AutoTokenizer.from_pretrained(path)
        assert tok.is_fast and tok.chat_template, name
        assert len(tok) <= cfg.vocab_size, (name, len(tok), cfg.vocab_size)
        ids = tok(ROUND_TRIP)["input_ids"]
        assert tok.decode(ids, skip_special_tokens=True).strip() == ROUND_TRIP, (name, tok.decode(ids))
        for attr in ("bos_token_id", "eos_token_id", "pad_token_id"):
            expected = getattr(cfg, attr)
            if expected is not None:
                assert getattr(tok, attr) == expected, (name, attr, getattr(tok, attr), expected)
        chat = tok.apply_chat_template([{"role": "user", "content": ROUND_TRIP}], add_generation_prompt=True,
                                       tokenize=False)
        assert ROUND_TRIP in chat, (name, chat)
        if torch is None:
            print(f"ok {name}: {type(tok).__name__} len={len(tok)} (no torch: model not built)")
            continue
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cfg).eval()
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits
        assert tuple(logits.shape) == (1, len(ids), cfg.vocab_size), (name, tuple(logits.shape))
        print(f"ok {name}: {type(tok).__name__} len={len(tok)}, {type(model).__name__}, logits {tuple(logits.shape)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only verify the existing assets")
    args = parser.parse_args(argv)
    if not args.check:
        generate()
    verify()
    verify_prefix_lms()
    return 0


if __name__ == "__main__":
    sys.exit(main())
