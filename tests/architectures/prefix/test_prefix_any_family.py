"""architecture=prefix pairs any tower and LM transformers can build for the role, taken from
transformers' registries: each either forges into a LLaVA model that loads with nothing missing,
keeps every pretrained tensor bit-identical, computes its LM's logits on text, generates and
trains, or is refused with a reason derived from its classes."""

from __future__ import annotations

import collections
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import compose_recipe  # noqa: E402
from registry_models import NotBuildable, registered_types, save_tiny  # noqa: E402
from vedforge.core.errors import UnsupportedModelError  # noqa: E402
from vedforge.pipeline.runner import forge  # noqa: E402

PREFIX = ["architecture=prefix", "backend=pt"]
# A sample for the default suite, chosen for what differs between them: grouped-query attention
# with q/k norms (qwen3), an output head named embed_out (gpt_neox), a head with a bias (phi),
# learned positions (opt); towers without a CLS token (ijepa) and with register tokens.
SAMPLE_LMS = ("qwen3", "gpt_neox", "phi", "opt")
SAMPLE_TOWERS = ("ijepa", "dinov2_with_registers")


def _recipe(out: Path, *, lm: Path | None = None, tower: Path | None = None):
    overrides = [*PREFIX, f"output.dir={out}"]
    overrides += [f"decoder.name_or_path={lm}", "decoder.weights=pretrained"] if lm else ["decoder=llama_tiny"]
    overrides += [f"encoder.name_or_path={tower}", "encoder.weights=pretrained"] if tower else ["encoder=vit_tiny"]
    return compose_recipe(overrides)


def _image():
    from PIL import Image

    return Image.fromarray((np.random.RandomState(0).rand(40, 48, 3) * 255).astype(np.uint8))


