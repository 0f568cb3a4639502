"""Record the tensor names transformers 4.57's save_pretrained writes for each embedded tiny model.

tests/weights/test_saved_names.py checks that vedforge.weights.saved_names gives these names under
whatever transformers is installed, so a rename in a later transformers release is caught. Run with
transformers 4.57: python scripts/record_saved_names.py tests/data/saved_names_4_57.json
"""

from __future__ import annotations

import json
import sys

import torch
import transformers
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from vedforge.core.resources import assets_dir

ENCODERS = ("vit", "beit", "deit", "dinov2", "clip", "siglip", "swin", "convnext", "detr")
LMS = ("gpt2", "bert", "roberta", "bart", "llama", "qwen2", "gemma")


def main(out: str) -> None:
    assert transformers.__version__.startswith("4.57"), transformers.__version__
    names = {}
    for name in ENCODERS + LMS:
        config = AutoConfig.from_pretrained(assets_dir() / f"{name}_tiny")
        if name in ("clip", "siglip"):
            config = config.vision_config
        cls = AutoModel if name in ENCODERS else AutoModelForCausalLM
        with torch.device("meta"):
            model = cls.from_config(config)
        names[name] = sorted(model.state_dict())
    for name in ("clip", "siglip"):  # two-tower checkpoints, whole
        with torch.device("meta"):
            model = AutoModel.from_config(AutoConfig.from_pretrained(assets_dir() / f"{name}_tiny"))
        names[f"{name}_full"] = sorted(model.state_dict())
    decoder = AutoConfig.from_pretrained(assets_dir() / "gpt2_tiny")
    decoder.is_decoder, decoder.add_cross_attention = True, True
    for name in ENCODERS[:7]:  # each encoder inside VisionEncoderDecoderModel (ConvNeXt and DETR need fixes)
        config = AutoConfig.from_pretrained(assets_dir() / f"{name}_tiny")
        if name in ("clip", "siglip"):
            config = config.vision_config
        combined = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(config, decoder)
        with torch.device("meta"):
            model = transformers.VisionEncoderDecoderModel(combined)
        names[f"ved_{name}_gpt2"] = sorted(model.state_dict())
    with open(out, "w") as f:
        json.dump({"transformers": transformers.__version__, "names": names}, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
