"""Score and robustness tables from records: columns, hand-checked values, paired differences."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from lobolib.analysis import metrics
from lobolib.analysis import tables

LEVELS = [0.0, 0.5, 0.9]
PUBMEDQA_GOLD = ["yes", "no", "yes", "maybe"]
# model -> level -> parsed answers (None = invalid; its raw response is "???")
PUBMEDQA_ANSWERS = {
    "A": {0.0: ["yes", "no", "yes", "maybe"], 0.5: ["yes", "yes", "yes", None], 0.9: [None, None, None, None]},
    "B": {0.0: ["yes", "no", "no", "maybe"], 0.5: ["yes", "no", "no", "no"], 0.9: ["yes", "yes", "yes", "yes"]},
}
MMLU_GOLD = ["A", "B", "C", "D"]
MMLU_OPTIONS = {f"formal_logic/{i}": (f"alpha{i}", f"beta{i}", f"gamma{i}", f"delta{i}") for i in range(2)}
MMLU_OPTIONS.update({f"logical_fallacies/{i}": (f"one{i}", f"two{i}", f"three{i}", f"four{i}") for i in range(2)})
MMLU_ANSWERS = {
    "A": {0.0: ["A", "B", "C", "D"], 0.5: ["A", "B", None, None], 0.9: [None, None, None, None]},
    "B": {0.0: ["A", "B", "C", "A"], 0.5: ["A", "A", "A", "A"], 0.9: ["A", None, None, None]},
}


def record(model, level, benchmark, subject, item_id, gold, answer, loglik):
    return {
        "model": model, "method": "dense" if level == 0 else "magnitude/layer", "level": level,
        "sparsity": level, "benchmark": benchmark, "subject": subject, "item_id": item_id,
        "gold": gold, "prompt_hash": "h", "raw_response": answer if answer is not None else "???",
        "answer": answer, "tier": "test", "invalid_reason": None if answer is not None else "no answer",
        "option_logprobs": {}, "loglik_answer": loglik, "correct": answer == gold, "valid": answer is not None,
    }  # fmt: skip


@pytest.fixture(scope="module")
def records() -> pd.DataFrame:
    rows = []
    mmlu_ids = list(MMLU_OPTIONS)
    for model in ("A", "B"):
        for level in LEVELS:
            for i, (gold, answer) in enumerate(zip(PUBMEDQA_GOLD, PUBMEDQA_ANSWERS[model][level])):
                rows.append(record(model, level, "pubmedqa", "pubmedqa", str(100 + i), gold, answer, gold))
            for item_id, gold, answer in zip(mmlu_ids, MMLU_GOLD, MMLU_ANSWERS[model][level]):
                rows.append(record(model, level, "mmlu", item_id.split("/")[0], item_id, gold, answer, "A"))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def built(records):
    return tables.build_tables(records, options=MMLU_OPTIONS, n_boot=200, seed=0)


def value(scores, **where) -> list[float]:
    part = scores
    for key, wanted in where.items():
        part = part[part[key] == wanted]
    return list(part.sort_values("level")["value"])


def test_columns(built):
    assert list(built["scores"].columns) == [
        "model", "setting", "method", "benchmark", "group", "level", "scoring", "metric", "value", "ci_low", "ci_high"]
    assert set(built["scores"]["setting"]) == {"magnitude/layer"}
    for column in ("model", "benchmark", "group", "scoring", "metric", "auc_raw", "auc_normalised", "ci_low", "ci_high"):
        assert column in built["robustness"].columns


def test_lobolib_scores_hand_checked(built):
    scores = built["scores"]
    common = dict(benchmark="pubmedqa", group="pubmedqa", scoring="lobolib")
    assert value(scores, model="A", metric="accuracy", **common) == [1.0, 0.5, 0.0]
    assert value(scores, model="B", metric="accuracy", **common) == [0.75, 0.5, 0.5]
    assert value(scores, model="A", metric="invalid_rate", **common) == [0.0, 0.25, 1.0]
    # A at 0.5 predicts yes, yes, yes, invalid: F1 yes 0.8, no 0, maybe 0 -> macro 0.2667
    assert value(scores, model="A", metric="macro_f1", **common)[1] == pytest.approx(0.8 / 3)
    assert value(scores, model="A", metric="yes_f1", **common) == pytest.approx([1.0, 0.8, 0.0])
    # every record's first-token answer is the gold label
    assert value(scores, model="B", metric="first_token_accuracy", **common) == [1.0, 1.0, 1.0]


def test_reference_scoring_reparses_raw_responses(built):
    scores = built["scores"]
    common = dict(benchmark="pubmedqa", group="pubmedqa", scoring="reference")
    # "???" has neither yes nor no: the reference parser reads it as "maybe"
    assert value(scores, model="A", metric="accuracy", **common) == [1.0, 0.75, 0.25]
    # MMLU: an invalid answer is "X", a fifth class of the macro F1 (sklearn without labels=)
    ref = value(scores, model="B", benchmark="mmlu", group="all", scoring="reference", metric="reference_macro_f1")
    preds = {0.0: ["A", "B", "C", "A"], 0.5: ["A", "A", "A", "A"], 0.9: ["A", "X", "X", "X"]}
    expected = [f1_score(MMLU_GOLD, preds[level], average="macro", zero_division=0) for level in LEVELS]
    assert ref == pytest.approx(expected)


def test_groups(built):
    groups = set(built["scores"].loc[built["scores"]["benchmark"] == "mmlu", "group"])
    assert groups == {"all", "logic"}  # reference_logic lacks global_facts
    from lobolib.benchmarks import MEDMCQA, MMLU, PUBMEDQA

    assert tables.benchmark_groups(MMLU, ["formal_logic"], requested=["reference_logic"]) == {
        "all": ["formal_logic"], "reference_logic": ["formal_logic"]}
    assert tables.benchmark_groups(PUBMEDQA, ["pubmedqa"]) == {"pubmedqa": ["pubmedqa"]}
    assert tables.benchmark_groups(MEDMCQA, ["Anatomy", "Surgery", "Anatomy"]) == {
        "all": ["Anatomy", "Surgery"], "Anatomy": ["Anatomy"], "Surgery": ["Surgery"]}


def test_robustness_auc_and_difference(built):
    rob = built["robustness"]
    rows = rob[(rob["benchmark"] == "pubmedqa") & (rob["scoring"] == "lobolib") & (rob["metric"] == "accuracy")]
    by_model = rows.set_index("model")
    # trapezoid over 0, 0.5, 0.9: A 0.5*(1+0.5)/2 + 0.4*(0.5+0)/2 = 0.475; B 0.3125 + 0.2 = 0.5125
    assert by_model.loc["A", "auc_raw"] == pytest.approx(0.475)
    assert by_model.loc["B", "auc_raw"] == pytest.approx(0.5125)
    assert by_model.loc["A", "auc_normalised"] == pytest.approx(0.475 / 0.9)
    assert by_model.loc["A - B", "auc_raw"] == pytest.approx(-0.0375)
    assert by_model.loc["A", "cliff"] == 0.9  # first level below half the dense accuracy
    for model in ("A", "B", "A - B"):
        row = by_model.loc[model]
        assert row["auc_raw_ci_low"] <= row["auc_raw"] <= row["auc_raw_ci_high"]
        assert row["ci_low"] <= row["auc_normalised"] <= row["ci_high"]
    assert 0 <= by_model.loc["A - B", "p"] <= 1 and math.isnan(by_model.loc["A", "p"])
    assert "invalid_rate" not in set(rob["metric"])


def test_kappa_has_a_bootstrap_interval(built):
    kappa = built["scores"][(built["scores"]["metric"] == "kappa")]
    assert kappa["ci_low"].notna().any()
    inside = kappa.dropna(subset=["ci_low"])
    assert ((inside["ci_low"] <= inside["value"] + 1e-9) & (inside["value"] <= inside["ci_high"] + 1e-9)).all()


def test_settings_are_curves_of_their_own_with_paired_differences(records):
    """Two settings on the same items share the dense records; each gets its own curve, and each
    model the paired difference between them."""
    other = records[records["level"] > 0].assign(method="wanda/calib=wikitext2")
    other.loc[other["model"] == "A", "answer"] = other.loc[other["model"] == "A", "gold"]
    both = pd.concat([records, other], ignore_index=True)
    built = tables.build_tables(both, options=MMLU_OPTIONS, n_boot=100, seed=0)
    rob = built["robustness"]
    acc = rob[(rob["benchmark"] == "pubmedqa") & (rob["scoring"] == "lobolib") & (rob["metric"] == "accuracy")]
    by = acc.set_index(["setting", "model"])
    assert by.loc[("wanda/calib=wikitext2", "A"), "auc_normalised"] == pytest.approx(1.0)
    assert by.loc[("magnitude/layer", "A"), "auc_raw"] == pytest.approx(0.475)
    diff = by.loc[("magnitude/layer - wanda/calib=wikitext2", "A")]
    assert diff["auc_raw"] == pytest.approx(0.475 - 0.9) and diff["p"] < 0.05
    assert ("wanda/calib=wikitext2", "A - B") in by.index


def test_no_bootstrap_gives_no_intervals(records):
    built = tables.build_tables(records, options=MMLU_OPTIONS, n_boot=0)
    assert built["scores"]["ci_low"].isna().all()
    assert built["robustness"]["auc_raw"].notna().all()


def test_f1_replicates_match_sklearn_on_the_full_sample():
    gold = np.array(["A", "B", "C", "D", "A"], dtype=object)
    pred = np.array([["A", "B", "X", "X", "B"], ["A", "A", "A", "A", "A"]], dtype=object)
    ones = np.ones((1, len(gold)))
    for row, got in zip(pred, metrics.f1_replicates(gold, pred, ones, None)[0]):
        assert got == pytest.approx(f1_score(list(gold), list(row), average="macro", zero_division=0))
    fixed = metrics.f1_replicates(gold, pred, ones, ["A", "B", "C", "D"])[0]
    for row, got in zip(pred, fixed):
        assert got == pytest.approx(f1_score(list(gold), list(row), labels=["A", "B", "C", "D"], average="macro", zero_division=0))


def test_items_missing_at_one_level_are_left_out(records):
    dropped = records[~((records["item_id"] == "103") & (records["level"] == 0.5) & (records["model"] == "B"))]
    built = tables.build_tables(dropped, options=MMLU_OPTIONS, n_boot=0)
    rob = built["robustness"]
    assert set(rob.loc[rob["benchmark"] == "pubmedqa", "items"]) == {3}
    a = value(built["scores"], model="A", benchmark="pubmedqa", scoring="lobolib", metric="accuracy")
    assert a == pytest.approx([1.0, 2 / 3, 0.0])  # item 103 (maybe) is gone for both models


def test_write_tables_csv_and_markdown(built, tmp_path):
    paths = tables.write_tables(built, tmp_path)
    assert sorted(p.name for p in paths) == ["robustness.csv", "robustness.md", "scores.csv", "scores.md"]
    again = pd.read_csv(tmp_path / "scores.csv")
    assert len(again) == len(built["scores"])
    lines = (tmp_path / "scores.md").read_text().splitlines()
    assert lines[0].startswith("| model | setting | method | benchmark |") and len(lines) == len(built["scores"]) + 2


def test_analysis_tables(records):
    modes = tables.failure_modes(records)
    a_half = modes[(modes["model"] == "A") & (modes["benchmark"] == "pubmedqa") & (modes["level"] == 0.5)]
    assert dict(zip(a_half["outcome"], a_half["share"])) == {"correct": 0.5, "wrong answer": 0.25, "invalid: no answer": 0.25}
    dist = tables.label_distribution(records)
    b_90 = dist[(dist["model"] == "B") & (dist["benchmark"] == "pubmedqa") & (dist["level"] == 0.9)]
    assert dict(zip(b_90["label"], b_90["share"]))["yes"] == 1.0
    divergent = tables.divergent_items(records, 0.9, "A", "B")
    assert set(divergent.loc[divergent["benchmark"] == "pubmedqa", "item_id"]) == {"100", "102"}


def test_reference_logs_reproduce_the_published_robustness_scores(tmp_path):
    """robustness.csv, scoring reference, auc_raw: the study's published numbers to 4 decimals."""
    from conftest import shared_path
    from lobolib.experiment.reference_logs import import_reference_logs
    from lobolib.experiment.store import RecordStore

    store = RecordStore(tmp_path)
    import_reference_logs(shared_path("reference-logs"), store, parse=False, progress=False)
    records = store.read()
    records["answer"] = records["reference_parsed"].where(records["reference_parsed"] != "X", None)  # not under test
    rob = tables.build_tables(records, n_boot=0)["robustness"]
    rob = rob[(rob["scoring"] == "reference") & rob["metric"].str.startswith("reference_")].set_index(["group", "model"])
    published = {
        ("reference_medical", "mistralai/Mistral-7B-v0.1"): 0.2894, ("reference_medical", "BioMistral/BioMistral-7B"): 0.3399,
        ("reference_logic", "mistralai/Mistral-7B-v0.1"): 0.2282, ("reference_logic", "BioMistral/BioMistral-7B"): 0.2606,
        ("pubmedqa", "mistralai/Mistral-7B-v0.1"): 0.4871, ("pubmedqa", "BioMistral/BioMistral-7B"): 0.4787,
    }  # fmt: skip
    for key, score in published.items():
        assert round(rob.loc[key, "auc_raw"], 4) == score, key


def test_a_bit_width_keeps_its_level_where_its_x_is_a_sparsity_of_another_setting(records):
    """8 bits sits at x = 1 - 8/16 = 0.5, where magnitude's 0.5 sits: each row keeps its own level."""
    from lobolib.analysis.curves import Curve, assign_settings

    quantized = records[records["level"] > 0].assign(method="rtn/g64")
    quantized["level"] = quantized["level"].map({0.5: 8.0, 0.9: 4.0})
    both = pd.concat([records, quantized], ignore_index=True)
    curves = assign_settings(both, [Curve("magnitude", "magnitude/layer"), Curve("rtn", "rtn/g64", unit="bits")])
    scores = tables.build_tables(curves, options=MMLU_OPTIONS, n_boot=0)["scores"]
    assert sorted(scores.loc[scores["setting"] == "rtn", "level"].unique()) == [4.0, 8.0, 16.0]
    assert sorted(scores.loc[scores["setting"] == "magnitude", "level"].unique()) == [0.0, 0.5, 0.9]
