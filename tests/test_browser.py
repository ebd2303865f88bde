"""The report in a real browser (headless Chromium over the DevTools protocol): every figure is
drawn, the console shows no error, the findings' links land and the code toggle works."""

from __future__ import annotations

import pytest

from lobolib.analysis import figures
from test_report import report_run


@pytest.fixture(scope="module")
def browser(tmp_path_factory, embedded_cache):
    if figures.chromium_path() is None:
        pytest.skip("Chromium is not installed (Debian package chromium; .ci/run installs it)")
    run_dir = report_run(tmp_path_factory, embedded_cache)
    with figures.Chromium() as chromium:
        chromium.open((run_dir / "report.html").as_uri())
        chromium.evaluate("new Promise(done => setTimeout(done, 500))")  # plotly draws after load
        yield chromium


def test_every_figure_renders_and_the_console_shows_no_error(browser):
    figures_count = browser.evaluate("document.querySelectorAll('.lobo-figure .plotly-graph-div').length")
    drawn = browser.evaluate("[...document.querySelectorAll('.lobo-figure .plotly-graph-div')]"
                             ".filter(div => div.querySelector('svg.main-svg .trace, svg.main-svg .hm')).length")  # marks drawn
    assert figures_count >= 10 and drawn == figures_count
    assert browser.evaluate("document.querySelectorAll('.plotly-graph-div').length") == figures_count
    assert browser.errors == []


def test_findings_links_land_on_visible_elements(browser):
    targets = browser.evaluate("[...document.querySelectorAll('a.lobo-see')].map(a => a.getAttribute('href').slice(1))")
    assert targets
    sizes = browser.evaluate(f"{targets!r}.map(id => document.getElementById(id).getBoundingClientRect().height)")
    assert all(height > 0 for height in sizes)


def test_code_is_hidden_until_asked_for(browser):
    hidden = "[...document.querySelectorAll('details.lobo-code')].filter(d => !d.open).length"
    total = browser.evaluate("document.querySelectorAll('details.lobo-code').length")
    assert total > 0 and browser.evaluate(hidden) == total
    browser.evaluate("document.querySelector('button.lobo-code-toggle').click()")
    assert browser.evaluate(hidden) == 0
    browser.evaluate("document.querySelector('button.lobo-code-toggle').click()")
    assert browser.evaluate(hidden) == total


def test_the_static_explorer_answers_its_controls_in_the_page(browser):
    """The report's explorer (no kernel): choosing a benchmark lists its items; choosing a model,
    level and item shows that record."""
    pick = """(name, value) => { const s = document.querySelector('#explorer select[name=' + name + ']');
                 s.value = value; s.dispatchEvent(new Event('change')); }"""
    read = "document.querySelector('#explorer dl.lobo-explorer-view').textContent"
    options = "[...document.querySelectorAll('#explorer select[name=item] option')].map(o => o.value)"
    browser.evaluate(f"({pick})('benchmark', 'pubmedqa')")
    pubmedqa = browser.evaluate(options)
    browser.evaluate(f"({pick})('benchmark', 'mmlu')")
    mmlu = browser.evaluate(options)
    assert pubmedqa and mmlu and not set(pubmedqa) & set(mmlu)
    browser.evaluate(f"({pick})('model', 'specialist'); ({pick})('level', '2'); ({pick})('item', {mmlu[0]!r})")
    shown = browser.evaluate(read)
    assert "question" in shown and "raw response" in shown and "no record" not in shown
    assert browser.errors == []
