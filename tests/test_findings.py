"""Findings: sentences built from a run's tables, whose wording follows the intervals."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lobolib.analysis import findings, tables


def row(model, metric="accuracy", scoring="lobolib", auc=0.5, low=0.4, high=0.6, p=math.nan, cliff=math.nan,
        benchmark="mmlu", group="all", setting="magnitude/layer"):
    return {"model": model, "setting": setting, "method": "magnitude/layer", "benchmark": benchmark, "group": group,
            "scoring": scoring, "metric": metric, "levels": 5, "items": 100, "auc_raw": auc, "auc_raw_ci_low": low,
            "auc_raw_ci_high": high, "auc_normalised": auc, "ci_low": low, "ci_high": high, "cliff": cliff, "p": p}


def frame(*rows) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=tables.ROBUSTNESS_COLUMNS)


def test_a_difference_whose_interval_excludes_zero_names_the_more_robust_model():
    table = frame(row("base - specialist", auc=-0.104, low=-0.141, high=-0.070, p=0.0))
    (found,) = findings.robustness(table)
    assert "-0.104 [-0.141, -0.070]" in found.text and "p < 0.001" in found.text
    assert "specialist is more robust" in found.text
    assert found.anchor == "fig-curves_sparsity_mmlu_all"


def test_a_difference_whose_interval_includes_zero_claims_no_difference():
    table = frame(row("base - specialist", auc=0.012, low=-0.02, high=0.05, p=0.41))
    (found,) = findings.robustness(table)
    assert "includes 0: no difference shown" in found.text and "more robust" not in found.text
    assert "p = 0.41" in found.text


@pytest.mark.parametrize(("reference", "ours", "expected"), [
    ((0.05, 0.02, 0.08), (0.04, 0.01, 0.07), "the shield holds"),
    ((0.05, 0.02, 0.08), (0.00, -0.02, 0.02), "the shield is not shown"),
    ((0.05, 0.02, 0.08), (-0.04, -0.07, -0.01), "the shield reverses"),
    ((0.01, -0.02, 0.04), (0.00, -0.02, 0.02), "the study's own scoring shows no shield here"),
    ((-0.05, -0.08, -0.02), (-0.04, -0.07, -0.01), "puts base ahead here, not bio: no shield"),
])  # fmt: skip
def test_the_shield_is_judged_under_both_scorings_for_the_specialist(reference, ours, expected):
    table = frame(row("bio - base", "reference_macro_f1", "reference", *reference),
                  row("bio - base", "accuracy", "lobolib", *ours))
    (found,) = findings.shield(table, specialist="bio")
    assert expected in found.text
    assert findings.interval(*reference) in found.text and findings.interval(*ours) in found.text


def test_without_a_specialist_the_shield_compares_orderings():
    table = frame(row("a - b", "reference_yes_f1", "reference", 0.05, 0.02, 0.08, benchmark="pubmedqa", group="pubmedqa"),
                  row("a - b", "accuracy", "lobolib", 0.0, -0.02, 0.02, benchmark="pubmedqa", group="pubmedqa"))
    (found,) = findings.shield(table)
    assert "only the study's scoring puts a ahead" in found.text and "shield" not in found.text.lower()


def scores_frame(values: dict[str, list[float]], levels=(0.0, 0.25, 0.5, 0.75)) -> pd.DataFrame:
    rows = [{"model": m, "setting": "magnitude/layer", "method": "magnitude/layer", "benchmark": "mmlu",
             "group": "all", "level": lvl, "scoring": "lobolib", "metric": "accuracy", "value": v,
             "ci_low": v - 0.05, "ci_high": v + 0.05}
            for m, curve in values.items() for lvl, v in zip(levels, curve)]  # fmt: skip
    return pd.DataFrame(rows, columns=tables.SCORE_COLUMNS)


def test_cliffs_name_each_model_s_cliff_or_say_it_has_none():
    scores = scores_frame({"a": [0.8, 0.7, 0.3, 0.2], "b": [0.8, 0.8, 0.7, 0.6]})
    table = frame(row("a", cliff=0.5), row("b", cliff=math.nan))
    (found,) = findings.cliffs(table, scores)
    assert "a starts at 0.800 [0.750, 0.850] and falls below 50% of it at 50% sparsity" in found.text
    assert "b starts at 0.800 [0.750, 0.850] and stays above 50% of it up to 75% sparsity" in found.text


def records_for(model, level, gold, answers, first_tokens, benchmark="pubmedqa"):
    return [{"model": model, "setting": "magnitude/layer", "method": "magnitude/layer", "level": level,
             "benchmark": benchmark, "subject": benchmark, "item_id": str(i), "gold": g, "answer": a,
             "loglik_answer": f, "correct": a == g, "valid": a is not None, "invalid_reason": None if a else "none"}
            for i, (g, a, f) in enumerate(zip(gold, answers, first_tokens))]  # fmt: skip


def test_lost_answers_split_into_format_collapse_and_knowledge_loss():
    gold = ["yes", "no", "yes", "maybe", "no"]
    rows = records_for("m", 0.0, gold, gold, gold)
    # at 0.5: items 0 and 1 lost with the first token still right (0 invalid), item 2 lost with it wrong
    rows += records_for("m", 0.5, gold, [None, "yes", "no", "maybe", "no"], ["yes", "no", "no", "maybe", "no"])
    loss = findings.accuracy_loss(pd.DataFrame(rows), 0.5)
    (entry,) = loss.to_dict("records")
    assert (entry["dense_correct"], entry["lost"], entry["format_collapse"], entry["invalid"], entry["knowledge_loss"]) == (5, 3, 2, 1, 1)
    assert entry["format_share"] == pytest.approx(2 / 3)
    assert entry["format_ci_low"] < 2 / 3 < entry["format_ci_high"]
    (found,) = findings.format_vs_knowledge(loss)
    assert "lost 3 of the 5 items" in found.text and "2 (share 0.67 [" in found.text and "1 knowledge loss" in found.text


def test_without_first_token_answers_the_split_is_not_claimed():
    gold = ["yes", "no"]
    rows = records_for("m", 0.0, gold, gold, [None, None]) + records_for("m", 0.5, gold, [None, "no"], [None, None])
    (found,) = findings.format_vs_knowledge(findings.accuracy_loss(pd.DataFrame(rows), 0.5))
    assert "no first-token answers" in found.text and "format collapse from knowledge loss" in found.text


def test_wilson_interval_matches_its_formula():
    low, high = findings.wilson(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)  # Wilson (1927) score interval, z = 1.96
    assert all(math.isnan(v) for v in findings.wilson(0, 0))


def test_yes_share_rising_with_sparsity_is_said_only_when_its_interval_is_above_zero():
    gold = ["yes", "no", "maybe", "no"] * 10
    dense = records_for("m", 0.0, gold, gold, gold)
    later = records_for("m", 0.5, gold, ["yes"] * len(gold), gold)
    same = records_for("n", 0.0, gold, gold, gold) + records_for("n", 0.5, gold, gold, gold)
    shares = findings.yes_share(pd.DataFrame(dense + later + same), 0.5, n_boot=200)
    found = findings.yes_bias(shares)[0].text
    assert "m 0.25 → 1.00 (change 0.75 [" in found and "it rises" in found
    assert "n 0.25 → 0.25 (change 0.00 [0.00, 0.00]: no change shown" in found


def test_ranking_depends_on_the_metric_only_when_intervals_disagree():
    opposite = frame(row("a - b", "accuracy", auc=0.05, low=0.02, high=0.08),
                     row("a - b", "reference_yes_f1", "reference", -0.05, -0.08, -0.02))
    assert "depends on the metric: a is ahead by accuracy (lobolib), b by the study's yes-class F1" in \
        findings.ranking(opposite)[0].text
    noisy = frame(row("a - b", "accuracy", auc=0.05, low=0.02, high=0.08),
                  row("a - b", "macro_f1", auc=-0.01, low=-0.04, high=0.02))
    text = findings.ranking(noisy)[0].text
    assert "does not depend on the metric: a is ahead by accuracy (lobolib)" in text and "macro-F1 include 0" in text


def test_between_settings_rows_say_which_setting_keeps_more():
    table = frame(row("base", setting="magnitude/layer - wanda/layer", auc=-0.03, low=-0.05, high=-0.01, p=0.002))
    (found,) = findings.settings(table)
    assert "wanda/layer keeps more" in found.text and "-0.030 [-0.050, -0.010]" in found.text


def test_headline_reads_the_written_tables_and_quotes_their_numbers(tmp_path):
    robustness = frame(row("base", auc=0.7123456789, cliff=0.5), row("specialist", auc=0.75, cliff=0.75),
                       row("base - specialist", auc=-0.10412345, low=-0.1412, high=-0.0701, p=0.0))
    scores = scores_frame({"base": [0.9, 0.8, 0.4, 0.2], "specialist": [0.9, 0.85, 0.8, 0.3]})
    tables.write_tables({"robustness": robustness, "scores": scores}, tmp_path)
    written = pd.read_csv(tmp_path / "robustness.csv")
    diff = written[written["model"] == "base - specialist"].iloc[0]
    found = findings.headline(tmp_path, specialist="specialist")
    assert len(found) == 2  # the group's robustness with its cliffs, and the ranking
    expected = findings.interval(diff["auc_normalised"], diff["ci_low"], diff["ci_high"])
    assert expected == "-0.104 [-0.141, -0.070]" and expected in found[0].text
    assert "falls below 50% of it at 50% sparsity" in found[0].text
    assert findings.headline(tmp_path / "missing") == []


def test_markdown_links_each_sentence_to_its_anchor():
    found = [findings.Finding("robustness", "**X**: something.", "fig-x"), findings.Finding("ranking", "other.")]
    text = findings.markdown(found, "Title").data
    assert text.startswith("## Title") and "- **X**: something. [→](#fig-x)" in text and "- other." in text


def test_numbers_are_written_plainly():
    assert findings.number(-0.0004) == "0.000" and findings.number(np.float64(0.1236)) == "0.124"
    # a bound that excludes 0 by less than the rounding still reads as excluding it
    assert findings.interval(-0.0088, -0.019, -3e-06) == "-0.009 [-0.019, -3e-06]"
    assert findings.interval(0.01, 0.0, 0.02) == "0.010 [0.000, 0.020]"
    assert findings.p_value(0.0) == "p < 0.001" and findings.p_value(0.0312) == "p = 0.031" and findings.p_value(math.nan) == ""
    assert findings.level_text(0.35) == "35% sparsity" and findings.level_text(4, "bits") == "4 bits"


def test_the_shield_summary_says_in_plain_words_what_happens_in_each_group():
    table = frame(row("bio - base", "reference_macro_f1", "reference", 0.05, 0.02, 0.08, group="all"),
                  row("bio - base", "accuracy", "lobolib", 0.00, -0.02, 0.02, group="all"),
                  row("bio - base", "reference_yes_f1", "reference", -0.01, -0.02, -0.001, benchmark="pubmedqa", group="pubmedqa"),
                  row("bio - base", "accuracy", "lobolib", -0.02, -0.03, -0.01, benchmark="pubmedqa", group="pubmedqa"))
    (found,) = findings.shield_summary(findings.shield(table, specialist="bio"), "bio")
    assert "is not shown under lobolib's scoring (its difference's 95% CI includes 0) on mmlu (all subjects)" in found.text
    assert "is not there even under the study's own scoring on pubmedqa" in found.text
    assert findings.shield_summary(findings.shield(table), None) == []
