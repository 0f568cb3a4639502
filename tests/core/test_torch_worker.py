"""The torch worker: derivations that need transformers' PyTorch classes, run in a process of their
own when this one hides torch from transformers, with the same results and the same refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")

from conftest import TRANSFORMERS_5  # noqa: E402
from vedforge.core.resources import assets_dir  # noqa: E402

# Run with torch hidden from transformers, as the command line runs a prefix forge of pretrained parts.
PROBE = r"""
import json, sys
from transformers import AutoConfig
from vedforge.core import torch_worker
from vedforge.core.errors import UnsupportedModelError
from vedforge.families.introspect import config_data
config = config_data(AutoConfig.from_pretrained(sys.argv[1]))
out = {"has_torch": torch_worker.transformers_has_torch()}
out["facts"] = torch_worker.call("vedforge.families.introspect:language_model_data", config=config, where="LM")
t5 = {"model_type": "t5", "vocab_size": 64, "d_model": 16, "num_layers": 1, "num_heads": 2, "d_ff": 32}
try:
    torch_worker.call("vedforge.families.introspect:language_model_data", config=t5, where="the decoder T5")
except UnsupportedModelError as exc:
    out["refusal"] = str(exc)
out["torch_imported_here"] = "torch" in sys.modules
print(json.dumps(out))
"""


def test_a_derivation_in_the_worker_equals_the_one_in_process_and_keeps_torch_out():
    import dataclasses

    from transformers import AutoConfig

    from vedforge.families.introspect import derive_language_model

    llama = assets_dir() / "llama_tiny"
    env = {**os.environ, "USE_TORCH": "0", "USE_FLAX": "0"}
    run = subprocess.run([sys.executable, "-c", PROBE, str(llama)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    if not TRANSFORMERS_5:  # transformers 5 imports torch with its configuration module, whatever USE_TORCH says
        assert out["has_torch"] is False and out["torch_imported_here"] is False
    assert out["facts"] == dataclasses.asdict(derive_language_model(AutoConfig.from_pretrained(llama), "LM"))
    # A refusal made in the worker is raised here with its class and its whole message.
    assert "the decoder T5" in out["refusal"] and "has no causal language-model class" in out["refusal"]
