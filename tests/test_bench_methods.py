"""`python -m lobolib bench methods` on a CPU: each method's level is timed through the library's
API, a method the library lacks gets a row saying why, and the sweep projection uses the
evaluation time it was given."""

from __future__ import annotations

import json
import sys

import pytest

import lobolib.prune as prune_api
from lobolib.errors import LoboError
from lobolib.perf import methods
from lobolib.perf.methods import METHOD_NAMES, ROW_KEYS, bench_methods, evaluation_seconds
from lobolib.perf.sweep import PAPER_RUNS

SMALL = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "vocab_size": 128}


@pytest.fixture
def magnitude_only(monkeypatch):
    """A `lobolib.prune.prune` that knows magnitude pruning only, and no `lobolib.quantize`: the
    API as far as this branch has it. Records each call."""
    calls = []

    def prune(model, sparsity, *, method="magnitude", pattern=None, calibration=None, scope="layer",
              include_lm_head=False):
        calls.append((method, pattern, None if calibration is None else tuple(calibration.shape)))
        if method != "magnitude" or pattern is not None:
            raise LoboError(f"unknown pruning method {method!r}")
        prune_api.magnitude_prune(model, sparsity, scope=scope)

    monkeypatch.setattr(prune_api, "prune", prune, raising=False)
    monkeypatch.setitem(sys.modules, "lobolib.quantize", None)
    return calls


def test_methods_bench_times_what_the_api_offers_and_says_why_not_for_the_rest(magnitude_only, tmp_path):
    out = tmp_path / "methods.json"
    result = bench_methods(device="cpu", shape=SMALL, calibration=(2, 8), eval_seconds=12.0, out=out)
    saved = json.loads(out.read_text())
    assert set(saved["methods"]) == set(METHOD_NAMES) and "CPU" in saved["note"]
    assert all(set(row) == set(ROW_KEYS) for row in saved["methods"].values())
    timed = saved["methods"]["magnitude"]
    assert timed["unavailable"] is None and timed["error"] is None and timed["seconds"] > 0
    assert timed["forward_bound_s"] is None  # magnitude runs no calibration forward
    assert timed["projected_sweep_minutes"] == pytest.approx(PAPER_RUNS * (timed["seconds"] + 12.0) / 60)
    assert "unknown pruning method 'wanda'" in saved["methods"]["wanda"]["unavailable"]
    assert "pattern='2:4'" in saved["methods"]["sparsegpt_2:4"]["call"]
    assert "no lobolib.quantize" in saved["methods"]["gptq4"]["unavailable"]
    assert result["eval_seconds_per_level"] == 12.0 and result["calibration"]["tokens"] == 8
    # calibrated methods are handed the calibration ids, magnitude is not
    assert ("wanda", None, (2, 16)) in magnitude_only and ("magnitude", None, None) in magnitude_only


def test_a_calibrated_method_gets_its_forward_bound(magnitude_only, monkeypatch):
    monkeypatch.setattr(methods, "METHODS", (methods.Method("magnitude_calibrated", "prune", {"method": "magnitude"}),))
    monkeypatch.setattr(methods, "METHOD_NAMES", ("magnitude_calibrated",))
    result = bench_methods(device="cpu", shape=SMALL, calibration=(3, 8))
    row = result["methods"]["magnitude_calibrated"]
    params = result["matmul_parameters"]
    assert row["calibration_tokens"] == 24
    assert row["forward_bound_s"] == pytest.approx(2 * params * 24 / result["peak_flops_measured"])
    assert row["time_over_bound"] == pytest.approx(row["seconds"] / row["forward_bound_s"])
    assert row["projected_sweep_minutes"] is None and "no evaluation time" in result["eval_source"]
    assert ("magnitude", None, (3, 8)) in magnitude_only


def test_no_method_available_is_one_error_before_any_work(monkeypatch):
    monkeypatch.delattr(prune_api, "prune", raising=False)
    monkeypatch.setitem(sys.modules, "lobolib.quantize", None)
    with pytest.raises(LoboError, match=r"no compression method to time: magnitude, wanda.*no prune\(\).*rtn4, gptq4"):
        bench_methods(device="cpu", shape=SMALL)


def test_evaluation_seconds_come_from_a_sweep_result(tmp_path):
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"device": "cuda:0 (H200)", "date": "2026-12-01",
                                 "seconds_per_question": {"pubmedqa": 0.01, "mmlu": 0.002}}))
    seconds, source = evaluation_seconds(sweep_json=sweep)
    assert seconds == pytest.approx(0.01 * 1000 + 0.002 * 762) and "H200" in source
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(LoboError, match="not a `bench sweep` result"):
        evaluation_seconds(sweep_json=tmp_path / "bad.json")
    with pytest.raises(LoboError, match="not both"):
        evaluation_seconds(eval_seconds=3.0, sweep_json=sweep)
    with pytest.raises(LoboError, match="positive"):
        evaluation_seconds(eval_seconds=0)
    with pytest.raises(LoboError, match="unknown method.*gptq3"):
        bench_methods(device="cpu", methods=["gptq3"])


def test_cli_bench_methods_passes_its_options(monkeypatch, tmp_path):
    from lobolib.__main__ import main

    calls = []
    monkeypatch.setattr(methods, "bench_methods", lambda **kw: calls.append(kw))
    assert main(["bench", "methods", "--only", "wanda, gptq4", "--sweep-json", "s.json", "--out", "m.json"]) == 0
    assert calls == [{"device": None, "methods": ["wanda", "gptq4"], "sweep_json": "s.json", "eval_seconds": None,
                      "out": "m.json"}]
    assert main(["bench", "methods", "--batch", "4"]) == 2  # a compress option


def test_real_api_magnitude_and_rtn_levels_are_timed():
    """The library's own methods (skipped until the compression-methods branch is merged)."""
    if not callable(getattr(prune_api, "prune", None)):
        pytest.skip("lobolib.prune.prune is not on this branch yet")
    result = bench_methods(device="cpu", shape=SMALL, calibration=(2, 8), methods=["magnitude"])
    assert result["methods"]["magnitude"]["seconds"] > 0 and result["methods"]["magnitude"]["error"] is None
    pytest.importorskip("lobolib.quantize")
    result = bench_methods(device="cpu", shape=SMALL, calibration=(2, 8), methods=["rtn4"])
    assert result["methods"]["rtn4"]["seconds"] > 0 and result["methods"]["rtn4"]["error"] is None
