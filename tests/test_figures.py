"""Figures: what the curves draw, how figures are saved and drawn as static SVGs."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import pytest

from lobolib.analysis import figures, tables

LEVELS = [0.0, 0.25, 0.5, 0.7]


def scores() -> pd.DataFrame:
    rows = [{"model": m, "setting": "magnitude/layer", "method": "magnitude/layer", "benchmark": "mmlu", "group": "all",
             "level": lvl, "scoring": "lobolib", "metric": metric, "value": v, "ci_low": v - 0.05, "ci_high": v + 0.05}
            for m, start in (("base", 0.8), ("specialist", 0.9)) for metric in ("accuracy", "macro_f1")
            for lvl, v in zip(LEVELS, (start, start - 0.1, start - 0.4, 0.25))]  # fmt: skip
    return pd.DataFrame(rows, columns=tables.SCORE_COLUMNS)


def test_curves_run_from_zero_to_the_last_level_with_baseline_lines():
    fig = figures.degradation_curves(scores(), "mmlu", "all", [("lobolib", "accuracy"), ("lobolib", "macro_f1")],
                                     lines={"chance": 0.25, "majority": 0.4})  # fmt: skip
    low, high = fig.layout.xaxis.range
    assert low <= 0 < 0.05 and 0.7 <= high < 0.75  # to the last level evaluated, not to 100%
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert sorted(s.y0 for s in lines) == [0.25, 0.4]  # in the accuracy panel only
    assert {a.text for a in fig.layout.annotations} >= {"chance", "majority"}
    bands = [t for t in fig.data if t.fill == "toself"]
    assert len(bands) == 4 and all(t.mode == "lines" for t in bands)  # bands draw no markers


def test_a_saved_figure_is_rewritten_only_when_it_changes(tmp_path):
    fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 0]))
    (page,) = figures.save(fig, "curve", tmp_path)
    assert (tmp_path / "plotly.min.js").is_file()
    before = page.stat().st_mtime_ns
    figures.save(fig, "curve", tmp_path)
    assert page.stat().st_mtime_ns == before  # so its SVG stays current
    spec = figures.figure_spec(page)
    assert spec["data"][0]["y"] == [1, 0]
    figures.save(go.Figure(go.Scatter(x=[0, 1], y=[0, 1])), "curve", tmp_path)
    assert figures.figure_spec(page)["data"][0]["y"] == [0, 1]


def test_publish_shows_the_figure_under_its_anchor(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda bundle, raw=False: shown.append(bundle))
    figures.publish(go.Figure(go.Bar(x=["a"], y=[1])), "bars_mmlu", tmp_path)
    (bundle,) = shown
    assert bundle["text/html"].startswith('<div id="fig-bars_mmlu"') and "application/vnd.plotly.v1+json" in bundle


def test_a_blank_drawing_is_told_apart():
    assert not figures.svg_drawn('<svg class="main-svg"><rect/></svg>')
    assert figures.svg_drawn('<svg class="main-svg"><g class="trace scatter"><path d="M0,0"/></g><text>x</text></svg>')


@pytest.fixture(scope="module")
def chromium():
    if figures.chromium_path() is None:
        pytest.skip("Chromium is not installed (Debian package chromium; .ci/run installs it)")
    with figures.Chromium() as browser:
        yield browser


def test_every_saved_figure_is_drawn_as_an_svg_beside_its_html(tmp_path, chromium):
    figures.save(figures.degradation_curves(scores(), "mmlu", "all", lines={"chance": 0.25}), "curves", tmp_path)
    figures.save(figures.confusion_heatmap(pd.DataFrame([[3, 1], [0, 2]], index=["A", "B"], columns=["A", "B"])),
                 "confusion", tmp_path)  # fmt: skip
    written = figures.export_static(tmp_path, browser=chromium)
    assert sorted(p.name for p in written) == ["confusion.svg", "curves.svg"]
    curves = (tmp_path / "curves.svg").read_text()
    assert figures.svg_drawn(curves) and "base" in curves and "chance" in curves
    assert figures.svg_drawn((tmp_path / "confusion.svg").read_text())
    assert figures.export_static(tmp_path, browser=chromium) == []  # up to date: nothing redrawn


def test_the_static_explorer_carries_a_sample_of_each_benchmark_s_items():
    rows = [{"model": "m", "setting": "s", "benchmark": b, "level": lvl, "item_id": f"{b}{i}", "gold": "A", "answer": "A",
             "loglik_answer": "A", "tier": "t", "invalid_reason": None, "raw_response": "A"}
            for b, n in (("mmlu", 30), ("pubmedqa", 5)) for i in range(n) for lvl in (0.0, 0.5)]  # fmt: skip
    data = figures.static_explorer_data(pd.DataFrame(rows), max_items=10)
    assert {b: len(ids) for b, ids in data["items"].items()} == {"mmlu": 10, "pubmedqa": 5}
    assert data["totals"] == {"mmlu": 30, "pubmedqa": 5} and data["levels"] == [0.0, 0.5]
    assert len(data["records"]) == (10 + 5) * 2  # every level of every item carried
    page = figures.static_explorer(pd.DataFrame(rows), max_items=10)
    assert "10 of 30 mmlu items" in page and "</script>" in page and page.count("<script") == 2
