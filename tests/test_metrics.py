"""Scores, curve summaries and bootstrap CIs."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from conftest import shared_path
from sklearn.metrics import f1_score

from lobolib.analysis import metrics as M
from lobolib.errors import LoboError

LABELS = ["yes", "no", "maybe"]
GOLD = ["yes", "yes", "no", "maybe", "no", "yes"]
PRED = ["yes", None, "no", "no", "yes", "yes"]  # one invalid answer


# ----------------------------------------------------------------------------- scores


def test_accuracy_counts_invalid_as_wrong():
    assert M.accuracy(GOLD, PRED) == pytest.approx(3 / 6)
    assert M.accuracy(["yes"], [float("nan")]) == 0.0  # pandas' missing value is invalid too


def test_macro_f1_by_hand_and_invalid_is_never_a_class():
    # yes: P 2/3 R 2/3; no: P 1/2 R 1/2; maybe: 0 -> mean of (2/3, 1/2, 0)
    assert M.macro_f1(GOLD, PRED, LABELS) == pytest.approx(7 / 18)
    assert M.macro_f1(GOLD, PRED) == pytest.approx(7 / 18)  # default labels: seen valid ones
    report = M.per_class_report(GOLD, PRED, LABELS)
    assert list(report.index) == LABELS
    assert report.loc["yes"].tolist() == pytest.approx([2 / 3, 2 / 3, 2 / 3, 3])
    assert report.loc["no"].tolist() == pytest.approx([0.5, 0.5, 0.5, 2])
    assert report.loc["maybe"].tolist() == pytest.approx([0, 0, 0, 1])
    # an invalid answer hurts recall like a wrong one but adds no class with F1 0:
    # yes F1 1, no F1 0 -> 1/2 (as a third class, as the reference study counted "X": 1/3)
    assert M.macro_f1(["yes", "no"], ["yes", None], ["yes", "no"]) == pytest.approx(1 / 2)
    assert M.reference_macro_f1(["yes", "no"], ["yes", None]) == pytest.approx(1 / 3)


def test_confusion_has_an_invalid_column():
    table = M.confusion(GOLD, PRED, LABELS)
    assert list(table.columns) == [*LABELS, "invalid"]
    assert list(table.index) == LABELS
    assert table.to_numpy().tolist() == [[2, 0, 0, 1], [1, 1, 0, 0], [0, 1, 0, 0]]
    with pytest.raises(LoboError, match="outside"):
        M.confusion(GOLD, ["A"] * 6, LABELS)


def test_cohen_kappa_by_hand():
    # p_o = 1/2; p_e = (3*3 + 2*2 + 1*0 + 0*1) / 36 = 13/36
    assert M.cohen_kappa(GOLD, PRED, LABELS) == pytest.approx((0.5 - 13 / 36) / (1 - 13 / 36))


def test_invalid_rate_and_label_distribution():
    assert M.invalid_rate(PRED) == pytest.approx(1 / 6)
    table = M.label_distribution(GOLD, PRED, LABELS)
    assert list(table.index) == [*LABELS, "invalid"]
    assert table["gold"].tolist() == pytest.approx([1 / 2, 1 / 3, 1 / 6, 0])
    assert table["pred"].tolist() == pytest.approx([1 / 2, 1 / 3, 0, 1 / 6])


def test_baselines():
    yes = M.always_yes_baseline(GOLD)
    assert yes == {"label": "yes", "accuracy": 0.5, "macro_f1": pytest.approx((2 / 3) / 3)}
    majority = M.majority_baseline(["no", "no", "yes"], LABELS)
    assert majority == {"label": "no", "accuracy": pytest.approx(2 / 3), "macro_f1": pytest.approx(0.8 / 3)}
    assert M.majority_baseline(["no", "yes"], LABELS)["label"] == "yes"  # tie: first label


@pytest.mark.filterwarnings("ignore:Note that pos_label")  # the study passed pos_label too
def test_reference_scores_agree_with_sklearn_as_the_study_called_it():
    gold = ["yes", "no", "maybe", "yes", "no", "yes", "maybe"]
    pred = ["yes", "no", "no", "maybe", "yes", "yes", "maybe"]
    study_f1 = f1_score(gold, pred, labels=["yes"], pos_label="yes", average="micro", zero_division=0)
    assert M.reference_yes_f1(gold, pred) == pytest.approx(study_f1) == pytest.approx(2 / 3)
    gold = ["A", "B", "C", "D", "A", "B"]
    pred = ["A", "X", "C", "A", "X", "B"]
    study_macro = f1_score(gold, pred, average="macro", zero_division=0)
    assert M.reference_macro_f1(gold, pred) == pytest.approx(study_macro)
    # "X" is a fifth class there (F1 0 averaged in), unlike our macro_f1 over A-D
    assert M.reference_macro_f1(gold, [p if p != "X" else None for p in pred]) == pytest.approx(study_macro)
    assert M.macro_f1(gold, [p if p != "X" else None for p in pred], "ABCD") == pytest.approx(study_macro * 5 / 4)


def test_reference_study_published_robustness_scores_are_reproduced():
    """From the raw logs: its PubMedQA f1 column, and its six published AUCs (README)."""
    logs = shared_path("reference-logs")
    levels = [round(0.05 * i, 2) for i in range(20)]
    published = {"Mistral": (0.4871, 0.2894, 0.2282), "BioMistral": (0.4787, 0.3399, 0.2606)}
    prefixes = {"Mistral": "mistralai_Mistral-7B-v0.1", "BioMistral": "BioMistral_BioMistral-7B"}
    for model, prefix in prefixes.items():
        pubmedqa, medical, logic = [], [], []
        for level in levels:
            pct = round(level * 100)
            log = pd.read_csv(logs / f"{model}_PubMedQA" / f"{prefix}_pubmedqa_{pct}_percent.csv.gz",
                              keep_default_na=False)  # fmt: skip
            pubmedqa.append(M.reference_yes_f1(log["true_answer"], log["parsed_guess"]))
            log = pd.read_csv(logs / f"{model}_MMLU" / f"mmlu_{prefix}_{pct}_percent.csv.gz", keep_default_na=False)
            for scores, subjects in ((medical, ["college_medicine", "clinical_knowledge"]),
                                     (logic, ["formal_logic", "logical_fallacies", "global_facts"])):  # fmt: skip
                part = log[log["subject"].isin(subjects)]
                scores.append(M.reference_macro_f1(part["true_answer"], part["parsed_guess"]))
        summary = pd.read_csv(logs / f"{model}_PubMedQA" / f"lobotomy_results_{model.lower()}_pubmedqa.csv.gz")
        assert pubmedqa == pytest.approx(summary["f1"].tolist(), abs=1e-12)
        aucs = [M.auc_raw(levels, scores) for scores in (pubmedqa, medical, logic)]
        assert aucs == pytest.approx(published[model], abs=5e-5)


def test_bad_inputs_are_user_errors():
    with pytest.raises(LoboError, match="differ in length"):
        M.accuracy(["yes"], ["yes", "no"])
    with pytest.raises(LoboError, match="empty"):
        M.accuracy([], [])
    with pytest.raises(LoboError, match="cannot be a class"):
        M.macro_f1(GOLD, PRED, [*LABELS, "invalid"])


# ----------------------------------------------------------------------------- curves

LEVELS = [0.0, 0.25, 0.5, 0.75]


def test_auc_raw_is_numpy_trapezoid_and_normalised_is_the_mean_height():
    score = [0.8, 0.7, 0.4, 0.1]
    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    assert M.auc_raw(LEVELS, score) == trapezoid(score, LEVELS)
    assert M.auc_normalised(LEVELS, score) == pytest.approx(trapezoid(score, LEVELS) / 0.75)
    assert M.auc_normalised(LEVELS, [0.6] * 4) == pytest.approx(0.6)
    assert M.auc_raw(LEVELS, [0.6] * 4) == pytest.approx(0.45)
    assert 0 <= M.auc_normalised(LEVELS, [1, 0, 1, 0]) <= 1
    with pytest.raises(LoboError, match="ascending"):
        M.auc_normalised([0.5, 0.0, 0.75, 0.9], score)


def test_cliff_is_the_first_level_below_the_fraction_of_dense():
    assert M.cliff(LEVELS, [0.8, 0.5, 0.39, 0.1]) == 0.5
    assert M.cliff(LEVELS, [0.8, 0.5, 0.39, 0.1], fraction=0.7) == 0.25
    assert M.cliff(LEVELS, [0.8, 0.8, 0.4, 0.41]) is None  # 0.4 is not below half of 0.8


def test_steepest_drop():
    assert M.steepest_drop(LEVELS, [0.8, 0.7, 0.3, 0.25]) == (0.25, 0.5, pytest.approx(0.4))
    assert M.steepest_drop(LEVELS, [0.1, 0.2, 0.4, 0.8]) == (0.0, 0.25, pytest.approx(-0.1))


# ----------------------------------------------------------------------------- bootstrap


def _correct(n_levels=4, n_items=200, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.random((n_levels, n_items)) < np.linspace(0.8, 0.3, n_levels)[:, None]).astype(float)


def test_bootstrap_ci_contains_the_estimate_and_is_seeded():
    correct = _correct()
    table = M.bootstrap_ci(correct, LEVELS, n_boot=300, seed=7)
    assert table["quantity"].tolist() == ["score"] * 4 + ["auc_normalised", "auc_raw"]
    scores = table[table["quantity"] == "score"]
    assert scores["estimate"].tolist() == pytest.approx(correct.mean(axis=1))
    assert scores["sparsity"].tolist() == LEVELS
    assert (table["lo"] <= table["estimate"]).all() and (table["estimate"] <= table["hi"]).all()
    assert (table["hi"] - table["lo"] > 0).all()
    auc = table.set_index("quantity")["estimate"]
    assert auc["auc_raw"] == pytest.approx(M.auc_raw(LEVELS, correct.mean(axis=1)))
    assert auc["auc_normalised"] == pytest.approx(M.auc_normalised(LEVELS, correct.mean(axis=1)))
    pd.testing.assert_frame_equal(table, M.bootstrap_ci(correct, LEVELS, n_boot=300, seed=7))
    assert not table.equals(M.bootstrap_ci(correct, LEVELS, n_boot=300, seed=8))
    wider = M.bootstrap_ci(correct, LEVELS, n_boot=300, seed=7, ci=0.99)
    assert ((wider["hi"] - wider["lo"]) >= (table["hi"] - table["lo"]) - 1e-12).all()


def test_bootstrap_resamples_items_jointly_across_levels():
    """Two identical levels stay identical in every resample: their CIs coincide."""
    row = _correct(1)[0]
    table = M.bootstrap_ci(np.stack([row, row]), [0.0, 0.5], n_boot=200)
    assert table.loc[0, ["lo", "hi"]].tolist() == table.loc[1, ["lo", "hi"]].tolist()


def test_paired_bootstrap_of_identical_models_has_zero_difference():
    correct = _correct()
    table = M.paired_bootstrap(correct, correct.copy(), LEVELS, names=("bio", "base"), n_boot=200)
    assert set(table["model"]) == {"bio", "base", "bio - base"}
    diff = table[table["model"] == "bio - base"]
    assert (diff[["estimate", "lo", "hi"]].to_numpy() == 0).all()
    assert (diff["p"] == 1).all()
    single = M.bootstrap_ci(correct, LEVELS, n_boot=200)
    bio = table[table["model"] == "bio"].drop(columns=["model", "p"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(bio, single)  # the same seed gives the same resamples


def test_paired_bootstrap_detects_a_clear_difference():
    better = _correct(seed=2)
    worse = better.copy()
    worse[:, :60] = 0  # the second model loses 60 of 200 items at every level
    table = M.paired_bootstrap(better, worse, LEVELS, n_boot=500).set_index(["model", "quantity"])
    auc = table.loc[("a - b", "auc_normalised")]
    assert auc["lo"] > 0 and auc["p"] < 0.01


def test_bootstrap_macro_f1_is_vectorised_exactly():
    rng = np.random.default_rng(3)
    gold = list(rng.choice(LABELS, 120, p=[0.55, 0.34, 0.11]))
    pred = [[None if rng.random() < 0.1 else str(rng.choice(LABELS, p=[0.7, 0.3, 0.0])) for _ in gold]
            for _ in LEVELS]  # fmt: skip
    fast = M.bootstrap_ci(sparsity=LEVELS, pred=pred, gold=gold, labels=LABELS, n_boot=40, seed=5)
    slow = M.bootstrap_ci(sparsity=LEVELS, pred=pred, gold=gold, n_boot=40, seed=5,
                          metric=lambda g, p: M.macro_f1(g, p, LABELS))  # fmt: skip
    pd.testing.assert_frame_equal(fast, slow)
    assert fast["estimate"][0] == pytest.approx(M.macro_f1(gold, pred[0], LABELS))


def test_bootstrap_accuracy_is_fast():
    correct = _correct(20, 1000)
    levels = [round(0.05 * i, 2) for i in range(20)]
    start = time.perf_counter()
    M.paired_bootstrap(correct, correct[::-1].copy(), levels, n_boot=1000)
    assert time.perf_counter() - start < 2.0  # about 0.1 s measured; generous for a shared CPU


def test_item_matrices_pair_items_across_levels():
    records = pd.DataFrame({
        "sparsity": [0.5, 0.5, 0.0, 0.0],
        "item_id": ["b", "a", "a", "b"],
        "gold": ["no", "yes", "yes", "no"],
        "answer": [None, "yes", "no", "no"],
    })  # fmt: skip
    m = M.item_matrices(records)
    assert m["sparsity"].tolist() == [0.0, 0.5] and m["item_ids"] == ["a", "b"]
    assert m["gold"] == ["yes", "no"]
    assert m["pred"].tolist() == [["no", "no"], ["yes", None]]
    assert m["correct"].tolist() == [[0, 1], [1, 0]]
    table = M.bootstrap_ci(m["correct"], m["sparsity"], n_boot=50)
    assert table["estimate"][:2].tolist() == [0.5, 0.5]
    with pytest.raises(LoboError, match="different items"):
        M.item_matrices(records.iloc[:3])


def test_bootstrap_input_errors():
    with pytest.raises(LoboError, match="give either"):
        M.bootstrap_ci()
    with pytest.raises(LoboError, match="sparsity has 2 levels"):
        M.bootstrap_ci(_correct(), [0.0, 0.5])
    with pytest.raises(LoboError, match="ci must be"):
        M.bootstrap_ci(_correct(), LEVELS, ci=95)
    with pytest.raises(LoboError, match="same items"):
        M.paired_bootstrap(_correct(n_items=10), _correct(n_items=11), LEVELS)
    with pytest.raises(LoboError, match="unknown metric"):
        M.bootstrap_ci(sparsity=LEVELS, pred=[["yes"]] * 4, gold=["yes"], metric="auroc")
