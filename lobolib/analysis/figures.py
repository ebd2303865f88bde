"""Plotly figures of a run: degradation curves with bootstrap bands, failure-mode stacked areas,
label-distribution bars, confusion heatmaps; the ipywidgets explorer; and how figures are shown
and saved.

`show(fig, anchor)` displays a figure so it stays interactive both in JupyterLab (plotly's
mimetype) and in the rendered report (an HTML div drawn by the plotly.js the report embeds once),
under an HTML anchor the report's findings link to. `save(fig, name, directory)` writes
<name>.html next to one shared plotly.min.js (no CDN: the files work offline);
`export_static(directory)` then draws each saved figure as <name>.svg through a headless Chromium
(plotly.js's own SVG export, driven over the DevTools protocol) where one is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

PALETTE = qualitative.Plotly
OUTCOME_COLOURS = {"correct": "#2ca02c", "wrong answer": "#d62728"}
LABEL_COLOURS = {"yes": "#1f77b4", "no": "#ff7f0e", "maybe": "#9467bd", "invalid": "#7f7f7f",
                 "A": "#1f77b4", "B": "#ff7f0e", "C": "#2ca02c", "D": "#9467bd"}  # fmt: skip


def _rgba(colour: str, alpha: float) -> str:
    colour = colour.lstrip("#")
    r, g, b = (int(colour[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _axis(unit: str) -> dict:
    """x-axis settings: sparsity as a percentage, bits with compression growing to the right."""
    if unit == "bits":
        return {"title_text": "bits per weight (level)", "autorange": "reversed"}
    return {"title_text": "sparsity", "tickformat": ".0%"}


def _curve_label(model: str, setting: str, settings: Sequence[str]) -> str:
    return model if len(settings) <= 1 else f"{model} · {setting}"


def degradation_curves(
    scores: pd.DataFrame,
    benchmark: str,
    group: str,
    panels: Sequence[tuple[str, str]] = (("lobolib", "accuracy"), ("lobolib", "first_token_accuracy"), ("reference", "accuracy")),
    title: str | None = None,
    settings: Sequence[str] | None = None,
    lines: dict[str, float] | None = None,
    unit: str = "sparsity",
) -> go.Figure:
    """Score against level, one line per curve (model, setting) with its bootstrap band, one
    panel per (scoring, metric) — e.g. generative accuracy beside first-token accuracy. Panels
    without rows in `scores` are left out. `lines` ({"chance": 0.25, "majority": 0.55}) are drawn
    as dotted horizontal lines in the accuracy panels; a sparsity axis runs from 0 to the last
    level evaluated."""
    part = scores[(scores["benchmark"] == benchmark) & (scores["group"] == group)]
    settings = list(settings) if settings is not None else [s for s in dict.fromkeys(part["setting"]) if " - " not in str(s)]
    part = part[part["setting"].isin(settings)]
    panels = [p for p in panels if ((part["scoring"] == p[0]) & (part["metric"] == p[1])).any()]
    models = list(dict.fromkeys(part["model"]))
    fig = make_subplots(rows=1, cols=max(len(panels), 1), shared_yaxes=True,
                        subplot_titles=[f"{m} ({s})" for s, m in panels])  # fmt: skip
    dashes = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"]
    for col, (scoring, metric) in enumerate(panels, start=1):
        for i, model in enumerate(models):
            for j, setting in enumerate(settings):
                curve = part[(part["model"] == model) & (part["setting"] == setting) & (part["scoring"] == scoring)
                             & (part["metric"] == metric)].sort_values("level")  # fmt: skip
                if curve.empty:
                    continue
                colour, label = PALETTE[i % len(PALETTE)], _curve_label(model, setting, settings)
                if curve["ci_low"].notna().all():
                    fig.add_trace(go.Scatter(
                        x=list(curve["level"]) + list(curve["level"])[::-1],
                        y=list(curve["ci_high"]) + list(curve["ci_low"])[::-1],
                        mode="lines", fill="toself", fillcolor=_rgba(colour, 0.2), line={"width": 0}, hoverinfo="skip",
                        legendgroup=label, showlegend=False,
                    ), row=1, col=col)  # fmt: skip
                fig.add_trace(go.Scatter(
                    x=curve["level"], y=curve["value"], mode="lines+markers", name=label,
                    line={"color": colour, "dash": dashes[j % len(dashes)]}, legendgroup=label, showlegend=col == 1,
                    hovertemplate=f"{label}<br>level %{{x}}<br>{metric} %{{y:.3f}}<extra></extra>",
                ), row=1, col=col)  # fmt: skip
        if metric.endswith("accuracy"):
            for name, value in (lines or {}).items():
                fig.add_hline(y=value, line={"dash": "dot", "color": "#999", "width": 1}, row=1, col=col,
                              annotation_text=name, annotation_position="bottom right")  # fmt: skip
    if not part.empty:
        levels = part["level"].astype(float)
        pad = 0.02 * max(levels.max(), 0.05)
        fig.update_xaxes(range=[min(0.0, levels.min()) - pad, levels.max() + pad] if unit != "bits" else None)
    fig.update_xaxes(**_axis(unit))
    fig.update_yaxes(title_text="score", row=1, col=1)
    fig.update_layout(title=title or f"{benchmark} — {group}", template="plotly_white", height=380)
    return fig


def failure_modes_area(modes: pd.DataFrame, benchmark: str, title: str | None = None) -> go.Figure:
    """Stacked areas of outcome shares (correct, wrong answer, invalid by reason) over the levels,
    one panel per curve (model, setting)."""
    part = modes[modes["benchmark"] == benchmark]
    settings = list(dict.fromkeys(part["setting"]))
    curves = list(dict.fromkeys(zip(part["model"], part["setting"])))
    models = [_curve_label(m, s, settings) for m, s in curves]
    outcomes = ["correct", "wrong answer"] + sorted(o for o in set(part["outcome"]) if o.startswith("invalid"))
    greys = ["#7f7f7f", "#bcbd22", "#17becf", "#8c564b", "#e377c2", "#c7c7c7"]
    fig = make_subplots(rows=1, cols=max(len(models), 1), shared_yaxes=True, subplot_titles=models)
    for col, (model, setting) in enumerate(curves, start=1):
        mine = part[(part["model"] == model) & (part["setting"] == setting)].pivot_table(
            index="level", columns="outcome", values="share", fill_value=0)
        for j, outcome in enumerate(outcomes):
            if outcome not in mine.columns:
                continue
            colour = OUTCOME_COLOURS.get(outcome, greys[(j - 2) % len(greys)])
            fig.add_trace(go.Scatter(
                x=mine.index, y=mine[outcome], name=outcome, stackgroup=f"m{col}", mode="lines",
                line={"width": 0.5, "color": colour}, legendgroup=outcome, showlegend=col == 1,
            ), row=1, col=col)  # fmt: skip
    fig.update_xaxes(title_text="level")
    fig.update_yaxes(title_text="share of items", range=[0, 1], row=1, col=1)
    fig.update_layout(title=title or f"{benchmark}: what the answers are", template="plotly_white", height=380)
    return fig


def label_distribution_bars(distribution: pd.DataFrame, benchmark: str, title: str | None = None) -> go.Figure:
    """Stacked bars of the predicted label shares at each level, one panel per model, with the
    gold distribution as the first bar of each panel: the answer bias and its evolution."""
    part = distribution[distribution["benchmark"] == benchmark]
    gold = part[part["model"] == "gold"]
    rest = part[part["model"] != "gold"]
    settings = list(dict.fromkeys(rest["setting"]))
    curves = list(dict.fromkeys(zip(rest["model"], rest["setting"])))
    labels = list(dict.fromkeys(part["label"]))
    fig = make_subplots(rows=1, cols=max(len(curves), 1), shared_yaxes=True,
                        subplot_titles=[_curve_label(m, s, settings) for m, s in curves])  # fmt: skip
    for col, (model, setting) in enumerate(curves, start=1):
        mine = rest[(rest["model"] == model) & (rest["setting"] == setting)]
        for label in labels:
            rows = mine[mine["label"] == label].sort_values("level")
            gold_share = gold.loc[gold["label"] == label, "share"]
            x = ["gold"] + [f"{s:g}" for s in rows["level"]]
            y = [float(gold_share.iloc[0]) if len(gold_share) else 0.0] + list(rows["share"])
            fig.add_trace(go.Bar(x=x, y=y, name=label, marker_color=LABEL_COLOURS.get(label),
                                 legendgroup=label, showlegend=col == 1), row=1, col=col)  # fmt: skip
    fig.update_layout(barmode="stack", template="plotly_white", height=380,
                      title=title or f"{benchmark}: predicted labels against gold")  # fmt: skip
    fig.update_yaxes(title_text="share", range=[0, 1], row=1, col=1)
    fig.update_xaxes(title_text="level")
    return fig


def confusion_heatmap(table: pd.DataFrame, title: str = "confusion") -> go.Figure:
    """Counts of gold (rows) × prediction (columns), as metrics.confusion returns them."""
    fig = go.Figure(go.Heatmap(
        z=table.to_numpy(), x=[str(c) for c in table.columns], y=[str(i) for i in table.index],
        colorscale="Blues", text=table.to_numpy(), texttemplate="%{text}",
    ))  # fmt: skip
    fig.update_layout(title=title, xaxis_title="prediction", yaxis_title="gold", template="plotly_white",
                      height=360, yaxis={"autorange": "reversed"})  # fmt: skip
    return fig


def achieved_sparsity(levels: pd.DataFrame, title: str = "achieved sparsity") -> go.Figure:
    """Requested against achieved sparsity (columns model, method, level, pruned, overall)."""
    fig = go.Figure()
    for i, ((model, method), rows) in enumerate(levels.groupby(["model", "method"], sort=False)):
        colour = PALETTE[i % len(PALETTE)]
        fig.add_trace(go.Scatter(x=rows["level"], y=rows["pruned"], name=f"{model} · {method}: compressed matrices",
                                 mode="lines+markers", line={"color": colour}))  # fmt: skip
        fig.add_trace(go.Scatter(x=rows["level"], y=rows["overall"], name=f"{model} · {method}: all parameters",
                                 mode="lines", line={"color": colour, "dash": "dot"}))  # fmt: skip
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="requested", line={"color": "#999", "width": 1}))
    fig.update_layout(title=title, xaxis_title="requested", yaxis_title="zeros", template="plotly_white", height=360,
                      xaxis_tickformat=".0%", yaxis_tickformat=".0%")  # fmt: skip
    return fig


# ----------------------------------------------------------------------------- showing and saving


def anchor_id(name: str) -> str:
    """The HTML id of figure `name` in the report (what findings link to)."""
    return f"fig-{name}"


def show(fig: go.Figure, anchor: str | None = None):
    """Display `fig` interactively in JupyterLab and in the report (see the module docstring),
    under the HTML id `anchor` when given."""
    from IPython.display import display

    div = fig.to_html(full_html=False, include_plotlyjs=False)
    bundle = {
        "application/vnd.plotly.v1+json": json.loads(fig.to_json()),
        "text/html": div if anchor is None else f'<div id="{anchor}" class="lobo-figure">{div}</div>',
        "text/plain": f"<plotly figure: {fig.layout.title.text or 'untitled'}>",
    }
    display(bundle, raw=True)


def save(fig: go.Figure, name: str, directory: str | os.PathLike) -> list[Path]:
    """Write <directory>/<name>.html (plotly.js from the shared plotly.min.js beside it); a file
    whose content is unchanged is left as it is, so its static export stays current. Returns the
    paths written or kept (with <name>.svg where `export_static` drew it)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    html_path = directory / f"{name}.html"
    page = fig.to_html(include_plotlyjs="directory", full_html=True, div_id=name)
    if not (html_path.is_file() and html_path.read_text(encoding="utf-8") == page):
        html_path.write_text(page, encoding="utf-8")
    if not (directory / "plotly.min.js").is_file():
        from plotly.offline import get_plotlyjs

        (directory / "plotly.min.js").write_text(get_plotlyjs(), encoding="utf-8")
    svg_path = html_path.with_suffix(".svg")
    return [html_path] + ([svg_path] if svg_path.is_file() else [])


