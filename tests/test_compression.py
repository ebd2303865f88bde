"""The sweep's Compressor: a nested setting is applied on top, level after level; anything else
starts from the dense weights, restored in place; calibration windows are drawn once."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_CORPUS, build_tiny_model, build_tiny_tokenizer
from lobolib import LoboError
from lobolib.experiment.compression import Compressor
from lobolib.experiment.setting import Calibration, Setting, check_levels
from lobolib.prune import prune, sparsity_report


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "calibration.txt"
    path.write_text(" ".join(TINY_CORPUS * 40))
    return path


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def setting(method, levels, **options):
    unit = "bits" if method in ("rtn", "gptq") else "sparsity"
    return Setting(method, method, check_levels(levels, unit, "levels"), **options)


def test_a_nested_setting_goes_on_top_and_equals_one_shot(tokenizer):
    model, fresh = build_tiny_model(len(tokenizer)), build_tiny_model(len(tokenizer))
    compress = Compressor(tokenizer)
    magnitude = setting("magnitude", [0.0, 0.3, 0.6])
    for level in magnitude.levels:
        report = compress(model, magnitude, level)
    prune(fresh, 0.6)
    assert all(torch.equal(a, b) for a, b in zip(weights(model).values(), weights(fresh).values()))
    assert report["pruned"] == pytest.approx(0.6, abs=1e-3) and report["method"] == "magnitude/layer"


def test_a_setting_that_does_not_nest_starts_from_dense_at_every_level(tokenizer, text):
    calibration = Calibration(source=str(text), n_samples=4, seq_len=16)
    wanda = setting("wanda", [0.0, 0.3, 0.6], calibration=calibration)
    model = build_tiny_model(len(tokenizer))
    dense = weights(model)
    compress = Compressor(tokenizer, restores=True)
    for level in wanda.levels:
        report = compress(model, wanda, level)
    one_shot = build_tiny_model(len(tokenizer))
    from lobolib.calibration import calibration_tokens

    tokens = calibration_tokens(str(text), tokenizer, n_samples=4, seq_len=16, seed=0)
    prune(one_shot, 0.6, method="wanda", calibration=tokens)
    assert all(torch.equal(a, b) for a, b in zip(weights(model).values(), weights(one_shot).values()))
    assert report["calibration"]["fingerprint"] and report["calibration"]["shape"] == [4, 16]
    assert len(compress._windows) == 1  # drawn once for all levels
    compress(model, wanda, 0.0)  # back to dense
    assert all(torch.equal(dense[k], v) for k, v in weights(model).items())


def test_switching_settings_restores_dense_first(tokenizer):
    model = build_tiny_model(len(tokenizer))
    dense = weights(model)
    compress = Compressor(tokenizer, restores=True)
    compress(model, setting("magnitude", [0.0, 0.5]), 0.5)
    report = compress(model, setting("rtn", [16, 8, 4], group_size=16), 8)
    assert report["method"] == "rtn/g16" and sparsity_report(model)["pruned"] < 0.01
    restored = Compressor(tokenizer, restores=True)
    fresh = build_tiny_model(len(tokenizer))
    restored(fresh, setting("rtn", [16, 8], group_size=16), 8)
    assert all(torch.equal(a, b) for a, b in zip(weights(model).values(), weights(fresh).values()))
    assert not all(torch.equal(dense[k], v) for k, v in weights(model).items())


def test_without_a_dense_copy_a_second_setting_is_refused(tokenizer):
    model = build_tiny_model(len(tokenizer))
    compress = Compressor(tokenizer)
    compress(model, setting("magnitude", [0.0, 0.5]), 0.5)
    with pytest.raises(LoboError, match="no dense copy was kept"):
        compress(model, setting("magnitude", [0.0, 0.3], scope="global"), 0.3)


def test_joint_sparsegpt_and_gptq_prune_and_quantize_in_one_pass(tokenizer, text):
    joint = setting("sparsegpt", [0.0, 0.5], calibration=Calibration(source=str(text), n_samples=4, seq_len=16),
                    quantize_bits=4, group_size=16)
    assert joint.description.startswith("sparsegpt/gptq4/g16/calib=")
    model = build_tiny_model(len(tokenizer))
    report = Compressor(tokenizer)(model, joint, 0.5)
    assert 0.5 <= report["pruned"] < 0.56  # half pruned, and a few kept weights round to the grid's zero
    weight = model.model.layers[0].mlp.down_proj.weight.detach()
    groups = weight.reshape(weight.shape[0], -1, 16)
    assert max(len(set(g[g != 0].tolist())) for row in groups for g in row) <= 16  # 4-bit grid per group
    assert report["bits_per_weight"] == pytest.approx(4 * (1 - report["pruned"]) + 1 + 32 / 16, abs=0.01)
