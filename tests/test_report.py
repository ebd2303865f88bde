"""The report page: headline findings quoting the tables, the parameters used, folded code, no
progress bars or stderr, tables for reading, SVG copies of the figures. One small run serves
every report test (and tests/test_browser.py)."""

from __future__ import annotations

import html
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from lobolib.analysis import findings, figures
from lobolib.experiment import report, runner
from lobolib.experiment.config import from_dict

RUN = {}


def report_run(tmp_path_factory, embedded_cache) -> Path:
    """A run of the four notebooks on the embedded models (two models, three levels, a few
    items), made once per test session."""
    if "dir" not in RUN:
        import os

        os.environ["LOBOTOMY_CACHE"] = str(embedded_cache)
        config = from_dict({
            "run": "report", "outputs": str(tmp_path_factory.mktemp("report-run")), "sparsity": [0.0, 0.5, 0.9],
            "models": [{"name": "base", "model": "embedded:base"}, {"name": "specialist", "model": "embedded:specialist"}],
            "benchmarks": {"pubmedqa": {"max_items": 12}, "mmlu": {"subjects": ["reference_medical", "logic"],
                                                                    "max_items_per_subject": 3}},
            "analysis": {"bootstrap": 50},
        })  # fmt: skip
        runner.run(config, progress=False)
        RUN["dir"] = config.output_dir
    return RUN["dir"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, embedded_cache) -> Path:
    return report_run(tmp_path_factory, embedded_cache)


@pytest.fixture(scope="module")
def page(run_dir) -> str:
    return (run_dir / "report.html").read_text(encoding="utf-8")


def summary_of(page: str) -> str:
    return page[page.index('<section class="lobo-summary"'):page.index("</section>")]


def test_no_progress_bar_or_stderr_text_in_the_report(page, run_dir):
    assert not re.search(r"\d+%\||it/s\]|s/it\]|item/s", page)
    assert 'data-mime-type="application/vnd.jupyter.stderr"' not in page
    executed = nbformat.read(run_dir / "notebooks" / "02_prune_sweep.ipynb", as_version=4)
    assert any(o.get("name") == "stderr" for c in executed.cells if c.cell_type == "code" for o in c.outputs), \
        "the executed notebook keeps its stderr (the sweep's bars): only the report leaves it out"


def test_the_report_opens_with_findings_that_quote_the_robustness_table(page, run_dir):
    assert page.index('id="summary"') < page.index('class="lobo-notebook"')
    summary = html.unescape(summary_of(page))
    robustness = pd.read_csv(run_dir / "tables" / "robustness.csv")
    rows = robustness[(robustness["model"] == "base - specialist") & (robustness["scoring"] == "lobolib")
                      & (robustness["metric"] == "accuracy")]  # fmt: skip
    assert len(rows) >= 2
    for _, row in rows.iterrows():
        assert findings.interval(row["auc_normalised"], row["ci_low"], row["ci_high"]) in summary
    assert "shield" in summary  # the specialist is known: the study's "Structural Shield" is judged


def test_every_finding_links_to_an_element_of_the_page(page):
    targets = re.findall(r'class="lobo-see" href="#([^"]+)"', summary_of(page))
    assert targets and all(f'id="{t}"' in page for t in targets)


def test_each_notebook_ends_with_an_interpretation_written_from_its_results(run_dir):
    for name in runner.NOTEBOOKS:
        nb = nbformat.read(run_dir / "notebooks" / f"{name}.ipynb", as_version=4)
        last = nb.cells[-1]
        text = "".join(o.get("data", {}).get("text/markdown", "") for o in last.outputs)
        assert text.startswith("- **") and re.search(r"\d", text), name


def test_sections_show_the_injected_parameters_not_the_defaults(page):
    assert 'parameters_file = "parameters/default.yaml"' not in html.unescape(re.sub(r"<[^>]+>", "", page))
    text = html.unescape(re.sub(r"<[^>]+>", "", page))
    assert text.count("interactive = False") == len(runner.NOTEBOOKS)
    assert "run 'report', evaluate mode" in text


def test_code_is_folded_and_the_narrative_comes_first(page):
    cells = page.count('class="jp-Cell jp-CodeCell')
    assert cells > 10 and page.count('<details class="lobo-code">') == cells - page.count("jp-mod-noInput")
    assert "lobotomyToggleCode" in page


def test_tables_read_plainly(page, run_dir):
    assert not re.search(r">\s*0\.0000\s*<", page)  # p-values below 0.001 read "< 0.001"
    assert not re.search(r">\s*\d\.0000\s*<", page.split('id="table-ranking"')[1][:4000])  # integer ranks
    assert ">NaN<" not in page and ">nan<" not in page
    for path in (run_dir / "tables").glob("*.csv"):
        assert not re.search(r"\d\.\d{7,}", path.read_text()), path.name  # no float noise
    assert "Ġ" not in page


def test_each_figure_has_a_static_copy_beside_its_html(run_dir):
    if figures.chromium_path() is None:
        pytest.skip("Chromium is not installed (Debian package chromium; .ci/run installs it)")
    pages = sorted((run_dir / "figures").glob("*.html"))
    assert pages
    for page in pages:
        svg = page.with_suffix(".svg")
        assert svg.is_file() and figures.svg_drawn(svg.read_text(encoding="utf-8")), page.name


def test_clean_notebook_drops_defaults_and_stderr():
    nb = nbformat.v4.new_notebook()
    defaults = nbformat.v4.new_code_cell('parameters_file = "x.yaml"\ninteractive = True')
    defaults.metadata["tags"] = ["parameters"]
    injected = nbformat.v4.new_code_cell("# Parameters\nconfig = {...}")
    injected.metadata["tags"] = ["injected-parameters"]
    work = nbformat.v4.new_code_cell("print(1)")
    work.outputs = [nbformat.v4.new_output("stream", name="stderr", text="50%|#####| 1/2"),
                    nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    nb.cells = [defaults, injected, work]
    nb.metadata["papermill"] = {"parameters": {"config": {"run": "r", "mode": "reference_logs"}, "interactive": False}}
    cleaned = report.clean_notebook(nb)
    assert len(cleaned.cells) == 2
    assert "interactive = False" in cleaned.cells[0].source and "run 'r', reference_logs mode" in cleaned.cells[0].source
    assert [o.name for o in cleaned.cells[1].outputs] == ["stdout"]
