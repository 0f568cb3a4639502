"""Random PyTorch recipes write the same bytes on transformers 4.57 and 5.x; SigLIP towers, drawn from
vedforge's hand-written table, follow the distributions transformers 4.57's _init_weights gives them."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import TRANSFORMERS_5, compose_recipe  # noqa: E402
from vedforge.pipeline.runner import forge  # noqa: E402

# model.safetensors of each recipe as forged with transformers 4.57.6 (and, identically, 5.25.0).
RECORDED = {
    "vit_gpt2": (["backend=pt", "encoder=vit_tiny", "decoder=gpt2_tiny"],
                 "6565e5b2fd28b024ea5fcf3062e5f5b76f87501ba912c29e65a6e23f4c7a5d15"),
    "clip_gpt2": (["backend=pt", "encoder=clip_vision_tiny", "decoder=gpt2_tiny"],
                  "24b1bc019929a51792047ccfbe5c797130c8fd5c0c755931bc94be62b9a72912"),
    "siglip_gpt2": (["backend=pt", "encoder=siglip_tiny", "decoder=gpt2_tiny"],
                    "9ab769d4ed4c062d4d14b1d90afb48669b97a9e52d52f42e2e9eae123d7f5b03"),
    "deit_gpt2": (["backend=pt", "encoder=deit_tiny", "decoder=gpt2_tiny"],
                  "e51f6bf025cdc2c81e84051fb9d8af61c9b2a81ce8c7a497dd0941b3615d71e4"),
    "convnext_gpt2": (["backend=pt", "encoder=convnext_tiny", "decoder=gpt2_tiny"],
                      "17605bbac9cdf4fb7ad75b2dcd27c9736b5152a24e0a972b718f562bee35d8b2"),
    "swin_bart": (["backend=pt", "encoder=swin_tiny", "decoder=bart_tiny"],
                  "fc3dc57700cbbaf41e00719eca65f46f7523ac05e846ad4c5c331647a458075f"),
    "detr_gpt2": (["backend=pt", "encoder=detr_tiny", "decoder=gpt2_tiny"],
                  "d7adacb4f54f115197fe0bf2c615ebdcb2a936b4a6fd92a2ad01aa5ad8bcba80"),
    "vit_llama_prefix": (["recipe=tiny_prefix_smoke"],
                         "9cbc2baf09e64d9400145b8acd2386d6b72d67e18ee43a4fc1ea46e63a51b8cd"),
    "siglip_qwen2_prefix": (["architecture=prefix", "backend=pt", "encoder=siglip_tiny", "decoder=qwen2_tiny"],
                            "e924465fc9278eee2d00a6c0498518e11db0fcdcfde356ae11c438be27056fb6"),
    # Parts drawn with the initialisers read off their PyTorch classes (no hand-written table):
    # Qwen3 and GPT-2 as causal LMs, a CLIP and a DINOv3 tower. (Gemma's tied head and padding row are
    # compared with its class in test_torch_derive; a Gemma prefix forge adds one token more on 5.x.)
    "clip_qwen3_prefix": (["architecture=prefix", "backend=pt", "encoder=clip_vision_tiny", "decoder=qwen3_tiny"],
                          "6ff99e7cea3e8aeb29ebe1390586f513adcf91dea94901ddd9f254db8a4a1ad1"),
    "dinov3_gpt2_prefix": (["architecture=prefix", "backend=pt", "encoder=dinov3_tiny", "decoder=gpt2_tiny"],
                           "764df023fed46446223bf99cd7b0fa6d5aee17f3a986705e6c4d062dcb56831a"),
    "dinov3_gpt2": (["backend=pt", "encoder=dinov3_tiny", "decoder=gpt2_tiny"],
                    "178614e7f61ef1b61c6f949ca85c52ac06be7fddb3c783e29a2bb75f4a694d0c"),
}


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_random_pytorch_recipes_write_the_bytes_recorded_on_both_transformers_lines(tmp_path, name):
    overrides, sha = RECORDED[name]
    out = forge(compose_recipe([*overrides, f"output.dir={tmp_path / 'out'}"])).output_dir
    assert hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest() == sha


@pytest.mark.parametrize("name", ["siglip"])
def test_numpy_draws_follow_transformers_4_57_initialisation(name):
    if TRANSFORMERS_5:
        pytest.skip("the reference is transformers 4.57's own _init_weights (5.x initialises these otherwise)")
    from transformers import AutoConfig, AutoModel

    from vedforge.core.resources import assets_dir
    from vedforge.families.torch_init import random_torch_state
    from vedforge.weights.saved_names import saved_names

    config = AutoConfig.from_pretrained(assets_dir() / f"{name}_tiny")
    if name == "siglip":
        config = config.vision_config
        config.hidden_size, config.intermediate_size, config.num_attention_heads = 256, 512, 4  # stable statistics
    torch.manual_seed(0)
    model = AutoModel.from_config(config)
    drawn = random_torch_state(config, seed=0, role="encoder", choice="AutoModel")
    renamed = saved_names(model)
    for name, param in model.named_parameters():
        theirs, ours = param.detach().numpy(), np.asarray(drawn[renamed[name]])
        assert ours.shape == theirs.shape and ours.dtype == np.float32
        assert abs(ours.std() - theirs.std()) <= 0.25 * theirs.std() + 1e-9, name
        assert abs(ours.mean() - theirs.mean()) <= 0.3 * theirs.std() + 1e-6, name
