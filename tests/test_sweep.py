"""run_sweep(): a setting's levels, cumulative in-place pruning where they nest, only missing
cells evaluated, resumable after an interruption with identical records (tiny model, CPU)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from conftest import build_tiny_model, build_tiny_tokenizer
import lobolib.evaluation.evaluate as evaluate_module
from lobolib import LoboError
from lobolib.compress import prune as prune_module
from lobolib.experiment import sweep
from lobolib.experiment.setting import Setting, check_levels
from lobolib.experiment.store import RecordStore
from lobolib.records import DENSE, Item, record_from_json

torch.set_num_threads(1)

LEVELS = [0.0, 0.3, 0.6]
MODEL = "tiny/mistral"


def item_sets() -> dict[str, list[Item]]:
    pubmedqa = [
        Item(str(i), "pubmedqa", "pubmedqa", "does aspirin reduce fever?" + " really" * i,
             "aspirin reduces fever. " * (1 + i), ("yes", "no", "maybe"), ("yes", "no", "maybe")[i % 3])
        for i in range(5)
    ]
    mmlu = [
        Item(f"anatomy/{i}", "mmlu", "anatomy", "which organ pumps blood?" + " now" * i, "",
             ("heart", "lung", "liver", "kidney"), "ABCD"[i % 4])
        for i in range(4)
    ]
    return {"pubmedqa": pubmedqa, "mmlu": mmlu}


@pytest.fixture(scope="module")
def tokenizer():
    tok = build_tiny_tokenizer()
    tok.padding_side = "left"
    return tok


def fresh_model(tokenizer):
    """The same dense tiny model every time (seeded), as a fresh load would give."""
    model = build_tiny_model(len(tokenizer), seed=0)
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)  # peaked outputs: pruning visibly changes answers
    return model


def magnitude(levels=LEVELS, scope="layer") -> Setting:
    return Setting("magnitude", "magnitude", check_levels(levels, "sparsity", "levels"), scope=scope)


SETTING = magnitude()
METHOD = SETTING.description


def sweep_into(store, tokenizer, levels=LEVELS, **kwargs):
    return sweep.run_sweep(fresh_model(tokenizer), tokenizer, model_name=MODEL, setting=magnitude(levels),
                           item_sets=item_sets(), store=store, progress=False, **kwargs)


def spy(monkeypatch, fail_on_call: int | None = None):
    """Count evaluate() and magnitude_prune() calls made by the sweep; optionally interrupt the
    sweep (KeyboardInterrupt) at the n-th evaluate call."""
    calls = {"evaluate": [], "prune": []}
    real_evaluate, real_prune = evaluate_module.evaluate, prune_module.prune

    def evaluate(model, tokenizer, items, **kwargs):
        calls["evaluate"].append((kwargs["level"], items[0].benchmark))
        if fail_on_call is not None and len(calls["evaluate"]) == fail_on_call:
            raise KeyboardInterrupt
        return real_evaluate(model, tokenizer, items, **kwargs)

    def prune(model, level, **kwargs):
        calls["prune"].append(level)
        return real_prune(model, level, **kwargs)

    monkeypatch.setattr(evaluate_module, "evaluate", evaluate)
    monkeypatch.setattr(prune_module, "prune", prune)
    return calls


def records(store) -> pd.DataFrame:
    frame = store.read()
    return frame.sort_values(["level", "benchmark", "item_id"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tokenizer):
    """An uninterrupted sweep: its store and summary."""
    store = RecordStore(tmp_path_factory.mktemp("uninterrupted"))
    summary = sweep_into(store, tokenizer)
    return store, summary


def test_sweep_evaluates_every_level_and_benchmark_in_ascending_order(reference):
    store, summary = reference
    assert list(zip(summary["level"], summary["benchmark"])) == [
        (level, b) for level in LEVELS for b in ("pubmedqa", "mmlu")]
    assert set(summary["status"]) == {"evaluated"}
    assert summary["n_items"].tolist() == [5, 4] * 3
    assert summary["method"].tolist() == [DENSE] * 2 + [METHOD] * 4
    frame = records(store)
    assert len(frame) == 27 and set(frame["level"]) == set(LEVELS) and set(frame["sparsity"]) == set(LEVELS)
    assert sweep.missing_cells(store, MODEL, SETTING, ["pubmedqa", "mmlu"]) == []
    # pruning changed the model between levels
    by_level = frame.groupby("level")["option_logprobs"].apply(lambda s: [tuple(d.values()) for d in s])
    assert by_level[0.0] != by_level[0.6]


def test_achieved_sparsity_is_recorded_per_level(reference):
    store, summary = reference
    levels = {**store.read_reports(MODEL, DENSE), **store.read_reports(MODEL, METHOD)}
    assert sorted(levels) == ["0.0000", "0.3000", "0.6000"]
    for key, entry in levels.items():
        assert entry["pruned"] == pytest.approx(float(key), abs=1e-3)
        assert entry["per_matrix"]
    assert summary["achieved_sparsity"].tolist() == pytest.approx([0.0, 0.0, 0.3, 0.3, 0.6, 0.6], abs=1e-3)


def test_interrupted_sweep_resumes_with_only_the_missing_cells(tmp_path, tokenizer, reference, monkeypatch):
    store = RecordStore(tmp_path)
    calls = spy(monkeypatch, fail_on_call=4)  # killed while evaluating (0.3, mmlu)
    with pytest.raises(KeyboardInterrupt):
        sweep_into(store, tokenizer)
    assert sweep.missing_cells(store, MODEL, SETTING, ["pubmedqa", "mmlu"]) == [
        (0.3, "mmlu"), (0.6, "pubmedqa"), (0.6, "mmlu")]

    calls = spy(monkeypatch)
    summary = sweep_into(store, tokenizer)
    assert calls["evaluate"] == [(0.3, "mmlu"), (0.6, "pubmedqa"), (0.6, "mmlu")]
    assert calls["prune"] == [0.3, 0.6]
    assert summary["status"].tolist() == ["stored"] * 3 + ["evaluated"] * 3
    pd.testing.assert_frame_equal(records(store), records(reference[0]))
    pd.testing.assert_frame_equal(summary.drop(columns=["status", "seconds"]),
                                  reference[1].drop(columns=["status", "seconds"]))

    calls = spy(monkeypatch)
    summary = sweep_into(store, tokenizer)  # nothing left: no pruning, no evaluation
    assert calls == {"evaluate": [], "prune": []}
    assert set(summary["status"]) == {"stored"}


def test_done_levels_are_skipped_by_pruning_one_shot_to_the_first_missing_level(tmp_path, tokenizer, reference, monkeypatch):
    store = RecordStore(tmp_path)
    done = reference[0].read()
    for (method, level, benchmark), _ in done[done["level"] < 0.5].groupby(["method", "level", "benchmark"]):
        cell = reference[0].read(models=[MODEL], benchmarks=[benchmark], levels=[level])
        rows = cell.drop(columns=["correct", "valid"]).to_dict("records")
        store.write(MODEL, method, level, benchmark, [record_from_json(r) for r in rows])

    calls = spy(monkeypatch)
    sweep_into(store, tokenizer)
    assert calls["prune"] == [0.6]  # one-shot from the dense model, not 0.3 then 0.6
    assert calls["evaluate"] == [(0.6, "pubmedqa"), (0.6, "mmlu")]
    pd.testing.assert_frame_equal(records(store), records(reference[0]))


@pytest.mark.parametrize("levels", [[0.3, 0.1], [0.1, 0.1], [0.5, 1.0], [-0.1, 0.2], []])
def test_levels_must_be_ascending_and_in_range(levels):
    with pytest.raises(LoboError):
        check_levels(levels, "sparsity", "levels")


@pytest.mark.parametrize("bad, message", [
    ({"eval_options": {"max_tokens": 3}}, "max_tokens"),
])
def test_bad_options_are_refused_before_any_work(tmp_path, tokenizer, bad, message):
    store = RecordStore(tmp_path)
    with pytest.raises(LoboError, match=message):
        sweep_into(store, tokenizer, **bad)
    assert store.cells() == []


def test_a_model_left_pruned_by_an_earlier_sweep_is_refused(tmp_path, tokenizer):
    model = fresh_model(tokenizer)
    sweep.run_sweep(model, tokenizer, model_name=MODEL, setting=magnitude([0.5]), item_sets=item_sets(),
                    store=RecordStore(tmp_path / "a"), progress=False)
    with pytest.raises(LoboError, match=r"already 50.0% sparse, beyond the first level to evaluate \(0\)"):
        sweep.run_sweep(model, tokenizer, model_name=MODEL, setting=magnitude([0.0, 0.5]), item_sets=item_sets(),
                        store=RecordStore(tmp_path / "b"), progress=False)


def test_the_dense_cells_are_shared_by_every_setting(tmp_path, tokenizer, reference, monkeypatch):
    """A second setting on the same store finds the dense level on disk and evaluates only its own."""
    store = RecordStore(tmp_path)
    sweep_into(store, tokenizer)
    calls = spy(monkeypatch)
    summary = sweep.run_sweep(fresh_model(tokenizer), tokenizer, model_name=MODEL, setting=magnitude(scope="global"),
                              item_sets=item_sets(), store=store, progress=False)
    assert calls["evaluate"] == [(0.3, "pubmedqa"), (0.3, "mmlu"), (0.6, "pubmedqa"), (0.6, "mmlu")]
    assert summary["status"].tolist() == ["stored"] * 2 + ["evaluated"] * 4
    assert set(store.read()["method"]) == {DENSE, "magnitude/layer", "magnitude/global"}
