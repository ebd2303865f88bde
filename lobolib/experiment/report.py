"""The report: the executed notebooks as one offline HTML page, `<run>/report.html`, with a
table of contents, plotly figures interactive and plotly.js embedded once."""

from __future__ import annotations

import html
import os
import re
from pathlib import Path
from typing import Sequence

import yaml

from lobolib.experiment.config import RunConfig
from lobolib.experiment.files import atomic_write_text


def render_report(run_dir: str | os.PathLike, notebooks: Sequence[str | os.PathLike], config: RunConfig | None = None) -> Path:
    """Render executed notebooks as one offline HTML page (<run_dir>/report.html) with a table of
    contents; plotly.js is embedded once so every figure stays interactive without a network."""
    import nbformat
    from nbconvert import HTMLExporter
    from traitlets.config import Config

    run_dir = Path(run_dir)
    settings = Config()
    settings.TagRemovePreprocessor.remove_cell_tags = {"injected-parameters"}
    settings.TagRemovePreprocessor.enabled = True
    exporter = HTMLExporter(config=settings, template_name="lab")
    head, sections, toc = "", [], []
    for path in notebooks:
        path = Path(path)
        page, _ = exporter.from_notebook_node(nbformat.read(path, as_version=4))
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
        toc="\n".join(toc),
        parameters=html.escape(parameters),
        sections="\n".join(sections),
    )
    report = run_dir / "report.html"
    atomic_write_text(report, page)  # a run killed while rendering keeps the previous report
    return report


REPORT_PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>{title}</title>
<script type="text/javascript">window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script>
<script type="text/javascript">{plotly}</script>
{head}
<style>
  nav.lobo-toc {{ max-width: 1100px; margin: 2em auto 0 auto; padding: 0 1em; font-family: sans-serif; }}
  section.lobo-notebook {{ border-top: 2px solid #ccc; margin-top: 2em; }}
  details.lobo-parameters pre {{ font-size: 0.8em; }}
</style>
</head>
<body>
<nav class="lobo-toc">
<h1>{title}</h1>
<ol>
{toc}
</ol>
<details class="lobo-parameters"><summary>parameters</summary><pre>{parameters}</pre></details>
</nav>
{sections}
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
