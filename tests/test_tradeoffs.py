"""The common axis of pruning and quantization (lobolib.analysis.tradeoffs): bits per weight from
the sweep's reports, the Pareto front, retention and robustness on bits, against values worked out
by hand on small curves."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lobolib.analysis import tradeoffs
from lobolib.analysis.tradeoffs import DENSE_BITS, GIB

ITEMS = 40


def curve(setting: str, method: str, levels: list[float], right: list[int]) -> list[dict]:
    """Records of one PubMedQA curve: at each level, the first `right[i]` of ITEMS items correct
    (x as lobolib.analysis.curves sets it: the sparsity, or 1 - bits/16 for a bit width)."""
    rows = []
    for i, (level, n_right) in enumerate(zip(levels, right)):
        x = 0.0 if i == 0 else (1 - level / DENSE_BITS if method == "rtn" else level)
        for item in range(ITEMS):
            rows.append({"model": "m", "setting": setting, "x": x, "method": "dense" if i == 0 else method,
                         "level": float(level), "benchmark": "pubmedqa", "subject": "pubmedqa",
                         "item_id": f"q{item}", "correct": item < n_right})  # fmt: skip
    return rows


@pytest.fixture
def axis() -> pd.DataFrame:
    reports = {("m", "dense"): {"0": {"bits_per_weight": 16.0, "model_bytes": 2 * GIB}},
               ("m", "magnitude"): {"0.05": {"bits_per_weight": 16 * 0.95 + 1, "model_bytes": 2 * GIB},
                                    "0.5": {"bits_per_weight": 9.0, "model_bytes": 1.2 * GIB},
                                    "0.9": {"bits_per_weight": 16 * 0.1 + 1, "model_bytes": 0.4 * GIB}},
               ("m", "rtn"): {"8": {"bits_per_weight": 8.5, "model_bytes": 1.1 * GIB},
                              "4": {"bits_per_weight": 4.5, "model_bytes": 0.6 * GIB}}}  # fmt: skip
    return tradeoffs.compression_axis(reports)


@pytest.fixture
def records() -> pd.DataFrame:
    return pd.DataFrame(curve("magnitude", "magnitude", [0, 0.05, 0.5, 0.9], [30, 30, 24, 6])
                        + curve("rtn", "rtn", [0, 8, 4], [30, 30, 27]))  # fmt: skip


def test_the_axis_reads_bits_and_gib_from_the_reports(axis):
    row = axis[(axis["method"] == "magnitude") & (axis["level"] == 0.5)].iloc[0]
    assert row["bits_per_weight"] == 9.0 and row["model_gib"] == pytest.approx(1.2)
    assert len(axis) == 6


def test_pareto_keeps_only_points_nobody_beats():
    points = pd.DataFrame({"bits_per_weight": [16, 9, 8.5, 4.5, 2.6], "value": [0.75, 0.6, 0.75, 0.675, 0.15]})
    front = tradeoffs.pareto(points)
    assert front["bits_per_weight"].tolist() == [2.6, 4.5, 8.5]


def test_retention_is_the_last_level_above_the_threshold(records, axis):
    table = tradeoffs.retention(records, axis, threshold=0.95, n_boot=200).set_index("setting")
    # magnitude keeps 30/30 at 5% and 24/30 = 80% at 50%: the 5% level is the last one retained
    assert table.loc["magnitude", "level"] == 0.05
    assert table.loc["magnitude", "kept"] == pytest.approx(1.0)
    # rtn keeps 27/30 = 90% at 4 bits, under 95%: 8 bits is retained
    assert table.loc["rtn", "bits_per_weight"] == 8.5
    assert table.loc["rtn", "bits_ci_low"] <= 8.5 <= table.loc["rtn", "bits_ci_high"]


def test_robustness_on_bits_is_the_area_under_accuracy_against_bits_removed(records, axis):
    table = tradeoffs.robustness_on_bits(records, axis, n_boot=300).set_index("setting")
    # magnitude: the 5% level stores 16.2 bits, so counts as dense (0 removed) and is dropped
    removed = np.array([0.0, DENSE_BITS - 9.0, DENSE_BITS - 2.6])
    accuracy = np.array([30, 24, 6]) / ITEMS
    expected = np.trapezoid(accuracy, removed) / removed[-1]
    row = table.loc["magnitude"]
    assert row["levels"] == 3 and row["items"] == ITEMS
    assert row["auc_normalised"] == pytest.approx(expected)
    assert row["ci_low"] <= expected <= row["ci_high"] and row["ci_high"] - row["ci_low"] > 0
    assert row["bits_from"] == 16.0 and row["bits_to"] == pytest.approx(2.6)
    assert row["cliff_bits"] == pytest.approx(2.6)  # 6/40 < half of 30/40
    rtn = table.loc["rtn"]
    assert rtn["auc_normalised"] == pytest.approx(np.trapezoid([0.75, 0.75, 0.675], [0, 7.5, 11.5]) / 11.5)
    assert math.isnan(rtn["cliff_bits"])  # never below half


def test_robustness_on_bits_skips_a_curve_with_one_storage(axis):
    flat = pd.DataFrame(curve("magnitude", "magnitude", [0, 0.05], [30, 29]))
    assert tradeoffs.robustness_on_bits(flat, axis, n_boot=0).empty