def _safetensors(directory: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    out = {}
    for file in sorted(directory.glob("*.safetensors")):
        out.update(load_file(file))
    return out


def _same_tensors(model, checkpoint: Path, part: str, extra_allowed: int = 0) -> None:
    """Every tensor of the part, as transformers loads it from the forge and from its checkpoint,
    is bit-identical (vocabulary tables: their checkpoint rows)."""
    from transformers import AutoModel, AutoModelForCausalLM

    if part == "tower" and (checkpoint / "processor_config.json").is_file():  # a LLaVA model's tower
        from transformers import LlavaForConditionalGeneration

        want = LlavaForConditionalGeneration.from_pretrained(checkpoint).model.vision_tower.state_dict()
        got = model.model.vision_tower.state_dict()
    elif part == "tower":
        want = AutoModel.from_pretrained(checkpoint).state_dict()
        got = model.model.vision_tower.state_dict()
    else:
        # The LM's tensors as LLaVA holds them: its base model's by their names inside it (the
        # causal LM's first name component dropped), its head as LLaVA's lm_head. Anything else
        # (a prediction transform) LLaVA cannot hold, as its manifest says.
        causal = AutoModelForCausalLM.from_pretrained(checkpoint)
        head = causal.get_output_embeddings()
        head_name = next(name for name, module in causal.named_modules() if module is head)
        got = {**model.model.language_model.state_dict(), "lm_head": model.lm_head.weight}
        want = {"lm_head": head.weight}
        for name, tensor in causal.state_dict().items():
            rest = name.split(".", 1)[-1]
            if not name.startswith(head_name + ".") and rest in got:
                want[rest] = tensor
        held = sum(t.numel() for t in want.values()) + (head.bias.numel() if head.bias is not None else 0)
        assert held >= sum(t.numel() for t in causal.parameters()) - extra_allowed, "LM tensors left behind"
    assert set(want) <= set(got), sorted(set(want) - set(got))
    for name, tensor in want.items():
        have = got[name][: tensor.shape[0]] if got[name].shape[1:] == tensor.shape[1:] else got[name]
        assert have.shape == tensor.shape and torch.equal(have, tensor), name


def _check_forged(out: Path, checkpoint: Path, part: str, extra_allowed: int = 0) -> None:
    """The forged LLaVA model loads whole, holds the checkpoint's tensors bit for bit, generates
    from an image and a prompt, and a few optimiser steps make its loss fall."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model, info = LlavaForConditionalGeneration.from_pretrained(out, output_loading_info=True)
    assert {k: v for k, v in info.items() if v} == {}, info
    processor = AutoProcessor.from_pretrained(out)

    _same_tensors(model, checkpoint, part, extra_allowed)

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    batch = processor(images=_image(), text=prompt, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        generated = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] == batch["input_ids"].shape[1] + 3 or generated[0, -1] == model.config.text_config.eos_token_id

    labels = batch["input_ids"].clone()
    labels[labels == model.config.image_token_id] = -100
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(6):
        loss = model(**batch, labels=labels).loss
        losses.append(float(loss.detach()))
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses


def _text_logits_match(out: Path, checkpoint: Path) -> None:
    """Without an image, the LLaVA model computes exactly its language model."""
    from transformers import AutoModelForCausalLM, LlavaForConditionalGeneration

    llava = LlavaForConditionalGeneration.from_pretrained(out).eval()
    lm = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    ids = torch.tensor([[1, 17, 33, 250, 9, 4]])
    with torch.no_grad():
        want, got = lm(input_ids=ids).logits, llava(input_ids=ids).logits
    vocab = want.shape[-1]
    torch.testing.assert_close(got[..., :vocab], want, rtol=1e-4, atol=1e-4)


def _forge_one(model_type: str, role: str, root: Path) -> tuple[str, Path | str]:
    """``("forged", checkpoint)``, ``("refused", reason)`` or ``("not built", why)``."""
    try:
        checkpoint = save_tiny(model_type, role, root / role)
    except NotBuildable as exc:
        return "not built", str(exc)
    try:
        forge(_recipe(root / "out", **{role: checkpoint}))
    except UnsupportedModelError as exc:
        return "refused", str(exc)
    return "forged", checkpoint


def forge_lm(model_type: str, root: Path) -> tuple[str, str]:
    """``("forged", note)``, ``("refused", reason)`` or ``("not built", why)`` for one LM type."""
    outcome, checkpoint = _forge_one(model_type, "lm", root)
    if outcome != "forged":
        return outcome, checkpoint
    out = root / "out"
    prefix = json.loads((out / "vedforge_manifest.json").read_text())["prefix"]
    # A prediction transform before the head is what LLaVA's plain head cannot hold (noted).
    dropped = "transformed hidden state" in prefix.get("lm_logits_differ", "")
    _check_forged(out, checkpoint, "lm", extra_allowed=10**9 if dropped else 0)
    if "lm_logits_differ" in prefix or "lm_head_bias_left_out" in prefix:
        return "forged", f"LLaVA's head differs: {prefix.get('lm_logits_differ') or 'head bias left out'}"
    _text_logits_match(out, checkpoint)
    return "forged", ""


def forge_tower(model_type: str, root: Path) -> tuple[str, str]:
    """As :func:`forge_lm`, for one vision tower type."""
    outcome, checkpoint = _forge_one(model_type, "tower", root)
    if outcome != "forged":
        return outcome, checkpoint
    _check_forged(root / "out", checkpoint, "tower")
    return "forged", ""


@pytest.mark.parametrize("model_type", SAMPLE_LMS)
def test_a_registered_language_model_forges_loads_generates_and_trains(tmp_path, model_type):
    assert forge_lm(model_type, tmp_path)[0] == "forged"


def _registered(model_type: str) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES


# Families only transformers 5 knows (4.57 cannot even parse their configs).
@pytest.mark.parametrize("model_type", ["qwen3_5_text", "ministral3"])
def test_a_language_model_only_transformers_5_knows_pairs_with_a_siglip_tower(tmp_path, model_type):
    if not _registered(model_type):
        pytest.skip(f"transformers here does not register '{model_type}' (it is new in transformers 5)")
    checkpoint = save_tiny(model_type, "lm", tmp_path / "lm")
    out = forge(compose_recipe([*PREFIX, "encoder=siglip_tiny", f"decoder.name_or_path={checkpoint}",
                                "decoder.weights=pretrained", f"output.dir={tmp_path / 'out'}"])).output_dir
    _check_forged(out, checkpoint, "lm")
    _text_logits_match(out, checkpoint)


@pytest.mark.parametrize("encoder, decoder", [("vit_tiny", "qwen3_tiny"), ("siglip_tiny", "smollm3_tiny"),
                                              ("vit_tiny", "gemma3_tiny"), ("dinov3_tiny", "qwen3_tiny")])
def test_the_options_for_todays_parts_forge_through_their_configs(tmp_path, encoder, decoder):
    from transformers import LlavaForConditionalGeneration

    out = forge(compose_recipe([*PREFIX, f"encoder={encoder}", f"decoder={decoder}",
                                f"output.dir={tmp_path / 'out'}"])).output_dir
    model, info = LlavaForConditionalGeneration.from_pretrained(out, output_loading_info=True)
    assert {k: v for k, v in info.items() if v} == {}, info


@pytest.mark.parametrize("model_type", SAMPLE_TOWERS)
def test_a_registered_tower_forges_loads_generates_and_trains(tmp_path, model_type):
    assert forge_tower(model_type, tmp_path) == ("forged", "")


@pytest.mark.parametrize("model_type, reason", [
    ("t5", "has no causal language-model class"),
    ("electra", "not a decoder-only language model"),
    ("mbart", "not a decoder-only language model"),
])
def test_language_models_that_cannot_be_held_are_refused_with_a_derived_reason(tmp_path, model_type, reason):
    from transformers import AutoConfig, AutoModel

    from registry_models import tiny_config

    config = tiny_config(model_type, "lm")
    AutoModel.from_config(config).save_pretrained(tmp_path / "ckpt")
    save_tiny("llama", "lm", tmp_path / "tok")  # its tokenizer files
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (tmp_path / "ckpt" / name).write_bytes((tmp_path / "tok" / name).read_bytes())
    assert AutoConfig.from_pretrained(tmp_path / "ckpt").model_type == model_type
    with pytest.raises(UnsupportedModelError) as caught:
        forge(_recipe(tmp_path / "out", lm=tmp_path / "ckpt"))
    assert reason in str(caught.value) and model_type in str(caught.value)
    assert "not among" not in str(caught.value)


def test_a_tower_that_needs_more_than_pixels_is_refused_naming_what_it_needs(tmp_path):
    # It does not run on pixels alone, which is the point: saved without that check.
    checkpoint = save_tiny("siglip2_vision_model", "tower", tmp_path / "tower", check=False)
    with pytest.raises(UnsupportedModelError, match="pixel_attention_mask"):
        forge(_recipe(tmp_path / "out", tower=checkpoint))


def test_the_parts_of_a_llava_checkpoint_pair_with_new_ones(tmp_path):
    """The tower of a forged LLaVA model with a new LM, and its LM with a new tower."""
    first = forge(_recipe(tmp_path / "first")).output_dir
    lm = save_tiny("qwen3", "lm", tmp_path / "qwen3")
    tower_from_llava = forge(_recipe(tmp_path / "tower_reused", lm=lm, tower=first)).output_dir
    _check_forged(tower_from_llava, first, "tower")
    lm_from_llava = forge(_recipe(tmp_path / "lm_reused", lm=first)).output_dir
    forged, source = _safetensors(lm_from_llava), _safetensors(first)
    for name, tensor in forged.items():
        if name.startswith("language_model.") and name in source and source[name].shape == tensor.shape:
            assert np.array_equal(source[name].view(np.uint8), tensor.view(np.uint8)), name


@pytest.mark.slow
@pytest.mark.parametrize("role", ["lm", "tower"])
def test_every_registered_model_type_forges_or_is_refused_with_a_reason(tmp_path, role, capsys):
    outcomes: dict[str, list[str]] = collections.defaultdict(list)
    reasons: dict[str, str] = {}
    failures = {}
    for model_type in registered_types(role):
        try:
            outcome, reason = (forge_lm if role == "lm" else forge_tower)(model_type, tmp_path / model_type)
        except Exception as exc:  # noqa: BLE001 (every failure is listed, then the test fails)
            failures[model_type] = f"{type(exc).__name__}: {str(exc)[:300]}"
            continue
        finally:
            shutil.rmtree(tmp_path / model_type, ignore_errors=True)  # keep the disk for the next type
        outcomes[outcome].append(model_type)
        if reason:
            reasons[model_type] = reason
    with capsys.disabled():
        print(f"\nprefix {role}s in transformers' registry: "
              + ", ".join(f"{k} {len(v)}" for k, v in sorted(outcomes.items())) + f", failed {len(failures)}")
        for model_type in outcomes["refused"]:
            print(f"  refused {model_type}: {reasons[model_type].split(', which ', 1)[-1][:240]}")
        for model_type in (t for t in outcomes["forged"] if t in reasons):
            print(f"  forged with a note {model_type}: {reasons[model_type]}")
        for model_type in outcomes["not built"]:
            print(f"  not built by the test {model_type}: {reasons[model_type][:160]}")
        for model_type, why in failures.items():
            print(f"  FAILED {model_type}: {why}")
    for model_type in outcomes["refused"]:
        assert "not among" not in reasons[model_type]
    assert not failures, failures
