"""backend=pt forges any model type transformers builds for the role: a sample in the default run,
every type of the installed transformers in the slow matrix."""

from __future__ import annotations

import shutil
import time
from collections import Counter

import pytest

pytest.importorskip("torch")

from conftest import compose_recipe  # noqa: E402
from tiny_models import check_forged, save_tiny_decoder, save_tiny_encoder  # noqa: E402

from vedforge.core.errors import UnsupportedModelError  # noqa: E402
from vedforge.pipeline.runner import forge  # noqa: E402


def _forge_pt(tmp_path, encoder, decoder) -> dict:
    out = tmp_path / "out"
    forge(compose_recipe([f"encoder.name_or_path={encoder}", "encoder.weights=pretrained",
                          f"decoder.name_or_path={decoder}", "decoder.weights=pretrained",
                          "backend=pt", "architecture=cross_attention", f"output.dir={out}"]))
    return check_forged(out, {"encoder": encoder, "decoder": decoder})


@pytest.mark.parametrize("model_type", ("mbart", "trocr", "electra"))
def test_a_decoder_without_a_flax_record_forges_loads_generates_and_learns(tiny_torch_checkpoints, tmp_path,
                                                                           model_type):
    decoder = save_tiny_decoder(model_type, tmp_path / model_type)
    checked = _forge_pt(tmp_path, tiny_torch_checkpoints["vit"], decoder)
    assert checked["compared"] > 0


@pytest.mark.parametrize("model_type", ("dinov3_vit", "swinv2"))
def test_an_encoder_without_a_record_forges_loads_generates_and_learns(tiny_torch_checkpoints, tmp_path, model_type):
    encoder = save_tiny_encoder(model_type, tmp_path / model_type)
    _forge_pt(tmp_path, encoder, tiny_torch_checkpoints["gpt2"])


def _vision_types() -> list[str]:
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    from vedforge.families.roles import _vision_tower

    found = []
    for model_type in sorted(MODEL_MAPPING_NAMES):
        try:
            config = AutoConfig.for_model(model_type)
        except Exception:  # a config that cannot be made without arguments is no vision model we can shrink
            continue
        if _vision_tower(config) is not None:
            found.append(model_type)
    return found


def _causal_lm_types() -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def _matrix(role, types, save, pair, tmp_path, capsys) -> None:
    outcomes: dict[str, tuple[str, str]] = {}
    started = time.monotonic()
    for model_type in types:
        shutil.rmtree(tmp_path / role, ignore_errors=True)  # a matrix of checkpoints would fill the disk
        where = tmp_path / role / model_type
        try:
            checkpoint = save(model_type, where / "checkpoint")
        except Exception as exc:  # the test's generic shrinking, not vedforge
            outcomes[model_type] = ("not built tiny", f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
                                    if str(exc).strip() else type(exc).__name__)
            continue
        try:
            encoder, decoder = pair(checkpoint)
            forge(compose_recipe([f"encoder.name_or_path={encoder}", "encoder.weights=pretrained",
                                  f"decoder.name_or_path={decoder}", "decoder.weights=pretrained",
                                  "backend=pt", "architecture=cross_attention", f"output.dir={where / 'out'}"]))
        except UnsupportedModelError as exc:
            outcomes[model_type] = ("refused", str(exc))
            continue
        except Exception as exc:
            outcomes[model_type] = ("failed to forge", f"{type(exc).__name__}: {str(exc)[:300]}")
            continue
        try:
            check_forged(where / "out", {"encoder": encoder, "decoder": decoder})
            outcomes[model_type] = ("works", "")
        except Exception as exc:
            outcomes[model_type] = ("forged but failed its checks", f"{type(exc).__name__}: {str(exc)[:300]}")
    counts = Counter(kind for kind, _ in outcomes.values())
    with capsys.disabled():
        print(f"\n{role}s: {len(types)} model types in {time.monotonic() - started:.0f} s: {dict(counts)}")
        for model_type, (kind, detail) in sorted(outcomes.items()):
            if kind != "works":
                print(f"  {model_type}: {kind}: {detail}")
    refused = {t: d for t, (k, d) in outcomes.items() if k == "refused"}
    assert not [t for t, d in refused.items() if "not among" in d or "\n" in d]
    broken = {t: d for t, (k, d) in outcomes.items() if k in ("failed to forge", "forged but failed its checks")}
    assert not broken, broken


@pytest.mark.slow
def test_every_causal_lm_of_this_transformers_forges_or_is_refused_with_a_reason(tiny_torch_checkpoints,
                                                                                 tmp_path, capsys):
    _matrix("decoder", _causal_lm_types(), save_tiny_decoder,
            lambda checkpoint: (tiny_torch_checkpoints["vit"], checkpoint), tmp_path, capsys)


@pytest.mark.slow
def test_every_vision_model_of_this_transformers_forges_or_is_refused_with_a_reason(tiny_torch_checkpoints,
                                                                                    tmp_path, capsys):
    _matrix("encoder", _vision_types(), save_tiny_encoder,
            lambda checkpoint: (checkpoint, tiny_torch_checkpoints["gpt2"]), tmp_path, capsys)
