"""The report: the executed notebooks as one offline HTML page, `<run>/report.html`.

The page opens with the run's headline findings (`lobolib.analysis.findings.headline`, built
from the tables the notebooks wrote, each sentence linked to its figure or table), the table of
contents and the parameters used; then each notebook, its narrative and figures first: code cells
are folded (a "code" toggle per cell, and one for all), the notebook's default parameters are
replaced by the values the runner injected, and stderr (progress bars, warnings) is left out.
Plotly figures stay interactive, with plotly.js embedded once. Each saved figure is also drawn
as an SVG beside its HTML where a Chromium is installed (`figures.export_static`).
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path
from typing import Sequence

import yaml

from lobolib.experiment.config import RunConfig
from lobolib.experiment.files import atomic_write_text

INJECTED_TAG, DEFAULTS_TAG = "injected-parameters", "parameters"

CELL_TEMPLATE = """{%- extends 'index.html.j2' -%}
{% block input_group -%}
<details class="lobo-code"><summary>code</summary>
{{ super() }}
</details>
{%- endblock input_group %}
"""


def render_report(run_dir: str | os.PathLike, notebooks: Sequence[str | os.PathLike], config: RunConfig | None = None) -> Path:
    """Render executed notebooks as one offline HTML page (<run_dir>/report.html) opening with
    the headline findings; plotly.js is embedded once so every figure stays interactive without
    a network. Figures without an up-to-date SVG are drawn first, where Chromium is installed."""
    import nbformat

    run_dir = Path(run_dir)
    static_note = draw_static_figures(run_dir / "figures")
    exporter = _exporter()
    head, sections, toc = "", [], []
    for path in notebooks:
        path = Path(path)
        nb = clean_notebook(nbformat.read(path, as_version=4))
        page, _ = exporter.from_notebook_node(nb)
        if not head:
            head = _between(page, "<head>", "</head>")
        anchor = f"nb-{path.stem}"
        title = _title(page) or path.stem
        toc.append(f'<li><a href="#{anchor}">{html.escape(title)}</a></li>')
        sections.append(f'<section id="{anchor}" class="lobo-notebook">{_between(page, "<body", "</body>", open_tag=True)}</section>')
    head = re.sub(r"<title>.*?</title>", "", head, flags=re.DOTALL)
    head = re.sub(r'<script[^>]*src="https?://[^"]*"[^>]*>\s*</script>', "", head)  # offline: no CDN scripts
    name = config.run if config is not None else run_dir.name
    parameters = yaml.safe_dump(config.to_dict(), sort_keys=False) if config is not None else ""
    page = REPORT_PAGE.format(
        title=html.escape(f"lobotomy — {name}"),
        plotly=_plotly_js(),
        head=head,
        summary=summary_html(run_dir, config),
        toc="\n".join(toc),
        parameters=html.escape(parameters),
        static_note=html.escape(static_note),
        sections="\n".join(sections),
    )
    report = run_dir / "report.html"
    atomic_write_text(report, page)  # a run killed while rendering keeps the previous report
    return report


def _exporter():
    """nbconvert's lab template with each code cell's input folded in a <details>."""
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", extra_loaders=[DictLoader({"lobo_report.html.j2": CELL_TEMPLATE})])
    exporter.template_file = "lobo_report.html.j2"
    return exporter


# ----------------------------------------------------------------------------- the notebooks as shown


def clean_notebook(nb):
    """An executed notebook as the report shows it: the defaults cell ("parameters") dropped, the
    injected cell rewritten to the values used, and every stderr stream output removed (progress
    bars and warnings belong to the terminal and the executed notebook, not the report)."""
    injected = nb.metadata.get("papermill", {}).get("parameters")
    cells = []
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if DEFAULTS_TAG in tags and (injected is not None or any(INJECTED_TAG in c.metadata.get("tags", []) for c in nb.cells)):
            continue
        if INJECTED_TAG in tags:
            cell.source = injected_source(injected if injected is not None else {})
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.get("name") == "stderr")]
        cells.append(cell)
    nb.cells = cells
    return nb


def injected_source(parameters: dict) -> str:
    """The injected parameters as a reader needs them: the flags as Python, the resolved config
    summarised (it is shown in full under "parameters" at the top of the report)."""
    lines = ["# Parameters injected by `python -m lobolib run` (they replace the notebook's defaults)"]
    for key, value in parameters.items():
        if key == "config" and isinstance(value, dict):
            lines.append(f"config = {{...}}  # run {value.get('run')!r}, {value.get('mode', 'evaluate')} mode: "
                         "the resolved parameters, in full under “parameters” at the top")
        else:
            lines.append(f"{key} = {value!r}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the headline


def summary_html(run_dir: Path, config: RunConfig | None) -> str:
    """The headline findings as an HTML list (each sentence linking to its figure or table)."""
    from lobolib.analysis import findings

    found = findings.headline(run_dir / "tables", **headline_options(config))
    if not found:
        return "<p>No findings yet: the tables are missing (run notebook 02_prune_sweep).</p>"
    items = []
    for finding in found:
        text = _inline_markdown(finding.text)
        if finding.anchor:
            text += f' <a class="lobo-see" href="#{html.escape(finding.anchor)}">see&nbsp;→</a>'
        items.append(f'<li class="lobo-finding lobo-{finding.topic}">{text}</li>')
    return "<ul>\n" + "\n".join(items) + "\n</ul>"


def headline_options(config: RunConfig | None) -> dict:
    """The analysis parameters `findings.headline` needs, from the run's config."""
    if config is None:
        return {}
    from lobolib.experiment.notebook import Experiment

    experiment = Experiment(config)
    try:
        return experiment.finding_options()
    except Exception:  # noqa: BLE001 - the benchmarks give titles only: without them, names
        a = config.analysis
        return {"ci": a.confidence, "cliff_fraction": a.cliff_fraction, "groups": config.report_groups,
                "units": experiment.units, "specialist": experiment.specialist}  # fmt: skip