def publish(fig: go.Figure, name: str, directory: str | os.PathLike) -> go.Figure:
    """Save `fig` under `directory` and show it under the anchor `anchor_id(name)`; the
    notebooks' one call per figure."""
    save(fig, name, directory)
    show(fig, anchor_id(name))
    return fig


# ----------------------------------------------------------------------------- static export


CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--disable-breakpad", "--disable-crash-reporter", "--remote-debugging-port=0",
    "--window-size=1280,900",
)  # fmt: skip


def chromium_path() -> str | None:
    """The Chromium (or Chrome) to draw with: $LOBOTOMY_CHROMIUM, else the first on PATH."""
    named = os.environ.get("LOBOTOMY_CHROMIUM")
    if named:
        return shutil.which(named) or (named if Path(named).is_file() else None)
    return next((found for found in map(shutil.which, CHROMIUM_NAMES) if found), None)


class Chromium:
    """A headless Chromium with one tab, driven over the DevTools protocol (a local websocket).

    `open(url)` loads a page and waits for its load event; `evaluate(js)` runs an expression in it
    (awaiting a promise) and returns its value; `errors` lists what the page reported as an error
    (uncaught exceptions, console.error, failed loads). Use it as a context manager."""

    def __init__(self, executable: str | None = None, timeout: float = 60.0):
        import websocket

        executable = executable or chromium_path()
        if executable is None:
            raise FileNotFoundError("no Chromium found: install the Debian package `chromium`")
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="lobo-chromium-")
        self.process = subprocess.Popen([executable, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        self._id, self._events, self.errors = 0, [], []
        try:
            port, path = self._endpoint()
            self._socket = websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=timeout,
                                                       suppress_origin=True)  # fmt: skip
            target = self._send("Target.createTarget", {"url": "about:blank"})["targetId"]
            self._session = self._send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                self._send(f"{domain}.enable", session=True)
        except BaseException:
            self.close()
            raise

    def _endpoint(self) -> tuple[str, str]:
        """The DevTools port and browser path Chromium writes into its profile once it listens."""
        marker = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            lines = marker.read_text().split() if marker.is_file() else []
            if len(lines) >= 2:
                return lines[0], lines[1]
            time.sleep(0.05)
        raise RuntimeError(f"Chromium did not start within {self.timeout:g} s (exit status {self.process.poll()})")

    def _send(self, method: str, params: dict | None = None, *, session: bool = False) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self._session
        self._socket.send(json.dumps(message))
        while True:
            reply = json.loads(self._socket.recv())
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error'].get('message', reply['error'])}")
                return reply.get("result", {})
            self._note(reply)

    def _note(self, event: dict) -> None:
        """Keep page events; record the ones that are errors."""
        method, params = event.get("method"), event.get("params", {})
        self._events.append(method)
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.errors.append(details.get("exception", {}).get("description") or details.get("text", "exception"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            self.errors.append(params["entry"].get("text", "error"))

    def open(self, url: str) -> None:
        """Load `url` and wait for its load event."""
        self._events.clear()
        self._send("Page.navigate", {"url": url}, session=True)
        deadline = time.monotonic() + self.timeout
        while "Page.loadEventFired" not in self._events:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not load within {self.timeout:g} s")
            self._note(json.loads(self._socket.recv()))

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        result = self._send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                 "returnByValue": True, "timeout": self.timeout * 1000},
                            session=True)  # fmt: skip
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(details.get("exception", {}).get("description") or details.get("text"))
        return result.get("result", {}).get("value")

    def close(self) -> None:
        socket = getattr(self, "_socket", None)
        if socket is not None:
            try:
                self._send("Browser.close")
            except Exception:  # noqa: BLE001 - the browser may already be gone
                pass
            socket.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def figure_spec(html_path: str | os.PathLike) -> dict:
    """{"data", "layout"} of a figure page that `save` wrote (the arguments of its Plotly.newPlot)."""
    text = Path(html_path).read_text(encoding="utf-8")
    start = text.find("Plotly.newPlot(")
    if start < 0:
        raise ValueError(f"{html_path} holds no plotly figure")
    decoder, position, parts = json.JSONDecoder(), start + len("Plotly.newPlot("), []
    for _ in range(3):  # div id, data, layout
        while text[position] in " \t\r\n,":
            position += 1
        value, position = decoder.raw_decode(text, position)
        parts.append(value)
    return {"data": parts[1], "layout": parts[2]}


SVG_EXPORT = """(async () => {{
  const figure = {figure};
  const width = figure.layout.width || 1100, height = figure.layout.height || 450;
  return await Plotly.toImage(figure, {{format: "svg", width: width, height: height}});
}})()"""


def export_static(directory: str | os.PathLike, *, browser: Chromium | None = None) -> list[Path]:
    """Draw every figure page in `directory` whose <name>.svg is missing or older than its
    <name>.html as that SVG (plotly.js's vector export, in a headless Chromium); returns the
    SVGs written. Needs Chromium (`chromium_path`); raises RuntimeError on a blank drawing."""
    directory = Path(directory)
    stale = [p for p in sorted(directory.glob("*.html"))
             if not p.with_suffix(".svg").is_file() or p.with_suffix(".svg").stat().st_mtime < p.stat().st_mtime]  # fmt: skip
    if not stale:
        return []
    own = browser is None
    browser = browser or Chromium()
    written = []
    try:
        browser.open((directory / "plotly.min.js").resolve().as_uri())  # a page in which plotly.js can run
        browser.evaluate((directory / "plotly.min.js").read_text(encoding="utf-8") + ";0")
        for page in stale:
            url = browser.evaluate(SVG_EXPORT.format(figure=json.dumps(figure_spec(page))))
            svg = urllib.parse.unquote(url.split(",", 1)[1])
            if not svg_drawn(svg):
                raise RuntimeError(f"the static export of {page.name} came out blank")
            target = page.with_suffix(".svg")
            target.write_text(svg, encoding="utf-8")
            written.append(target)
    finally:
        if own:
            browser.close()
    return written


def svg_drawn(svg: str) -> bool:
    """Whether an exported SVG shows something: plotted paths or marks and at least one text."""
    return svg.lstrip().startswith("<svg") and "<text" in svg and ('class="trace' in svg or "<image" in svg)


# ----------------------------------------------------------------------------- explorer


def explorer_rows(records: pd.DataFrame, items: Mapping[str, Sequence] | None = None) -> dict:
    """What the explorer offers: {"models", "settings", "levels", "items": {benchmark: [item ids]}}
    from the records (curves: a `setting` column; records without one are one setting, "all")."""
    settings = list(dict.fromkeys(records["setting"])) if "setting" in records.columns else ["all"]
    return {
        "models": sorted(set(records["model"])),
        "settings": settings,
        "levels": sorted(set(records["level"].astype(float))),
        "items": {b: sorted(set(part["item_id"])) for b, part in records.groupby("benchmark", sort=True)},
    }


def explorer(records: pd.DataFrame, items: Mapping[str, Sequence] | None = None):
    """An ipywidgets explorer for JupyterLab: choose a model, a setting, a benchmark, a level and
    one of that benchmark's items, and read the question, the parsed and first-token answers, the
    gold label and the raw response. Returns the widget box; its controls are its attributes
    `model`, `setting`, `benchmark`, `level`, `item` and the text shown is `view.value`."""
    import html as html_text

    import ipywidgets as widgets

    if "setting" not in records.columns:
        records = records.assign(setting="all")
    offered = explorer_rows(records, items)
    questions = {item.id: item.question for batch in (items or {}).values() for item in batch}
    indexed = records.assign(level=records["level"].astype(float)).set_index(
        ["model", "setting", "benchmark", "level", "item_id"]).sort_index()
    box = widgets.VBox()
    box.model = widgets.Dropdown(options=offered["models"], description="model")
    box.setting = widgets.Dropdown(options=offered["settings"], description="setting")
    box.benchmark = widgets.Dropdown(options=list(offered["items"]), description="benchmark")
    box.level = widgets.SelectionSlider(options=offered["levels"], description="level")
    first = offered["items"][box.benchmark.value] if offered["items"] else []
    box.item = widgets.Dropdown(options=first, description="item")
    box.view = widgets.HTML()

    def pick_benchmark(_change=None):
        box.item.options = offered["items"].get(box.benchmark.value, [])

    def update(_change=None):
        key = (box.model.value, box.setting.value, box.benchmark.value, box.level.value, box.item.value)
        if key not in indexed.index:
            box.view.value = "<p><i>no record for this choice</i></p>"
            return
        row = indexed.loc[key]
        row = row.iloc[0] if isinstance(row, pd.DataFrame) else row
        fields = [("question", questions.get(box.item.value, "(items not loaded)")), ("gold", row["gold"]),
                  ("answer", f"invalid ({row['invalid_reason']})" if pd.isna(row["answer"]) else row["answer"]),
                  ("first-token answer", row.get("loglik_answer")), ("parser tier", row.get("tier")),
                  ("raw response", row["raw_response"])]  # fmt: skip
        box.view.value = "<dl class='lobo-explorer'>" + "".join(
            f"<dt>{name}</dt><dd><pre style='white-space: pre-wrap; margin: 0'>{html_text.escape(str(value))}</pre></dd>"
            for name, value in fields) + "</dl>"

    box.benchmark.observe(pick_benchmark, names="value")
    for control in (box.model, box.setting, box.benchmark, box.level, box.item):
        control.observe(update, names="value")
    update()
    box.children = [widgets.HBox([box.model, box.setting]), widgets.HBox([box.benchmark, box.level]), box.item, box.view]
    return box


STATIC_EXPLORER_SCRIPT = """
(function () {
  const root = document.getElementById(%(id)s);
  const data = JSON.parse(root.querySelector("script.lobo-explorer-data").textContent);
  const controls = {};
  function select(name, options, labels) {
    const element = document.createElement("select");
    element.name = name;
    options.forEach((value, i) => {
      const option = document.createElement("option");
      option.value = String(value);
      option.textContent = labels ? labels[i] : String(value);
      element.appendChild(option);
    });
    element.addEventListener("change", update);
    const label = document.createElement("label");
    label.textContent = name + " ";
    label.appendChild(element);
    root.querySelector(".lobo-explorer-controls").appendChild(label);
    controls[name] = element;
    return element;
  }
  function fillItems() {
    const items = data.items[controls.benchmark.value] || [];
    controls.item.innerHTML = "";
    items.forEach(entry => {
      const option = document.createElement("option");
      option.value = entry[0];
      option.textContent = entry[0];
      controls.item.appendChild(option);
    });
  }
  function field(name, value) {
    const term = document.createElement("dt"), text = document.createElement("dd");
    term.textContent = name;
    text.textContent = value === null || value === undefined ? "–" : String(value);
    return [term, text];
  }
  function update(event) {
    if (event && event.target === controls.benchmark) fillItems();
    const benchmark = controls.benchmark.value, itemId = controls.item.value;
    const item = (data.items[benchmark] || []).find(entry => entry[0] === itemId) || [itemId, "", ""];
    const key = [controls.model.value, controls.setting.value, benchmark, controls.level.value, itemId].join("\\u0001");
    const record = data.records[key];
    const view = root.querySelector("dl.lobo-explorer-view");
    view.innerHTML = "";
    const rows = record ? [["question", item[1]], ["gold", item[2]],
        ["answer", record[0] === null ? "invalid (" + record[3] + ")" : record[0]], ["first-token answer", record[1]],
        ["parser tier", record[2]], ["raw response", record[4]]] : [["question", item[1]], ["record", "no record for this choice"]];
    rows.forEach(([name, value]) => field(name, value).forEach(node => view.appendChild(node)));
  }
  select("model", data.models);
  select("setting", data.settings);
  select("benchmark", Object.keys(data.items));
  select("level", data.levels.map((_, i) => i), data.levels.map(String));
  select("item", []);
  fillItems();
  update();
})();
"""


def static_explorer_data(records: pd.DataFrame, items: Mapping[str, Sequence] | None = None, *,
                         max_items: int = 100, seed: int = 0) -> dict:
    """The records the static explorer carries: every curve and level, for at most `max_items`
    items per benchmark (drawn with `seed`; the JupyterLab explorer has them all)."""
    import numpy as np

    if "setting" not in records.columns:
        records = records.assign(setting="all")
    offered = explorer_rows(records, items)
    questions = {item.id: item.question for batch in (items or {}).values() for item in batch}
    rng = np.random.default_rng(seed)
    chosen, totals = {}, {}
    for benchmark, ids in offered["items"].items():
        totals[benchmark] = len(ids)
        keep = ids if len(ids) <= max_items else [ids[i] for i in sorted(rng.choice(len(ids), max_items, replace=False))]
        chosen[benchmark] = keep
    levels = offered["levels"]
    index = {level: i for i, level in enumerate(levels)}
    wanted = {b: set(ids) for b, ids in chosen.items()}
    part = records[np.array([item_id in wanted.get(b, ()) for b, item_id in zip(records["benchmark"], records["item_id"])],
                             dtype=bool)]
    gold = {(b, i): g for b, i, g in zip(part["benchmark"], part["item_id"], part["gold"])}

    def value(v):
        return None if v is None or (isinstance(v, float) and v != v) else v if isinstance(v, (int, float)) else str(v)

    data_records = {}
    for row in part.itertuples(index=False):
        key = "\u0001".join([str(row.model), str(row.setting), str(row.benchmark), str(index[float(row.level)]), str(row.item_id)])
        data_records[key] = [value(row.answer), value(getattr(row, "loglik_answer", None)), value(getattr(row, "tier", None)),
                             value(getattr(row, "invalid_reason", None)), value(row.raw_response)]  # fmt: skip
    return {"models": offered["models"], "settings": offered["settings"], "levels": [float(v) for v in levels],
            "items": {b: [[i, questions.get(i, ""), value(gold.get((b, i)))] for i in ids] for b, ids in chosen.items()},
            "totals": totals, "records": data_records}  # fmt: skip


def static_explorer(records: pd.DataFrame, items: Mapping[str, Sequence] | None = None, *, max_items: int = 100,
                    seed: int = 0, anchor: str = "explorer") -> str:
    """The explorer as a self-contained HTML block (its data as JSON, a small script): the same
    controls as `explorer`, answered in the page, so the rendered report needs no kernel."""
    import html as html_text

    data = static_explorer_data(records, items, max_items=max_items, seed=seed)
    shown = ", ".join(f"{len(ids)} of {data['totals'][b]} {b} items" for b, ids in data["items"].items())
    payload = json.dumps(data, ensure_ascii=True).replace("</", "<\\/")
    style = ("<style>.lobo-explorer label { margin-right: 1.5em; } .lobo-explorer dt { font-weight: bold; margin-top: 0.4em; }"
             " .lobo-explorer dd { margin-left: 1.5em; white-space: pre-wrap; font-family: monospace; }</style>")
    return (f'<div id="{anchor}" class="lobo-explorer">{style}'
            f'<p class="lobo-explorer-note">{html_text.escape(shown)} (the JupyterLab explorer has every item)</p>'
            '<div class="lobo-explorer-controls"></div><dl class="lobo-explorer-view"></dl>'
            f'<script type="application/json" class="lobo-explorer-data">{payload}</script>'
            f"<script>{STATIC_EXPLORER_SCRIPT % {'id': json.dumps(anchor)}}</script></div>")


def show_static_explorer(records: pd.DataFrame, items: Mapping[str, Sequence] | None = None, **options) -> None:
    """Display `static_explorer` (the notebooks' call when no kernel will answer widgets)."""
    from IPython.display import display

    display({"text/html": static_explorer(records, items, **options),
             "text/plain": "<explorer: open the rendered report or JupyterLab>"}, raw=True)
