"""architecture=prefix: LLaVA-style models (LlavaForConditionalGeneration) from a vision tower and a
decoder-only LM, forged from tiny checkpoints and loaded by transformers' own classes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import FLAX, compose_recipe  # noqa: E402
from vedforge.core.errors import RecipeError, UnsupportedModelError, VedforgeError  # noqa: E402
from vedforge.core.resources import assets_dir  # noqa: E402
from vedforge.pipeline.runner import forge  # noqa: E402

PREFIX = ("architecture=prefix", "backend=pt")


def save_torch_checkpoint(asset: str, dest: Path, *, seed: int = 7, dtype=None, causal_lm: bool = False) -> Path:
    """The embedded tiny ``asset`` with random weights, saved by transformers' PyTorch
    ``save_pretrained`` as safetensors (what hub checkpoints hold), with its tokenizer or processor files."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    src = assets_dir() / asset
    config = AutoConfig.from_pretrained(src)
    torch.manual_seed(seed)
    model = (AutoModelForCausalLM if causal_lm else AutoModel).from_config(config)
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(dest)
    for item in src.iterdir():
        if item.name != "config.json":
            shutil.copy(item, dest / item.name)
    return dest


@pytest.fixture(scope="session")
def prefix_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Tiny towers and LMs saved as PyTorch checkpoints; the Llama one in bfloat16."""
    root = tmp_path_factory.mktemp("prefix_checkpoints")
    paths = {name: save_torch_checkpoint(f"{name}_tiny", root / name) for name in ("vit", "dinov2")}
    paths["clip"] = save_torch_checkpoint("clip_tiny", root / "clip")  # a full CLIP model: its vision tower is taken
    paths["llama"] = save_torch_checkpoint("llama_tiny", root / "llama", dtype=torch.bfloat16, causal_lm=True)
    for name in ("qwen2", "gemma", "gpt2"):
        paths[name] = save_torch_checkpoint(f"{name}_tiny", root / name, causal_lm=True)
    return paths


def prefix_recipe(out: Path, *extra: str, encoder: str = "vit_tiny", decoder: str = "llama_tiny", checkpoints=None):
    """A prefix recipe: group options by name, or local checkpoints (pretrained) from ``checkpoints``."""
    overrides = [*PREFIX, f"output.dir={out}"]
    for role, name in (("encoder", encoder), ("decoder", decoder)):
        if checkpoints is not None and name in checkpoints:
            overrides += [f"{role}.name_or_path={checkpoints[name]}", f"{role}.weights=pretrained"]
        else:
            overrides.append(f"{role}={name}")
    return compose_recipe([*overrides, *extra])


def _image(seed: int = 0):
    from PIL import Image

    return Image.fromarray((np.random.RandomState(seed).rand(40, 48, 3) * 255).astype(np.uint8))


def _load(directory: Path):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model, info = LlavaForConditionalGeneration.from_pretrained(directory, output_loading_info=True)
    # Nothing left to transformers' initialisers, nothing ignored.
    assert {k: v for k, v in info.items() if v} == {}, info
    return model.eval(), AutoProcessor.from_pretrained(directory)


def _chat_inputs(processor, text: str = "What is in the image?"):
    messages = [{"role": "user", "content": [{"type": "image", "image": _image()}, {"type": "text", "text": text}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                         return_tensors="pt")


def _safetensors(path: Path) -> dict[str, np.ndarray]:
    import ml_dtypes  # noqa: F401  (safetensors' numpy API names bfloat16 through it; vedforge no longer imports it)
    from safetensors.numpy import load_file

    return load_file(str(path))


def test_tiny_forge_loads_in_llava_and_generates_through_the_chat_template(tmp_path):
    out = forge(prefix_recipe(tmp_path / "out")).output_dir
    model, processor = _load(out)
    assert type(processor).__name__ == "LlavaProcessor"
    inputs = _chat_inputs(processor)
    image_id = model.config.image_token_id
    # As many <image> tokens as the tower gives patch features (CLS dropped): 4x4 patches of 32x32.
    assert int((inputs["input_ids"] == image_id).sum()) == model.config.image_seq_length == 16
    prompt = processor.decode(inputs["input_ids"][0])
    assert prompt.startswith("<s><|user|>\n<image>") and prompt.endswith("What is in the image?</s><|assistant|>")
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 4
    assert torch.equal(generated[0, : inputs["input_ids"].shape[1]], inputs["input_ids"][0])


def test_an_image_size_override_gives_a_processor_of_that_size_and_as_many_image_tokens(tmp_path):
    out = forge(prefix_recipe(tmp_path / "out", "+encoder.config_overrides.image_size=48")).output_dir
    model, processor = _load(out)
    inputs = _chat_inputs(processor)
    assert tuple(inputs["pixel_values"].shape[-2:]) == (48, 48) == (model.config.vision_config.image_size,) * 2
    # 6x6 patches of 8 pixels, the CLS token dropped.
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == model.config.image_seq_length == 36
    with torch.no_grad():
        assert model(**inputs).logits.shape[1] == inputs["input_ids"].shape[1]


def test_the_layout_is_what_transformers_saves_and_the_llava_hf_checkpoints_hold(tmp_path):
    out = forge(prefix_recipe(tmp_path / "out")).output_dir
    model, processor = _load(out)
    model.save_pretrained(tmp_path / "resaved")
    ours, theirs = _safetensors(out / "model.safetensors"), _safetensors(tmp_path / "resaved" / "model.safetensors")
    assert sorted(ours) == sorted(theirs)
    assert {n.split(".")[0] for n in ours} == {"vision_tower", "multi_modal_projector", "language_model"}
    assert "language_model.lm_head.weight" in ours and "language_model.model.embed_tokens.weight" in ours
    for name in ours:
        assert ours[name].dtype == theirs[name].dtype and np.array_equal(ours[name], theirs[name]), name
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlavaForConditionalGeneration"] and config["model_type"] == "llava"
    for key in ("image_token_index", "projector_hidden_act", "vision_feature_layer", "vision_feature_select_strategy",
                "image_seq_length", "text_config", "vision_config", "pad_token_id"):
        assert key in config, key
    assert (config["projector_hidden_act"], config["vision_feature_layer"]) == ("gelu", -2)
    processor_config = json.loads((out / "processor_config.json").read_text())
    assert processor_config["patch_size"] == 8 and processor_config["num_additional_image_tokens"] == 1
    assert processor_config["vision_feature_select_strategy"] == "default"


def test_pretrained_tensors_come_through_bit_for_bit_in_their_dtype(prefix_checkpoints, tmp_path):
    out = forge(prefix_recipe(tmp_path / "out", encoder="vit", decoder="llama", checkpoints=prefix_checkpoints)).output_dir
    forged = _safetensors(out / "model.safetensors")
    lm = _safetensors(prefix_checkpoints["llama"] / "model.safetensors")
    tower = _safetensors(prefix_checkpoints["vit"] / "model.safetensors")
    manifest = json.loads((out / "vedforge_manifest.json").read_text())
    assert manifest["token_ids"]["added_tokens"] == ["<image>", "<pad>"]
    old, new = manifest["token_ids"]["old_vocab_size"], manifest["token_ids"]["vocab_size"]
    assert new == old + 2
    for name, tensor in lm.items():
        target = "language_model." + name if name.startswith("lm_head") else "language_model." + name
        assert forged[target].dtype == tensor.dtype, name  # bfloat16 kept
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            assert forged[target].shape == (new,) + tensor.shape[1:]
            assert np.array_equal(forged[target][:old], tensor), name
            # New rows as resize_token_embeddings draws them: the mean of the old rows, to within 1e-9 x cov.
            mean = tensor.astype(np.float32).mean(axis=0)
            np.testing.assert_allclose(forged[target][old:].astype(np.float32), np.stack([mean, mean]), atol=1e-2)
            assert set(manifest["resized_tensors"]["decoder"]) >= {target}
        else:
            assert np.array_equal(forged[target], tensor), name
    for name, tensor in tower.items():
        assert np.array_equal(forged["vision_tower." + name], tensor), name
    projector = {n for n in forged if n.startswith("multi_modal_projector.")}
    assert sorted(manifest["new_tensors"]["projector"]) == sorted(projector)
    assert all(forged[n].dtype == forged["language_model.model.embed_tokens.weight"].dtype for n in projector)
    config = json.loads((out / "config.json").read_text())
    assert config.get("torch_dtype", config.get("dtype")) == "bfloat16"
    model, processor = _load(out)
    with torch.no_grad():
        model.generate(**_chat_inputs(processor), max_new_tokens=2)


def test_the_forge_streams_lm_tensors_from_the_file(prefix_checkpoints, tmp_path, monkeypatch):
    # Unchanged tensors, and the old rows of the grown tables, are copied file to file by the
    # writer; the grown tables are read in row blocks only, to draw their new rows.
    from vedforge.weights import lazy_tensor; from vedforge.architectures.prefix import tensors as prefix_tensors

    whole, blocks = [], []
    real_block = prefix_tensors._FileRows.__getitem__

    def recording_array(self, dtype=None, copy=None):
        whole.append(getattr(self, "name", self.shape))
        raise AssertionError("a tensor was read whole")

    def recording_block(self, rows):
        blocks.append((self.tensor.path.name, self.tensor.offset))
        return real_block(self, rows)

    monkeypatch.setattr(lazy_tensor.LazyTensor, "__array__", recording_array)
    monkeypatch.setattr(prefix_tensors.GrownTensor, "__array__", recording_array)
    monkeypatch.setattr(prefix_tensors._FileRows, "__getitem__", recording_block)
    out = forge(prefix_recipe(tmp_path / "out", encoder="vit", decoder="llama", checkpoints=prefix_checkpoints)).output_dir
    assert whole == []
    # The two tables that grow (untied embeddings and head), each read in blocks more than once:
    # for the mean (and column ranges) and for the new rows.
    assert len(set(blocks)) == 2 and len(blocks) >= 4, blocks
    assert len(_safetensors(out / "model.safetensors")) > 20


def test_a_streamed_grown_table_has_the_bytes_of_the_whole_one(tmp_path):
    # The writer's parts (old rows by file range, new rows drawn from row blocks) are the bytes
    # of the table grown in memory, for bf16 and float32 tables.
    import ml_dtypes
    from safetensors.numpy import save_file

    from vedforge.weights.writer import _tensor_chunks
    from vedforge.weights.lazy_tensor import FileRange
    from vedforge.architectures.prefix.tensors import GrownTensor
    from vedforge.architectures.prefix.weights import read_part_tensors

    rng = np.random.default_rng(0)
    for dtype in (np.float32, ml_dtypes.bfloat16):
        folder = tmp_path / np.dtype(dtype).name
        folder.mkdir()
        save_file({"table": rng.standard_normal((9000, 24)).astype(dtype),
                   "bias": rng.standard_normal(9000).astype(dtype)}, str(folder / "model.safetensors"))
        state = read_part_tensors(folder)
        for name in ("table", "bias"):
            grown = GrownTensor(name, state[name], state[name].shape[0] + 3, seed=7)
            streamed = b"".join(bytes(c) if not isinstance(c, FileRange) else
                                _read_range_bytes(c) for c in _tensor_chunks(grown))
            in_memory = GrownTensor(name, np.asarray(_whole(state[name])), state[name].shape[0] + 3, seed=7)
            assert streamed == np.asarray(in_memory).tobytes(), (dtype, name)


def _whole(tensor):
    from vedforge.weights.lazy_tensor import LazyTensor

    return LazyTensor.__array__(tensor)


def _read_range_bytes(r) -> bytes:
    with open(r.path, "rb") as f:
        f.seek(r.offset)
        return f.read(r.length)


def test_same_recipe_same_bytes_and_the_seed_moves_only_new_tensors(prefix_checkpoints, tmp_path):
    def run(name, *extra):
        out = forge(prefix_recipe(tmp_path / name, *extra, encoder="vit", decoder="llama",
                                  checkpoints=prefix_checkpoints)).output_dir
        return json.loads((out / "vedforge_manifest.json").read_text())["files"], _safetensors(out / "model.safetensors")

    files_a, a = run("a")
    files_b, _ = run("b")
    assert {n: f["sha256"] for n, f in files_a.items() if n != "README.md"} == \
        {n: f["sha256"] for n, f in files_b.items() if n != "README.md"}
    _, c = run("c", "seed=5")
    differ = {n for n in a if not np.array_equal(a[n], c[n])}
    assert differ == {"multi_modal_projector.linear_1.weight", "multi_modal_projector.linear_2.weight",
                      "language_model.model.embed_tokens.weight", "language_model.lm_head.weight"}


def test_the_weights_written_while_planning_are_the_plans(prefix_checkpoints, tmp_path, own_cache, monkeypatch, caplog):
    import hashlib
    import logging

    monkeypatch.setenv("VEDFORGE_REPLAY", "off")  # the early write is what a planned forge does
    caplog.set_level(logging.INFO, logger="vedforge")

    def run(name):
        out = forge(prefix_recipe(tmp_path / name, encoder="vit", decoder="llama", checkpoints=prefix_checkpoints)).output_dir
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()
                if p.is_file() and p.name != "vedforge.log"}

    first = run("a")
    assert "while planning" not in caplog.text
    second = run("b")  # the bfloat16 LM's grown tables and new projector, drawn in the early write
    assert "Writing the weights while planning" in caplog.text and "written again" not in caplog.text
    assert second == first
    assert not [p for p in tmp_path.iterdir() if ".early-" in p.name]


def test_a_forge_of_the_same_inputs_is_replayed_byte_for_byte(prefix_checkpoints, tmp_path, own_cache, monkeypatch,
                                                             caplog):
    import logging

    from tests_support import artifact_hashes

    monkeypatch.setenv("VEDFORGE_REPLAY", "on")
    caplog.set_level(logging.INFO, logger="vedforge")
    recipe = lambda name: prefix_recipe(tmp_path / name, encoder="vit", decoder="llama",  # noqa: E731
                                        checkpoints=prefix_checkpoints)
    planned = forge(recipe("a")).output_dir
    assert "Replaying" not in caplog.text
    replayed = forge(recipe("b")).output_dir
    assert "Replaying the forge of these inputs" in caplog.text
    assert artifact_hashes(replayed) == artifact_hashes(planned)


def test_a_padded_vocabulary_takes_the_new_tokens_in_existing_rows_and_tied_embeddings_stay_tied(prefix_checkpoints, tmp_path):
    # qwen2_tiny: 544 rows for 512 tokens, tied embeddings, a pad token of its own (as Qwen2.5).
    out = forge(prefix_recipe(tmp_path / "out", decoder="qwen2", checkpoints=prefix_checkpoints)).output_dir
    manifest = json.loads((out / "vedforge_manifest.json").read_text())
    assert manifest["token_ids"]["added_tokens"] == ["<image>"]
    assert manifest["token_ids"]["vocab_size"] == manifest["token_ids"]["old_vocab_size"] == 544
    assert manifest["resized_tensors"] == {}
    forged = _safetensors(out / "model.safetensors")
    assert "language_model.lm_head.weight" not in forged
    lm = _safetensors(prefix_checkpoints["qwen2"] / "model.safetensors")
    assert np.array_equal(forged["language_model.model.embed_tokens.weight"], lm["model.embed_tokens.weight"])
    model, _ = _load(out)
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def test_gpt2_head_is_an_untied_copy_of_its_grown_embeddings(prefix_checkpoints, tmp_path):
    # transformers 5's LLaVA ties its head to model.language_model.embed_tokens, which GPT-2 names wte.
    out = forge(prefix_recipe(tmp_path / "out", decoder="gpt2", checkpoints=prefix_checkpoints)).output_dir
    forged = _safetensors(out / "model.safetensors")
    wte, head = forged["language_model.model.wte.weight"], forged["language_model.lm_head.weight"]
    assert wte.shape[0] == 514 and np.array_equal(wte, head)
    lm = _safetensors(prefix_checkpoints["gpt2"] / "model.safetensors")
    assert np.array_equal(wte[:512], lm["transformer.wte.weight"])
    manifest = json.loads((out / "vedforge_manifest.json").read_text())
    assert manifest["prefix"]["head_copied_from"] == "language_model.model.wte.weight"
    model, processor = _load(out)
    assert model.config.tie_word_embeddings is False
    # GPT-2 has no chat template: the documented default (LLaVA-1.5's layout) is used.
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}], add_generation_prompt=True)
    assert prompt == "USER: <image>\nDescribe.\nASSISTANT:"
    with torch.no_grad():
        model.generate(**_chat_inputs(processor), max_new_tokens=2)


@pytest.mark.parametrize("encoder", ["clip", "dinov2"])
def test_clip_and_dinov2_towers(prefix_checkpoints, tmp_path, encoder):
    out = forge(prefix_recipe(tmp_path / "out", encoder=encoder, decoder="llama", checkpoints=prefix_checkpoints)).output_dir
    forged = _safetensors(out / "model.safetensors")
    tower = _safetensors(prefix_checkpoints[encoder] / "model.safetensors")
    taken = [n for n in tower if "vision_tower." + n in forged]
    assert taken and all(np.array_equal(forged["vision_tower." + n], tower[n]) for n in taken)
    manifest = json.loads((out / "vedforge_manifest.json").read_text())
    if encoder == "clip":  # the text tower is left behind
        assert any(n.startswith("text_model.") for n in manifest["unused_checkpoint_tensors"]["encoder"])
    assert "encoder" not in manifest["new_tensors"]
    model, processor = _load(out)
    inputs = _chat_inputs(processor)
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == model.config.image_seq_length
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=2)


def test_select_strategy_full_keeps_the_cls_token_and_linear_projector_is_one_linear_map(tmp_path):
    out = forge(prefix_recipe(tmp_path / "out", "prefix.vision_feature_select_strategy=full",
                              "prefix.projector=linear", "prefix.vision_feature_layer=-1")).output_dir
    model, processor = _load(out)
    assert model.config.vision_feature_select_strategy == "full" and model.config.image_seq_length == 17
    assert model.config.projector_hidden_act == "linear"
    projector = model.model.multi_modal_projector
    assert torch.equal(projector.linear_2.weight, torch.eye(projector.linear_2.weight.shape[0]))
    features = torch.randn(2, 5, projector.linear_1.in_features)
    with torch.no_grad():
        assert torch.allclose(projector(features), projector.linear_1(features), atol=1e-6)
    inputs = _chat_inputs(processor)
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 17
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=2)
    manifest = json.loads((out / "vedforge_manifest.json").read_text())
    assert manifest["prefix"]["select_strategy_from"] == "recipe" and manifest["prefix"]["projector"] == "linear"


def test_pipeline_image_text_to_text_captions(tmp_path):
    from transformers import pipeline

    out = forge(prefix_recipe(tmp_path / "out", decoder="qwen2_tiny")).output_dir
    captioner = pipeline("image-text-to-text", model=str(out))
    result = captioner(text=[{"role": "user", "content": [{"type": "image", "image": _image()},
                                                          {"type": "text", "text": "Describe the image."}]}],
                       max_new_tokens=3, do_sample=False)
    reply = result[0]["generated_text"][-1]
    assert reply["role"] == "assistant" and isinstance(reply["content"], str)


REFUSALS = {
    "flax": (["architecture=prefix", "backend=flax"], RecipeError, "no Flax LLaVA"),
    "bert": ([*PREFIX, "decoder=bert_tiny"], UnsupportedModelError, "not a decoder-only language model"),
    "bart": ([*PREFIX, "decoder=bart_tiny"], UnsupportedModelError, "not a decoder-only language model"),
    # A hierarchical tower's tokens merge from stage to stage; a convolutional one emits feature maps.
    "swin": ([*PREFIX, "encoder=swin_tiny"], UnsupportedModelError, "patch tokens of width hidden_size"),
    "convnext": ([*PREFIX, "encoder=convnext_tiny"], UnsupportedModelError, "patch tokens of width hidden_size"),
    "vision_as_lm": ([*PREFIX, "decoder=vit_tiny"], UnsupportedModelError, "is a vision model"),
    "no_causal_head": ([*PREFIX], UnsupportedModelError, "has no causal language-model class"),
    "llama_cross": (["backend=pt", "architecture=cross_attention", "decoder=llama_tiny"], UnsupportedModelError,
                    "architecture=prefix backend=pt pairs it"),
    "prefix_settings": (["architecture=cross_attention", "prefix.projector=linear"], RecipeError,
                        "apply to architecture=prefix only"),
    "zero_init": ([*PREFIX, "cross_attention.init=zero"], RecipeError, "cross_attention.init applies"),
    "layer": ([*PREFIX, "prefix.vision_feature_layer=7"], VedforgeError, "out of range"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_impossible_combinations_are_refused_at_plan_time_with_the_reason(tmp_path, case):
    from tests_support import no_weight_file_opened
    from vedforge.pipeline.plan import build_plan

    overrides, error, reason = REFUSALS[case]
    if case == "vision_as_lm":
        overrides = [*PREFIX, "decoder.name_or_path=builtin:vit_tiny"]
    if case == "no_causal_head":  # a sequence-to-sequence model: AutoModelForCausalLM has no class for it
        from transformers import T5Config

        T5Config(vocab_size=64, d_model=16, num_layers=1, num_heads=2, d_ff=32).save_pretrained(tmp_path / "t5")
        overrides = [*PREFIX, f"decoder.name_or_path={tmp_path / 't5'}", "decoder.weights=pretrained"]
    with no_weight_file_opened() as opened, pytest.raises(error) as caught:
        build_plan(compose_recipe([*overrides, f"output.dir={tmp_path / 'out'}"]))
    assert reason in str(caught.value)
    assert opened == [] and not (tmp_path / "out").exists()


def test_plan_numbers_are_the_forged_manifests(prefix_checkpoints, tmp_path):
    from vedforge.pipeline.plan import build_plan
    from vedforge.pipeline.plan_report import plan_summary

    cfg = prefix_recipe(tmp_path / "out", encoder="vit", decoder="llama", checkpoints=prefix_checkpoints)
    summary = plan_summary(build_plan(cfg))
    assert not (tmp_path / "out").exists()
    manifest = forge(cfg).manifest
    assert summary["parameters"] == manifest["parameters"]
    assert summary["write_bytes"] == sum(f["bytes"] for n, f in manifest["files"].items() if n == "model.safetensors") - \
        _header_bytes(tmp_path / "out" / "model.safetensors")
    assert summary["token_ids"] == {k: v for k, v in manifest["token_ids"].items()}
    assert summary["tensors"]["new"] == manifest["new_tensors"]


def _header_bytes(path: Path) -> int:
    import struct

    with open(path, "rb") as f:
        return 8 + struct.unpack("<Q", f.read(8))[0]


def test_manifest_card_resume_and_verify(tmp_path):
    from vedforge.pipeline.verify import verify

    cfg = prefix_recipe(tmp_path / "out", decoder="gemma_tiny")
    result = forge(cfg)
    manifest = result.manifest
    assert manifest["architecture"] == "prefix" and manifest["model_class"] == "LlavaForConditionalGeneration"
    assert manifest["recipe"]["architecture"] == {"name": "prefix"}
    assert manifest["prefix"]["vision_feature_select_strategy"] == "default"
    assert manifest["prefix"]["select_strategy_from"] == "encoder family"
    assert manifest["prefix"]["chat_template"].startswith("language model's own")
    assert manifest["parameters"]["new"] == manifest["parameters"]["projector"] + sum(
        (new - old) * 32 for old, new in manifest["resized_tensors"].get("decoder", {}).values())
    card = (result.output_dir / "README.md").read_text()
    assert "LlavaForConditionalGeneration.from_pretrained" in card and "apply_chat_template" in card
    assert "pipeline_tag: image-text-to-text" in card
    again = forge(prefix_recipe(tmp_path / "out", decoder="gemma_tiny"))
    assert again.skipped
    checks = verify(result.output_dir)
    assert checks and all(c.status == "ok" for c in checks), [(c.name, c.status) for c in checks if c.status != "ok"]


def test_cross_attention_recipes_are_recorded_as_before(tmp_path):
    # The default architecture leaves no trace in the recorded recipe, so existing artifacts
    # still resume and verify; naming it explicitly forges the very same bytes.
    backend = [] if FLAX else ["backend=pt"]  # the default backend, where Flax classes exist
    a = forge(compose_recipe([f"output.dir={tmp_path / 'a'}", *backend])).manifest
    b = forge(compose_recipe(["architecture=cross_attention", f"output.dir={tmp_path / 'b'}", *backend])).manifest
    assert "architecture" not in a["recipe"] and "prefix" not in a["recipe"] and "architecture" not in a
    assert a["recipe"] == b["recipe"]
    assert {n: f["sha256"] for n, f in a["files"].items()} == {n: f["sha256"] for n, f in b["files"].items()}


def test_offline_prefix_recipe_forges(tmp_path):
    result = forge(compose_recipe(["recipe=tiny_prefix_smoke", f"output.dir={tmp_path / 'out'}"]))
    assert result.manifest["architecture"] == "prefix" and result.manifest["recipe"]["seed"] == 1234
    _load(result.output_dir)


@pytest.mark.parametrize("recipe", ["siglip_smollm2_prefix", "clip_qwen2_prefix", "compare_prefix_pairs"])
def test_prefix_recipes_compose_as_prefix_pt_recipes(recipe):
    cfg = compose_recipe([f"recipe={recipe}"])
    assert (cfg.architecture.name, cfg.backend.name.value) == ("prefix", "pt")
    if recipe != "compare_prefix_pairs":
        assert cfg.encoder.weights.value == cfg.decoder.weights.value == "pretrained"
    if recipe == "siglip_smollm2_prefix":
        assert cfg.encoder.name_or_path == "google/siglip-base-patch16-224"
        assert cfg.decoder.name_or_path == "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.mark.slow
def test_a_sweep_mixes_architectures_and_records_a_refused_pair_as_failed(tmp_path):
    from tests_support import run_cli

    sweep = tmp_path / "sweep"
    result = run_cli("-m", "architecture=cross_attention,prefix", "backend=pt", "decoder=gpt2_tiny,llama_tiny",
                     f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    summary = json.loads((sweep / "summary.json").read_text())
    rows = {row["pair"]: row for row in summary["rows"]}
    assert summary["forged"] == 3 and len(rows) == 4
    assert {pair: row["architecture"] for pair, row in rows.items()} == {
        pair: pair.split("architecture=")[1].split("__")[0] for pair in rows}
    assert "| architecture |" in (sweep / "summary.md").read_text()
    failed = rows["vit_tiny__llama_tiny__architecture=cross_attention__backend=pt"]
    assert failed["status"] == "failed" and "architecture=prefix backend=pt pairs it" in failed["error"]
    for pair in ("vit_tiny__gpt2_tiny__architecture=prefix__backend=pt", "vit_tiny__llama_tiny__architecture=prefix__backend=pt"):
        manifest = json.loads((sweep / pair / "vedforge_manifest.json").read_text())
        assert manifest["architecture"] == "prefix"
    assert (sweep / "vit_tiny__gpt2_tiny__architecture=cross_attention__backend=pt" / "model.safetensors").is_file()


@pytest.mark.slow
def test_plan_command_shows_a_refused_prefix_pair_with_its_reason(tmp_path):
    from tests_support import run_cli

    result = run_cli("plan", "-m", "--json", "architecture=prefix", "backend=flax,pt", "decoder=llama_tiny",
                     f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    pairs = {p["pair"]: p for p in json.loads(result.stdout)["pairs"]}
    refused = [p for p in pairs.values() if p["outcome"] == "refused"]
    assert len(refused) == 1 and "no Flax LLaVA" in refused[0]["reason"]
    planned = [p for p in pairs.values() if p["outcome"] == "forge"]
    assert len(planned) == 1 and planned[0]["architecture"] == "prefix"
    assert planned[0]["token_ids"]["added_tokens"] == ["<image>", "<pad>"]
    assert not (tmp_path / "sweep").exists()


def test_mistral_lm(prefix_checkpoints, tmp_path):
    # No embedded Mistral: a tiny random one with the tiny Llama tokenizer (Mistral uses Llama's).
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
                           tie_word_embeddings=False)
    torch.manual_seed(0)
    MistralForCausalLM(config).save_pretrained(tmp_path / "mistral")
    for item in (assets_dir() / "llama_tiny").iterdir():
        if item.name != "config.json":
            shutil.copy(item, tmp_path / "mistral" / item.name)
    out = forge(prefix_recipe(tmp_path / "out", decoder="mistral", checkpoints={"mistral": tmp_path / "mistral"})).output_dir
    model, processor = _load(out)
    assert model.config.text_config.model_type == "mistral"
    with torch.no_grad():
        model.generate(**_chat_inputs(processor), max_new_tokens=2)


def test_siglip_tower_has_no_cls_token_so_every_patch_is_an_image_token(tmp_path):
    # SigLIP's family record: a two-tower checkpoint whose vision tower is taken, no CLS token, so
    # the select strategy defaults to "full"; the tower's tensors come through bit for bit.
    from tests_support import save_torch_siglip_checkpoint

    checkpoint = save_torch_siglip_checkpoint(tmp_path / "siglip", seed=0)
    out = forge(prefix_recipe(tmp_path / "out", encoder="siglip", checkpoints={"siglip": checkpoint})).output_dir
    model, processor = _load(out)
    assert type(model.model.vision_tower).__name__ == "SiglipVisionModel"
    assert model.config.vision_feature_select_strategy == "full" and model.config.image_seq_length == 16
    assert processor.num_additional_image_tokens == 0
    inputs = _chat_inputs(processor)
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 16
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=2)
    source, forged = _safetensors(checkpoint / "model.safetensors"), _safetensors(out / "model.safetensors")
    tower = {name: tensor for name, tensor in source.items() if name.startswith("vision_model.")}
    assert tower and all(np.array_equal(forged[f"vision_tower.{name}"], tensor) for name, tensor in tower.items())
    assert not any(name.startswith("vision_tower.text_model") for name in forged)
    with pytest.raises(VedforgeError, match="has none"):
        forge(prefix_recipe(tmp_path / "out2", "prefix.vision_feature_select_strategy=default", encoder="siglip",
                            checkpoints={"siglip": checkpoint}))


@pytest.mark.parametrize("encoder, tokens", [("beit_tiny", 16), ("deit_tiny", 17), ("dinov2_tiny", 16), ("clip_vision_tiny", 16),
                                             ("siglip_tiny", 16)])
def test_every_tower_family_generates(tmp_path, encoder, tokens):
    out = forge(prefix_recipe(tmp_path / "out", encoder=encoder, decoder="qwen2_tiny")).output_dir
    model, processor = _load(out)
    inputs = _chat_inputs(processor)
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == model.config.image_seq_length == tokens
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=2)


@pytest.mark.slow
def test_byte_identical_rebuilds_across_hash_seeds(prefix_checkpoints, tmp_path):
    from tests_support import run_cli

    hashes = []
    for hash_seed in ("0", "4242"):
        out = tmp_path / f"out{hash_seed}"
        result = run_cli(*PREFIX, f"encoder.name_or_path={prefix_checkpoints['clip']}", "encoder.weights=pretrained",
                         f"decoder.name_or_path={prefix_checkpoints['llama']}", "decoder.weights=pretrained",
                         f"output.dir={out}", cwd=tmp_path, env={"PYTHONHASHSEED": hash_seed})
        assert result.returncode == 0, result.stderr
        files = json.loads((out / "vedforge_manifest.json").read_text())["files"]
        hashes.append({name: f["sha256"] for name, f in files.items()})
    assert hashes[0] == hashes[1]


def test_the_lms_own_generation_config_is_kept_with_the_forges_ids(prefix_checkpoints, tmp_path):
    from transformers import AutoTokenizer, GenerationConfig

    lm = tmp_path / "qwen2"
    shutil.copytree(prefix_checkpoints["qwen2"], lm)
    tokenizer = AutoTokenizer.from_pretrained(lm)
    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    GenerationConfig(eos_token_id=eos, do_sample=True, temperature=0.7, top_p=0.8).save_pretrained(lm)
    out = forge(prefix_recipe(tmp_path / "out", decoder="qwen2", checkpoints={"qwen2": lm})).output_dir
    generation = GenerationConfig.from_pretrained(out)
    assert generation.eos_token_id == eos and (generation.do_sample, generation.temperature) == (True, 0.7)
    assert generation.pad_token_id == tokenizer.pad_token_id


def test_hub_checkpoints_from_the_cache_offline_are_recorded_with_their_commits(prefix_checkpoints, tmp_path):
    from tests_support import add_to_cache

    cache = tmp_path / "hub"
    commits = {"vit": "a" * 40, "llama": "b" * 40}
    add_to_cache(cache, "org/tiny-vit", commits["vit"], prefix_checkpoints["vit"])
    add_to_cache(cache, "org/tiny-llama", commits["llama"], prefix_checkpoints["llama"])
    cfg = compose_recipe([*PREFIX, "encoder.name_or_path=org/tiny-vit", "encoder.weights=pretrained",
                          "decoder.name_or_path=org/tiny-llama", "decoder.weights=pretrained", f"hub.cache_dir={cache}",
                          "hub.offline=true", f"output.dir={tmp_path / 'out'}"])
    result = forge(cfg)
    inputs = result.manifest["inputs"]
    assert (inputs["encoder"]["commit"], inputs["decoder"]["commit"]) == (commits["vit"], commits["llama"])
    forged = _safetensors(result.output_dir / "model.safetensors")
    lm = _safetensors(prefix_checkpoints["llama"] / "model.safetensors")
    assert np.array_equal(forged["language_model.model.norm.weight"], lm["model.norm.weight"])
    card = (result.output_dir / "README.md").read_text()
    assert "- org/tiny-vit" in card and "- org/tiny-llama" in card


def test_a_checkpoint_missing_a_tensor_is_refused_at_plan_time_and_nothing_is_written(prefix_checkpoints, tmp_path):
    from safetensors.numpy import save_file

    from vedforge.core.errors import CorruptCheckpointError

    lm = tmp_path / "llama"
    shutil.copytree(prefix_checkpoints["llama"], lm)
    tensors = _safetensors(lm / "model.safetensors")
    del tensors["model.norm.weight"]
    save_file(tensors, str(lm / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(VedforgeError, match="has no tensor for 'language_model.model.norm.weight'"):
        forge(prefix_recipe(tmp_path / "out", decoder="llama", checkpoints={"llama": lm}))
    assert not (tmp_path / "out").exists()
    (lm / "model.safetensors").write_bytes((lm / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(CorruptCheckpointError, match="cannot be parsed as safetensors"):
        forge(prefix_recipe(tmp_path / "out", decoder="llama", checkpoints={"llama": lm}))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("override", ["prefix.projector=mlp3x_gelu", "prefix.vision_feature_select_strategy=cls",
                                      "prefix.vision_feature_layer=last", "architecture=llava", "prefix.projecter=linear"])
def test_bad_prefix_settings_fail_when_hydra_composes_the_recipe(override):
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    with pytest.raises((HydraException, OmegaConfBaseException)):
        compose_recipe([*PREFIX, override])