def _inline_markdown(text: str) -> str:
    """The little Markdown findings use (**bold**), as HTML; everything else escaped."""
    escaped = html.escape(text, quote=False)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)


# ----------------------------------------------------------------------------- static figures


def draw_static_figures(figures_dir: Path) -> str:
    """Draw the figures' SVGs (see `figures.export_static`); returns a note for the page."""
    from lobolib.analysis import figures

    if not figures_dir.is_dir():
        return ""
    if figures.chromium_path() is None:
        return "Figures are saved as HTML only: install Chromium (Debian package chromium) for SVG copies."
    try:
        figures.export_static(figures_dir)
    except Exception as exc:  # noqa: BLE001 - the report still renders; say what failed
        return f"SVG copies of the figures could not be drawn: {exc}"
    return f"Every figure is also saved as SVG in {figures_dir}."


REPORT_PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>{title}</title>
<script type="text/javascript">window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script>
<script type="text/javascript">{plotly}</script>
{head}
<style>
  nav.lobo-toc, section.lobo-summary {{ max-width: 1100px; margin: 2em auto 0 auto; padding: 0 1em; font-family: sans-serif; }}
  section.lobo-summary li {{ margin: 0.35em 0; line-height: 1.4; }}
  section.lobo-notebook {{ border-top: 2px solid #ccc; margin-top: 2em; }}
  details.lobo-parameters pre {{ font-size: 0.8em; }}
  details.lobo-code > summary {{ cursor: pointer; color: #777; font-size: 0.8em; font-family: monospace; margin-left: 64px; }}
  body.lobo-show-code details.lobo-code > summary {{ display: none; }}
  button.lobo-code-toggle {{ margin: 0.5em 0; }}
  p.lobo-note {{ color: #666; font-size: 0.85em; }}
</style>
</head>
<body>
<section class="lobo-summary" id="summary">
<h1>{title}</h1>
<h2>Headline findings</h2>
{summary}
</section>
<nav class="lobo-toc">
<h2>Contents</h2>
<ol>
{toc}
</ol>
<details class="lobo-parameters"><summary>parameters used</summary><pre>{parameters}</pre></details>
<button class="lobo-code-toggle" type="button" onclick="lobotomyToggleCode(this)">show all code</button>
<p class="lobo-note">{static_note}</p>
</nav>
{sections}
<script type="text/javascript">
function lobotomyToggleCode(button) {{
  const open = !document.body.classList.contains("lobo-show-code");
  document.body.classList.toggle("lobo-show-code", open);
  document.querySelectorAll("details.lobo-code").forEach(d => {{ d.open = open; }});
  button.textContent = open ? "hide all code" : "show all code";
}}
</script>
</body>
</html>
"""


def _plotly_js() -> str:
    """The plotly.js bundle shipped with the plotly package (no CDN)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _between(text: str, start: str, end: str, *, open_tag: bool = False) -> str:
    i = text.find(start)
    if i < 0:
        return ""
    i = text.find(">", i) + 1 if open_tag else i + len(start)
    j = text.rfind(end)
    return text[i:j] if j > i else text[i:]


def _title(page: str) -> str | None:
    match = re.search(r"<h1[^>]*>(.*?)</h1>", page, flags=re.DOTALL)
    if not match:
        return None
    text = re.sub(r"<[^>]+>", "", match.group(1))
    return html.unescape(text).replace("¶", "").strip() or None
