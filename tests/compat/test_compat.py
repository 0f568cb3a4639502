"""vedforge.compat: ``python -m vedforge.compat SCRIPT`` runs scripts with the fixes installed, and
BEiT's drop path trains with only a dropout PRNG.

``install()`` changes transformers' classes for the whole process, so whatever needs it runs in
a subprocess here, and the other tests keep seeing stock transformers.
"""

from __future__ import annotations

import pytest

from conftest import FLAX, FLAX_ONLY_REASON

# Flax-only: checkpoints saved by transformers' Flax classes, or the Flax model itself.
if not FLAX:
    pytest.skip(FLAX_ONLY_REASON, allow_module_level=True)

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from conftest import compose_recipe
from vedforge.core.errors import EXIT_USER_ERROR
from vedforge.pipeline.runner import forge


def run_compat(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu", "USE_TORCH": "0"}
    return subprocess.run([sys.executable, "-m", "vedforge.compat", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def beit_gpt2(tmp_path_factory) -> Path:
    """The embedded tiny BEiT (drop_path_rate 0.1, as the released BEiT configs) + GPT-2."""
    out = tmp_path_factory.mktemp("beit") / "model"
    return forge(compose_recipe(["encoder=beit_tiny", "decoder=gpt2_tiny", f"output.dir={out}"])).output_dir


def test_runs_a_script_as_main_with_its_arguments_and_the_fixes_installed(tmp_path):
    script_dir = tmp_path / "scripts"
    script_dir.mkdir()
    (script_dir / "helper_module.py").write_text("VALUE = 42\n")
    script = script_dir / "show.py"
    script.write_text(textwrap.dedent("""
        import json, sys
        import helper_module  # found beside the script, as with `python show.py`
        from transformers import FlaxVisionEncoderDecoderModel
        from transformers.models.beit import modeling_flax_beit
        print(json.dumps({"name": __name__, "argv": sys.argv, "helper": helper_module.VALUE,
                          "module_class": FlaxVisionEncoderDecoderModel.module_class.__module__,
                          "drop_path": modeling_flax_beit.FlaxBeitDropPath.__module__}))
        sys.exit(3)
    """))
    result = run_compat(str(script), "--flag", "value with space", cwd=tmp_path)
    assert result.returncode == 3, result.stderr  # the script's own exit code
    shown = json.loads(result.stdout.strip().splitlines()[-1])
    assert shown == {"name": "__main__", "argv": [str(script), "--flag", "value with space"], "helper": 42,
                     "module_class": "vedforge.compat", "drop_path": "vedforge.compat"}


def test_runs_a_module_with_dash_m(tmp_path):
    (tmp_path / "mymod.py").write_text("import sys\nprint(__name__, sys.argv[1:])\n")
    env_path = {"PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "vedforge.compat", "-m", "mymod", "a", "b"], cwd=tmp_path,
                            env={**os.environ, **env_path, "USE_TORCH": "0"}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "__main__ ['a', 'b']"


def test_help_is_plain_text(tmp_path):
    result = run_compat("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m vedforge.compat SCRIPT")
    assert "``" not in result.stdout and ":func:" not in result.stdout, result.stdout
    assert "vedforge.compat.install()" in result.stdout and "as __main__ with sys.argv" in result.stdout


@pytest.mark.parametrize("args,fragment", [((), "usage"), (("no_such_script.py",), "'no_such_script.py' does not exist")])
def test_a_missing_script_is_one_clear_message(tmp_path, args, fragment):
    result = run_compat(*args, cwd=tmp_path)
    assert result.returncode == EXIT_USER_ERROR
    assert fragment in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow  # two Flax training runs, ~25 s
def test_stock_beit_fails_to_train_without_the_fix_and_trains_with_it(beit_gpt2, tmp_path):
    script = tmp_path / "one_step.py"
    script.write_text(textwrap.dedent("""
        import sys, jax, numpy as np
        from transformers import FlaxVisionEncoderDecoderModel
        model = FlaxVisionEncoderDecoderModel.from_pretrained(sys.argv[1])
        pixels = np.random.RandomState(0).rand(2, 3, 32, 32).astype("float32")
        ids = np.ones((2, 4), "i4")
        try:
            out = model(pixels, decoder_input_ids=ids, dropout_rng=jax.random.PRNGKey(0), train=True)
            print("trained", out.logits.shape)
        except Exception as exc:
            print("failed", type(exc).__name__, exc)
    """))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu", "USE_TORCH": "0"}
    stock = subprocess.run([sys.executable, str(script), str(beit_gpt2)], env=env, capture_output=True, text=True,
                           timeout=300)
    assert "failed InvalidRngError" in stock.stdout and "droppath" in stock.stdout, stock.stdout + stock.stderr
    fixed = run_compat(str(script), str(beit_gpt2), cwd=tmp_path)
    assert "trained (2, 4," in fixed.stdout, fixed.stdout + fixed.stderr


def test_the_drop_path_draws_from_the_dropout_stream(tmp_path):
    """The fix keeps stochastic depth: with a high rate, training outputs depend on the dropout
    key; without training they do not. The rate itself is the recipe's."""
    from vedforge import compat

    out = forge(compose_recipe(["encoder=beit_tiny", "decoder=gpt2_tiny", f"output.dir={tmp_path / 'm'}",
                                "+encoder.config_overrides.drop_path_rate=0.9",
                                "+encoder.config_overrides.hidden_dropout_prob=0.0"])).output_dir
    model = compat.FlaxVisionEncoderDecoderModel.from_pretrained(out)
    assert model.config.encoder.drop_path_rate == 0.9
    pixels = np.random.RandomState(0).rand(4, 3, 32, 32).astype("float32")
    ids = np.ones((4, 3), "i4")
    import jax

    def encoded(**kwargs):
        return np.asarray(model.encode(pixels, **kwargs).last_hidden_state)

    first = encoded(dropout_rng=jax.random.PRNGKey(0), train=True)
    second = encoded(dropout_rng=jax.random.PRNGKey(1), train=True)
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(first, encoded(dropout_rng=jax.random.PRNGKey(0), train=True))
    np.testing.assert_array_equal(encoded(train=False), encoded(train=False))
    logits = model(pixels, decoder_input_ids=ids, dropout_rng=jax.random.PRNGKey(0), train=True).logits
    assert np.isfinite(np.asarray(logits)).all()


def test_a_droppath_stream_given_explicitly_is_used_as_before():
    """FlaxBeitModel passes its own "droppath" key; the fixed layer uses it, as stock does."""
    import jax
    from transformers import BeitConfig, FlaxBeitModel

    from vedforge import compat

    compat.fix_beit_drop_path()
    config = BeitConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                        image_size=16, patch_size=8, drop_path_rate=0.9, hidden_dropout_prob=0.0,
                        use_mask_token=False)
    model = FlaxBeitModel(config, seed=0)
    pixels = np.random.RandomState(0).rand(4, 3, 16, 16).astype("float32")
    a = np.asarray(model(pixels, dropout_rng=jax.random.PRNGKey(0), train=True).last_hidden_state)
    b = np.asarray(model(pixels, dropout_rng=jax.random.PRNGKey(1), train=True).last_hidden_state)
    assert not np.allclose(a, b)
